"""``load_model``: one entry point from a name (and weights) to a ready model.

    load_model("RN50x4", weights="openai")      # cached or downloaded on request
    load_model("RN50x4@random")                 # random init, never the network
    load_model("mini-clip")                     # the bundled mini CLIP
    load_model("RN50", weights="/ckpt/rn50.pt") # a local file (state dict, safetensors, TorchScript)
    load_model("hf-hub:org/repo")               # a Hugging Face open_clip repo
    load_model(my_module, preprocess=Preprocess(image_size=224))  # any nn.Module
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from neuronscope.errors import NeuronscopeError, WeightsError
from neuronscope.models import bundled, download, openclip
from neuronscope.models.aliases import model_family
from neuronscope.models.loaded import LoadedModel
from neuronscope.models.preprocess import Preprocess
from neuronscope.models.registry import Architecture, get_architecture, split_model_name
from neuronscope.models.spec import BUNDLED, RANDOM, Activation, ModelSpec
from neuronscope.models.weights import (
    is_torchscript,
    load_into,
    looks_like_path,
    read_state_dict,
    sha256_file,
    sha256_state_dict,
)
from neuronscope.runtime import resolve_device, resolve_precision

log = logging.getLogger(__name__)

DEFAULT = "default"
"""``weights=DEFAULT`` (the default): the bundled or locally cached weights, else an error."""
HUB = "hub"
"""The weights stored in an ``hf-hub:`` repository."""


# --------------------------------------------------------------------------- public entry


def load_model(
    model: str | os.PathLike | nn.Module,
    weights: str | os.PathLike | None = DEFAULT,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    preprocess: Preprocess | Mapping[str, Any] | None = None,
    activation: Activation | None = None,
    name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> LoadedModel:
    """Build a model, fill it with weights and return it with its contract.

    Args:
        model: a registry name (``RN50x4``, ``mini-clip``, ``tiny-rn``),
            ``name@weights`` (``RN50x4@openai``), ``hf-hub:org/repo``, a
            checkpoint path (OpenAI TorchScript archives need no name), or a
            ``torch.nn.Module``.
        weights: ``DEFAULT`` (omitted) = the bundled or locally cached
            weights, else an error listing the choices; ``None`` or
            ``"random"`` = random init (never touches the network); a registry
            tag (``"openai"``: from the local cache, else downloaded, failing
            within seconds when offline); or a PATH to a local file/folder.
            For an ``nn.Module``: omitted (its own weights) or a PATH to load.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        precision: ``auto|fp32|bf16|fp16|bf16-weights`` (see
            :func:`neuronscope.runtime.resolve_precision`).
        preprocess: the input contract; required for an ``nn.Module`` that
            does not carry open_clip's ``preprocess_cfg``, an override otherwise.
        activation: override the transformer activation (``quick_gelu``/``gelu``)
            the weights expect, for local files saved without that fact.
        name: the architecture's name for an ``nn.Module`` or a bare file.
        cache_dir: where cached downloads live (default: open_clip's / HF's).

    Returns:
        A :class:`LoadedModel` in eval mode on ``device``.
    """
    target = resolve_device(device)
    if isinstance(model, nn.Module):
        module, spec, path, state_sha = _from_module(model, weights, preprocess, activation, name)
    else:
        module, spec, path = _from_text(os.fspath(model), weights, name, activation, cache_dir)
        state_sha = None
        if preprocess is not None:
            spec = spec.with_weights(spec.weights, preprocess=_as_preprocess(preprocess))
    module.eval().requires_grad_(False)
    family = model_family(module.get_submodule(spec.image_tower) if spec.image_tower else module)
    plan = resolve_precision(precision, target, family)  # type: ignore[arg-type]
    module.to(target)
    plan.prepare(module)
    return LoadedModel(module=module, spec=spec, device=target, precision=plan, weights_path=path,
                       _state_sha256=state_sha)


# --------------------------------------------------------------------------- names


def _from_text(
    text: str, weights: str | os.PathLike | None, name: str | None, activation: Activation | None,
    cache_dir: str | os.PathLike | None,
) -> tuple[nn.Module, ModelSpec, Path | None]:
    if os.path.exists(text) and looks_like_path(text):
        # A bare checkpoint as the model: OpenAI archives say what they are.
        if weights not in (DEFAULT, None) and os.fspath(weights) != text:
            raise WeightsError(f"{text!r} is a file already; do not pass weights={weights!r} as well")
        return _from_file(None, Path(text), name or Path(text).stem, activation)

    arch_name, inline = split_model_name(text)
    if inline is not None:
        if weights not in (DEFAULT, inline):
            raise WeightsError(f"{text!r} names weights {inline!r} but weights={weights!r} was passed too; give one")
        weights = inline
    if weights is None:
        weights = RANDOM
    weights = os.fspath(weights)

    if arch_name.startswith("hf-hub:"):
        return _from_hub(arch_name, weights, activation, cache_dir)

    arch = get_architecture(arch_name)
    if weights.startswith("sha256:"):
        raise WeightsError(f"{arch_name}@{weights} names weights by their hash, which cannot be loaded; "
                           f"pass the file itself: --weights PATH")
    if weights == DEFAULT:
        weights = _default_weights(arch, cache_dir)
    if weights == RANDOM:
        spec = arch.spec(RANDOM)
        if activation:
            spec = spec.with_weights(RANDOM, activation=activation)
        return build(spec), spec, None
    if weights == BUNDLED and arch.source == "bundled":
        spec = arch.spec(BUNDLED)
        config = bundled.bundled_config()
        module = build(spec)
        load_into(module, read_state_dict(config.weights_path), what=str(config.weights_path))
        return module, spec, config.weights_path
    if weights in arch.tags:
        return _from_tag(arch, weights, activation, cache_dir)
    if looks_like_path(weights) or os.path.exists(weights):
        return _from_file(arch, Path(weights), arch.name, activation)
    raise arch.unknown_weights(weights)


def _default_weights(arch: Architecture, cache_dir: str | os.PathLike | None) -> str:
    """The bundled / declared default, else the first tag already in the local cache."""
    if arch.default_weights is not None:
        return arch.default_weights
    for tag, cfg in arch.tags.items():
        if download.find_cached(cfg, cache_dir) is not None:
            log.info("%s: using cached weights %r", arch.name, tag)
            return tag
    tags = ", ".join(arch.tags) or "none registered"
    raise WeightsError(
        f"{arch.name}: no weights given and none is bundled or in the local cache. "
        f"Choose --weights random (random init), a tag to download ({tags}), or PATH to a local file"
    )


def _from_tag(arch: Architecture, tag: str, activation: Activation | None,
              cache_dir: str | os.PathLike | None) -> tuple[nn.Module, ModelSpec, Path]:
    spec = arch.spec(tag)
    if activation:
        spec = spec.with_weights(tag, activation=activation)
    cfg = arch.tags[tag]
    path = download.find_cached(cfg, cache_dir)
    if path is None:
        path = download.fetch_pretrained(cfg, what=spec.key, name=arch.name, cache_dir=cache_dir)
    module = build(spec)
    load_into(module, read_state_dict(path), what=f"{spec.key} ({path})")
    return module, spec, path


def _from_file(arch: Architecture | None, path: Path, name: str,
               activation: Activation | None) -> tuple[nn.Module, ModelSpec, Path]:
    """A local checkpoint: a file (state dict, safetensors, TorchScript) or a model folder."""
    if path.is_dir():
        return _from_folder(arch, path, name, activation)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist; pass an existing file with --weights PATH")
    state = read_state_dict(path)
    openai_archive = is_torchscript(path)
    key = f"sha256:{sha256_file(path)[:12]}"
    if arch is None:
        if not openai_archive:
            raise WeightsError(
                f"cannot tell which architecture {str(path)!r} is for; name it: "
                f"load_model('RN50', weights=PATH) or --model RN50 --weights PATH"
            )
        # OpenAI's archives hold the whole CLIP; infer its shape from the weights.
        module = openclip.build_from_openai_state_dict(state)
        image_size = module.visual.image_size
        spec = ModelSpec(name=name, weights=key, preprocess=Preprocess(image_size=image_size),
                         activation=activation or "quick_gelu", source="file")
    else:
        base = arch.spec(RANDOM)
        # OpenAI archives were trained with QuickGELU whatever the architecture's default.
        chosen = activation or ("quick_gelu" if openai_archive else base.activation)
        spec = base.with_weights(key, activation=chosen)
        module = build(spec)
    load_into(module, state, what=str(path))
    return module, spec, path


def _from_folder(arch: Architecture | None, path: Path, name: str,
                 activation: Activation | None) -> tuple[nn.Module, ModelSpec, Path]:
    """A folder in the mini CLIP's layout (config.json + weights.safetensors) or open_clip's."""
    if bundled.is_config_dir(path):
        config = bundled.read_config_dir(path)
        weights_file = config.weights_path
        quick = config.model_cfg.get("quick_gelu", False)
        spec = ModelSpec(name=name if arch is None else arch.name, weights=f"sha256:{sha256_file(weights_file)[:12]}",
                         preprocess=config.preprocess, activation=activation or ("quick_gelu" if quick else "gelu"),
                         source="config", model_cfg=config.model_cfg)
        module = build(spec)
        load_into(module, read_state_dict(weights_file), what=str(weights_file))
        return module, spec, weights_file
    if (path / download.HF_CONFIG).is_file():
        module = openclip.build_from_dir(path, load_weights=True)
        spec = _open_clip_module_spec(module, name, "sha256:" + sha256_state_dict(module)[:12], "file", activation)
        return module, spec, None
    raise WeightsError(f"{path} is a folder without config.json or {download.HF_CONFIG}; pass a weights file instead")


def _from_hub(model_name: str, weights: str, activation: Activation | None,
              cache_dir: str | os.PathLike | None) -> tuple[nn.Module, ModelSpec, Path | None]:
    repo_id = model_name[len("hf-hub:"):]
    if weights == DEFAULT:
        if download.find_cached_repo(repo_id, cache_dir) is None:
            raise WeightsError(
                f"{model_name}: no weights given and the repo is not in the local cache. "
                f"Choose --weights {HUB} (download it), random, or PATH to a local file"
            )
        weights = HUB
    if weights not in (HUB, RANDOM) and not looks_like_path(weights):
        raise WeightsError(f"{model_name} takes weights {HUB}, {RANDOM} or PATH, not {weights!r}")
    need_weights = weights == HUB
    folder = download.find_cached_repo(repo_id, cache_dir, need_weights=need_weights)
    if folder is None:
        folder = download.fetch_repo(repo_id, model_name, cache_dir, need_weights=need_weights)
    module = openclip.build_from_dir(folder, load_weights=need_weights)
    path = None
    if looks_like_path(weights):
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"weights file {weights!r} does not exist; pass an existing file with --weights PATH")
        load_into(module, read_state_dict(path), what=weights)
        weights = f"sha256:{sha256_file(path)[:12]}"
    spec = _open_clip_module_spec(module, model_name, weights, "hf-hub", activation)
    return module, spec, path


def _open_clip_module_spec(module: nn.Module, name: str, weights: str, source: str,
                           activation: Activation | None) -> ModelSpec:
    """The spec of an open_clip model built by open_clip itself (it carries its preprocess_cfg)."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(module)
    quick = any(type(m).__name__ == "QuickGELU" for m in module.modules())
    return ModelSpec(name=name, weights=weights, preprocess=Preprocess.from_dict(cfg),
                     activation=activation or ("quick_gelu" if quick else "gelu"), source=source)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- modules


def _as_preprocess(preprocess: Preprocess | Mapping[str, Any]) -> Preprocess:
    return preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(preprocess)


def _from_module(
    module: nn.Module, weights: str | os.PathLike | None, preprocess: Preprocess | Mapping[str, Any] | None,
    activation: Activation | None, name: str | None,
) -> tuple[nn.Module, ModelSpec, Path | None, str]:
    """Any ``nn.Module``: used in place (not copied), with the given preprocessing contract."""
    path = None
    if weights == RANDOM:
        raise WeightsError("an nn.Module comes with its own weights: pass nothing, or PATH to load into it")
    if weights not in (DEFAULT, None):
        path = Path(os.fspath(weights))
        load_into(module, read_state_dict(path), what=str(path))
    tower = "visual" if isinstance(getattr(module, "visual", None), nn.Module) else ""
    if preprocess is None:
        carried = getattr(getattr(module, "visual", module), "preprocess_cfg", None)
        if not carried:
            raise NeuronscopeError(
                "a bare nn.Module needs its preprocessing contract: "
                "load_model(module, preprocess=Preprocess(image_size=224, mean=..., std=...))"
            )
        preprocess = carried
    quick = any(type(m).__name__ == "QuickGELU" for m in module.modules())
    state_sha = sha256_state_dict(module)
    spec = ModelSpec(
        name=name or type(module).__name__, weights=f"sha256:{state_sha[:12]}", preprocess=_as_preprocess(preprocess),
        activation=activation or ("quick_gelu" if quick else "gelu"), source="module", image_tower=tower,
    )
    return module, spec, path, state_sha


# --------------------------------------------------------------------------- building


def build(spec: ModelSpec) -> nn.Module:
    """A random-init module of ``spec``'s architecture, on the CPU in fp32."""
    if spec.source == "open_clip":
        return openclip.build_named(spec.name, quick_gelu=spec.quick_gelu)
    if spec.source == "config" and spec.model_cfg is not None:
        return openclip.build_from_cfg(spec.model_cfg, quick_gelu=spec.quick_gelu)
    raise WeightsError(f"cannot build {spec.key} from its spec (source {spec.source!r}); load it from its file")
