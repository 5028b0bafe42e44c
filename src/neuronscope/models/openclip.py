"""The open_clip adapter: architecture configs, pretrained tags, building.

open_clip is imported lazily (it takes seconds), so ``neuronscope --help``
and the tiny test models do not pay for it more than once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

from torch import nn


@contextlib.contextmanager
def quiet_open_clip() -> Iterator[None]:
    """Silence open_clip's root-logger chatter ("Model initialized randomly").

    open_clip logs through ``logging.warning``, which also installs a handler
    on the root logger when it has none; a NullHandler keeps the user's
    logging configuration untouched.
    """
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    if guard is not None:
        root.addHandler(guard)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*QuickGELU mismatch.*")
            yield
    finally:
        logging.disable(previous)
        if guard is not None:
            root.removeHandler(guard)


def architectures() -> list[str]:
    """Every open_clip architecture name (``open_clip.list_models()``)."""
    import open_clip

    return list(open_clip.list_models())


def model_config(name: str) -> dict[str, Any] | None:
    """The open_clip config of a built-in architecture, or None."""
    import open_clip

    return open_clip.get_model_config(name)


def pretrained_tags(name: str) -> dict[str, dict[str, Any]]:
    """``{tag: pretrained cfg}`` for an architecture: url, hf_hub, mean, std, quick_gelu..."""
    import open_clip

    return {tag: dict(open_clip.get_pretrained_cfg(name, tag)) for tag in open_clip.list_pretrained_tags_by_model(name)}


def build_named(name: str, quick_gelu: bool, *, may_download: bool = False) -> nn.Module:
    """A random-init open_clip model of a built-in architecture, on the CPU in fp32.

    ``may_download``: the weights named are a tag that downloads, so a Hugging Face text tower's config may
    be fetched too (see :func:`hf_text_tower`)."""
    import open_clip

    text_cfg = (model_config(name) or {}).get("text_cfg", {})
    with quiet_open_clip(), hf_text_tower(name, text_cfg, may_download=may_download):
        return open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu, device="cpu")


@contextlib.contextmanager
def hf_text_tower(name: str, text_cfg: Mapping[str, Any], *, may_download: bool = False) -> Iterator[None]:
    """Build a model whose text tower is a Hugging Face model (roberta, xlm-roberta, mt5...).

    open_clip reads that model's config from the hub even for random weights: unless ``may_download`` (a
    downloading tag was named, and no ``NEURONSCOPE_OFFLINE``/``HF_HUB_OFFLINE``) it is read from the local
    cache only (random weights and local files never touch the network), and a missing ``transformers`` or
    config is one line that says how to get it, not transformers' error after its retries.
    """
    hf_name = text_cfg.get("hf_model_name")
    if not hf_name:
        yield
        return
    import importlib.util

    from neuronscope.errors import NeuronscopeError

    needs = f"{name}: its text tower is the Hugging Face model {hf_name!r}"
    if importlib.util.find_spec("transformers") is None:
        raise NeuronscopeError(f"{needs}, which needs the transformers package: pip install transformers")
    import huggingface_hub.constants

    from neuronscope.models.download import offline_requested

    offline = huggingface_hub.constants.HF_HUB_OFFLINE
    # transformers asks this constant before any request
    huggingface_hub.constants.HF_HUB_OFFLINE = bool(offline or not may_download or offline_requested())
    try:
        yield
    except OSError as err:  # transformers: not in the cache (with the hub switched off)
        raise NeuronscopeError(f"{needs}, whose config is not in the local cache; fetch it once while online "
                               f"(hf download {hf_name}) and run again") from err
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = offline


def build_from_cfg(model_cfg: Mapping[str, Any], quick_gelu: bool) -> nn.Module:
    """A random-init ``open_clip.model.CLIP(**model_cfg)`` (CustomTextCLIP when asked)."""
    import open_clip

    cfg = dict(model_cfg)
    cfg["quick_gelu"] = quick_gelu
    custom_text = cfg.pop("custom_text", False)
    model_class = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    with hf_text_tower("this model", cfg.get("text_cfg", {})):
        return model_class(**cfg)


def build_from_dir(directory: Path, quick_gelu: bool | None = None) -> nn.Module:
    """A random-init open_clip model of the ``open_clip_config.json`` in ``directory``, on the CPU in fp32.

    The caller loads the weights (open_clip would pick a file itself, or none
    without a word). ``quick_gelu`` overrides the config's activation (None:
    keep the config's); open_clip's ``force_quick_gelu`` can only switch
    QuickGELU on, so the override goes in as a model kwarg, which wins either way.
    """
    import open_clip

    from neuronscope.models.download import HF_CONFIG

    overrides = {} if quick_gelu is None else {"quick_gelu": quick_gelu}
    config = json.loads((directory / HF_CONFIG).read_text()).get("model_cfg", {})
    with quiet_open_clip(), hf_text_tower(str(directory), config.get("text_cfg", {})):
        return open_clip.create_model(f"local-dir:{directory}", load_weights=False, device="cpu", **overrides)


def build_from_openai_state_dict(state_dict: dict, quick_gelu: bool = True) -> nn.Module:
    """Infer and build the CLIP that an OpenAI state dict belongs to, fp32, weights loaded.

    OpenAI trained with QuickGELU, hence the default. Raises KeyError when the
    state dict is not an OpenAI CLIP's.
    """
    from open_clip.model import build_model_from_openai_state_dict

    model = build_model_from_openai_state_dict(dict(state_dict), quick_gelu=quick_gelu, cast_dtype=None)
    return model.float()


def module_activation(module: nn.Module) -> str | None:
    """What a built model's transformer MLPs run: ``quick_gelu`` when any submodule is open_clip's QuickGELU,
    else ``gelu`` when any is a GELU (torch's, timm's, transformers' ``GELUActivation``), else None (a ReLU net).

    Read by class name: timm and transformers have GELU classes of their own.
    """
    names = {type(m).__name__ for m in module.modules()}
    if "QuickGELU" in names:
        return "quick_gelu"
    if any(name.startswith("GELU") or name.endswith("GELUActivation") for name in names):
        return "gelu"
    return None
