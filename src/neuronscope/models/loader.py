"""``load_model``: one entry point from a name (and weights) to a ready model.

    load_model("RN50x4", weights="openai")      # cached or downloaded on request
    load_model("RN50x4@random")                 # random init, never the network
    load_model("mini-clip")                     # the bundled mini CLIP
    load_model("RN50", weights="/ckpt/rn50.pt") # a local file (state dict, safetensors, TorchScript)
    load_model("hf-hub:org/repo")               # a Hugging Face open_clip repo
    load_model(my_module, preprocess=Preprocess(image_size=224))  # any nn.Module
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn

from neuronscope.errors import NeuronscopeError, WeightsError
from neuronscope.imagefiles import file_sha256
from neuronscope.models import bundled, download, openclip
from neuronscope.models.aliases import model_family
from neuronscope.models.loaded import LoadedModel
from neuronscope.models.preprocess import Preprocess
from neuronscope.models.registry import Architecture, get_architecture, split_model_name
from neuronscope.models.spec import BUNDLED, CLIP_BPE_VOCAB, RANDOM, Activation, ModelSpec, TokenizerSpec
from neuronscope.models.weights import (
    is_torchscript,
    load_into,
    looks_like_path,
    read_state_dict,
    sha256_state_dict,
)
from neuronscope.runtime import Precision, resolve_device, resolve_precision

log = logging.getLogger(__name__)

DEFAULT = "default"
"""``weights=DEFAULT`` (the default): the bundled or locally cached weights, else an error."""
HUB = "hub"
"""The weights stored in an ``hf-hub:`` repository."""


class _Built(NamedTuple):
    """What a loader produced: the filled module, its spec, and where its weights came from."""

    module: nn.Module
    spec: ModelSpec
    path: Path | None = None
    sha256: str | None = None
    """The weights' full sha256 when the loader already computed it (None: hash ``path`` on demand, or random)."""


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
            For an ``nn.Module``: omitted (its own weights) or a PATH to load into it.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        precision: ``auto|fp32|bf16|fp16|bf16-weights`` (see
            :func:`neuronscope.runtime.resolve_precision`).
        preprocess: the input contract; required for an ``nn.Module`` that
            does not carry open_clip's ``preprocess_cfg``, an override otherwise.
        activation: override the transformer activation (``quick_gelu``/``gelu``)
            the weights expect, for local files saved without that fact; the
            model is built with it. An ``nn.Module`` that runs another is an error.
        name: the architecture's name for an ``nn.Module`` or a bare file.
        cache_dir: where cached downloads live (default: open_clip's / HF's).

    Returns:
        A :class:`LoadedModel` in eval mode on ``device``.

    An ``nn.Module`` is used in place, not copied (a copy would double its memory): the module you pass is
    set to eval mode, its parameters to ``requires_grad=False``, and moved to ``device`` (channels_last for
    a conv net). Its weights are never cast: a precision that would change their dtype (``bf16-weights``
    for fp32 weights) is refused before anything is changed; ``auto`` autocasts instead. Pass
    ``copy.deepcopy(module)`` to keep yours as it was, or to run it with ``bf16-weights``.
    """
    target = resolve_device(device)
    if isinstance(model, nn.Module):
        plan = _precision_keeping_dtype(model, precision, target)  # refused before the module is changed
        built = _from_module(model, weights, preprocess, activation, name)
    else:
        built = _from_text(os.fspath(model), weights, name, activation, cache_dir)
        if preprocess is not None:
            built = built._replace(spec=replace(built.spec, preprocess=_as_preprocess(preprocess)))
        plan = resolve_precision(precision, target, _family(built.module, built.spec.image_tower))
    module = built.module
    module.eval().requires_grad_(False)
    module.to(target)
    plan.prepare(module)
    return LoadedModel(module=module, spec=built.spec, device=target, precision=plan, weights_path=built.path,
                       _state_sha256=built.sha256)


def _family(module: nn.Module, image_tower: str) -> str:
    """:func:`model_family` of the image tower (``""``: the whole module), which picks precision defaults."""
    return model_family(module.get_submodule(image_tower) if image_tower else module)


# --------------------------------------------------------------------------- names


def _from_text(
    text: str, weights: str | os.PathLike | None, name: str | None, activation: Activation | None,
    cache_dir: str | os.PathLike | None,
) -> _Built:
    text = _expand_user(text)
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
    weights = _expand_user(os.fspath(weights))

    if arch_name.startswith("hf-hub:"):
        return _from_hub(arch_name, weights, activation, cache_dir)

    arch = get_architecture(arch_name)
    if weights.startswith("sha256:"):
        raise WeightsError(f"{arch_name}@{weights} names weights by their hash, which cannot be loaded; "
                           f"pass the file itself: --weights PATH")
    if weights == DEFAULT:
        weights = _default_weights(arch, cache_dir)
    if weights == RANDOM:
        spec = _with_activation(arch.spec(RANDOM), activation)
        return _Built(build(spec), spec)
    if weights == BUNDLED and arch.source == "bundled":
        spec = _with_activation(arch.spec(BUNDLED), activation)
        config = bundled.bundled_config()
        module = build(spec)
        load_into(module, read_state_dict(config.weights_path), what=str(config.weights_path))
        return _Built(module, spec, config.weights_path)
    if weights in arch.tags:
        return _from_tag(arch, weights, activation, cache_dir)
    if looks_like_path(weights) or os.path.exists(weights):
        return _from_file(arch, Path(weights), arch.name, activation)
    raise arch.unknown_weights(weights)


def _expand_user(text: str) -> str:
    """``~/ckpt/rn50.pt`` -> the home folder's path (the shell does this on the command line, Python does not)."""
    return os.path.expanduser(text) if text.startswith("~") else text


def _with_activation(spec: ModelSpec, activation: Activation | None) -> ModelSpec:
    """``spec`` with the activation override, if any; ``build(spec)`` then applies it."""
    return replace(spec, activation=activation) if activation else spec


def default_weights(arch: Architecture, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The weights an omitted ``--weights`` means, when they are at hand without a download: the bundled /
    declared default, else the first tag already in the local cache; None when neither."""
    if arch.default_weights is not None:
        return arch.default_weights
    for tag, cfg in arch.tags.items():
        if download.find_cached(cfg, cache_dir) is not None:
            return tag
    return None


def _default_weights(arch: Architecture, cache_dir: str | os.PathLike | None) -> str:
    """:func:`default_weights`, or the error that says which weights to choose."""
    found = default_weights(arch, cache_dir)
    if found is not None:
        if found in arch.tags:
            log.info("%s: using cached weights %r", arch.name, found)
        return found
    tags = ", ".join(arch.tags) or "none registered"
    raise WeightsError(
        f"{arch.name}: no weights given and none is bundled or in the local cache. "
        f"Choose --weights random (random init), a tag to download ({tags}), or PATH to a local file"
    )


def _from_tag(arch: Architecture, tag: str, activation: Activation | None,
              cache_dir: str | os.PathLike | None) -> _Built:
    spec = _with_activation(arch.spec(tag), activation)
    cfg = arch.tags[tag]
    path = download.find_cached(cfg, cache_dir)
    if path is None:
        path = download.fetch_pretrained(cfg, what=spec.key, name=arch.name, cache_dir=cache_dir)
    module = build(spec)
    load_into(module, read_state_dict(path), what=f"{spec.key} ({path})")
    return _Built(module, spec, path)


def _from_file(arch: Architecture | None, path: Path, name: str, activation: Activation | None) -> _Built:
    """A local checkpoint: a file (state dict, safetensors, TorchScript) or a model folder."""
    if path.is_dir():
        return _from_folder(arch, path, name, activation)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist; pass an existing file with --weights PATH")
    state = read_state_dict(path)
    openai_archive = is_torchscript(path)
    sha = file_sha256(path)
    key = f"sha256:{sha[:12]}"
    if arch is None:
        if not openai_archive:
            raise WeightsError(
                f"cannot tell which architecture {str(path)!r} is for; name it: load_model(NAME, weights=PATH) "
                f"or --model NAME --weights PATH (NAME as `neuronscope models` lists it, e.g. RN50x4 or ViT-B-32)"
            )
        chosen = activation or "quick_gelu"  # OpenAI trained with QuickGELU
        module = _build_openai_archive(path, state, chosen)
        image_size = module.visual.image_size
        spec = ModelSpec(name=name, weights=key, preprocess=Preprocess(image_size=image_size),
                         activation=chosen, source="file")
    elif openai_archive:  # OpenAI's preprocessing, and QuickGELU whatever the architecture's default
        spec = arch.spec(RANDOM).with_weights(key, activation=activation or "quick_gelu")
        module = build(spec)
    else:
        spec, guessed = arch.spec_for_file(key)
        if activation is not None:
            spec, guessed = spec.with_weights(key, activation=activation), [g for g in guessed if g != "activation"]
        if guessed:
            log.warning("%s: %s does not say its %s and %s's weights differ in it; using %s. Give the file in a "
                        "folder with its open_clip_config.json (as the hub ships it) to use its own.", name,
                        path.name, " or ".join(guessed), arch.name,
                        ", ".join(f"{field} {getattr(spec, field)}" for field in guessed))
        module = build(spec)
    # Also after open_clip's own load of an archive: it loads into fp16 parameters, which
    # would round an fp32 archive; this load restores its exact values.
    load_into(module, state, what=str(path))
    return _Built(module, spec, path, sha)


def _build_openai_archive(path: Path, state: dict[str, torch.Tensor], activation: Activation) -> nn.Module:
    """The CLIP an OpenAI TorchScript archive holds, its shape inferred from the weights."""
    try:
        return openclip.build_from_openai_state_dict(state, quick_gelu=activation == "quick_gelu")
    except KeyError as err:
        raise WeightsError(
            f"{str(path)!r} is a TorchScript archive but not an OpenAI CLIP (no {err}); "
            f"name the architecture: --model NAME --weights PATH"
        ) from None


def _from_folder(arch: Architecture | None, path: Path, name: str, activation: Activation | None) -> _Built:
    """A folder in the mini CLIP's layout (config.json + weights.safetensors) or open_clip's."""
    if bundled.is_config_dir(path):
        config = bundled.read_config_dir(path)
        weights_file = config.weights_path
        sha = file_sha256(weights_file)
        quick = config.model_cfg.get("quick_gelu", False)
        spec = ModelSpec(name=name if arch is None else arch.name, weights=f"sha256:{sha[:12]}",
                         preprocess=config.preprocess, activation=activation or ("quick_gelu" if quick else "gelu"),
                         source="config", model_cfg=config.model_cfg)
        module = build(spec)
        load_into(module, read_state_dict(weights_file), what=str(weights_file))
        return _Built(module, spec, weights_file, sha)
    if (path / download.HF_CONFIG).is_file():
        weights_file = _open_clip_weights_file(path)
        sha = file_sha256(weights_file)
        module = openclip.build_from_dir(path, quick_gelu=_quick_gelu_override(activation))
        load_into(module, read_state_dict(weights_file), what=str(weights_file))
        # open_clip reads a folder's Hugging Face tokenizer from the folder itself.
        spec = _open_clip_module_spec(module, name, f"sha256:{sha[:12]}", "file", _folder_tokenizer(path, str(path)))
        return _Built(module, spec, weights_file, sha)
    raise WeightsError(f"{path} is a folder without config.json or {download.HF_CONFIG}; pass a weights file instead")


def _open_clip_weights_file(folder: Path) -> Path:
    """The weights file of an open_clip folder, which we load (and hash) ourselves.

    open_clip's own folder loading would build a random model without a word
    when the file is missing, and picks among any ``*.safetensors``/``*.bin``.
    """
    for filename in download.HF_WEIGHTS:
        if (folder / filename).is_file():
            return folder / filename
    raise WeightsError(
        f"{folder} has {download.HF_CONFIG} but no weights file ({' or '.join(download.HF_WEIGHTS)}); "
        f"add it, or pass the weights file itself: --weights PATH"
    )


def _quick_gelu_override(activation: Activation | None) -> bool | None:
    """An ``activation`` override as open_clip's ``quick_gelu`` (None: keep the config's)."""
    return None if activation is None else activation == "quick_gelu"


def _from_hub(model_name: str, weights: str, activation: Activation | None,
              cache_dir: str | os.PathLike | None) -> _Built:
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
    module = openclip.build_from_dir(folder, quick_gelu=_quick_gelu_override(activation))
    path, sha = None, None
    if need_weights:
        path = _open_clip_weights_file(folder)  # a cached download: hashed on demand, as tags are
    elif looks_like_path(weights):
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"weights file {weights!r} does not exist; pass an existing file with --weights PATH")
        sha = file_sha256(path)
        weights = f"sha256:{sha[:12]}"
    if path is not None:
        load_into(module, read_state_dict(path), what=str(path))
    spec = _open_clip_module_spec(module, model_name, weights, "hf-hub", _folder_tokenizer(folder))
    return _Built(module, spec, path, sha)


def _open_clip_module_spec(module: nn.Module, name: str, weights: str, source: str,
                           tokenizer: TokenizerSpec) -> ModelSpec:
    """The spec of an open_clip model built by open_clip itself (it carries its preprocess_cfg).

    The activation is read from the built module, so the spec says what runs.
    """
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(module)
    return ModelSpec(name=name, weights=weights, preprocess=Preprocess.from_dict(cfg),
                     activation=openclip.module_activation(module), source=source,  # type: ignore[arg-type]
                     tokenizer=tokenizer)


def _folder_tokenizer(folder: Path, hf_source: str | None = None) -> TokenizerSpec:
    """open_clip's tokenizer choice for the ``text_cfg`` in ``folder``'s open_clip config.

    ``hf_source``: where a Hugging Face tokenizer is read from instead of the
    config's ``hf_tokenizer_name`` (a local folder's own files).
    """
    config = json.loads((folder / download.HF_CONFIG).read_text())
    text_cfg = config.get("model_cfg", config).get("text_cfg") or {}
    return TokenizerSpec.from_text_cfg(text_cfg, hf_source)


# --------------------------------------------------------------------------- modules


def _as_preprocess(preprocess: Preprocess | Mapping[str, Any]) -> Preprocess:
    return preprocess if isinstance(preprocess, Preprocess) else Preprocess.from_dict(preprocess)


def _from_module(
    module: nn.Module, weights: str | os.PathLike | None, preprocess: Preprocess | Mapping[str, Any] | None,
    activation: Activation | None, name: str | None,
) -> _Built:
    """Any ``nn.Module``: used in place (not copied), with the given preprocessing contract."""
    path = None
    if weights == RANDOM:
        raise WeightsError("an nn.Module comes with its own weights: pass nothing, or PATH to load into it")
    if weights not in (DEFAULT, None):
        path = Path(_expand_user(os.fspath(weights)))
        load_into(module, read_state_dict(path), what=str(path))
    tower = _module_image_tower(module)
    if preprocess is None:
        carried = getattr(getattr(module, "visual", module), "preprocess_cfg", None)
        if not carried:
            raise NeuronscopeError(
                "a bare nn.Module needs its preprocessing contract: "
                "load_model(module, preprocess=Preprocess(image_size=224, mean=..., std=...))"
            )
        preprocess = carried
    runs = openclip.module_activation(module)
    if activation and activation != runs:
        # A module's layers are its own: activation= can only say what it already runs.
        if runs is None:
            raise WeightsError(f"this nn.Module runs neither gelu nor quick_gelu, so activation={activation!r} "
                               f"names nothing in it; omit activation")
        raise WeightsError(f"this nn.Module runs {runs}, not activation={activation!r}: a module's layers are its "
                           f"own; build it with the activation you want, or omit activation")
    state_sha = sha256_state_dict(module)
    spec = ModelSpec(
        name=name or type(module).__name__, weights=f"sha256:{state_sha[:12]}", preprocess=_as_preprocess(preprocess),
        activation=runs, source="module", image_tower=tower,  # type: ignore[arg-type]
        tokenizer=_module_tokenizer(module),
    )
    return _Built(module, spec, path, state_sha)


def _module_image_tower(module: nn.Module) -> str:
    """A passed module's image tower: open_clip's ``visual``, else the whole module (``""``)."""
    return "visual" if isinstance(getattr(module, "visual", None), nn.Module) else ""


#: What keeps a passed module's weights dtype: ``auto``'s choice, and the precisions a refusal suggests.
_AUTO_KEEPING = {torch.float32: "bf16", torch.bfloat16: "bf16-weights"}
_PRECISIONS_KEEPING = {torch.float32: "fp32, bf16 or fp16 (autocast)", torch.bfloat16: "bf16-weights"}


def _precision_keeping_dtype(module: nn.Module, requested: str, device: torch.device) -> Precision:
    """The precision a passed ``nn.Module`` runs in, which never casts its weights.

    The module is the caller's, used in place: a cast would change it under them (``bf16-weights`` loses
    fp32 weights for good; fp32 doubles a bf16 module's memory). ``auto`` keeps the module's dtype (bf16
    autocast for fp32 weights where it would pick bf16 weights, ``bf16-weights`` for bf16 ones); an explicit
    precision whose weights dtype is not the module's is refused, before anything is changed.
    """
    plan = resolve_precision(requested, device, _family(module, _module_image_tower(module)))  # type: ignore[arg-type]
    held = {tensor.dtype for tensor in (*module.parameters(), *module.buffers()) if tensor.is_floating_point()}
    if held <= {plan.weight_dtype}:
        return plan
    only = next(iter(held)) if len(held) == 1 else None
    if plan.requested == "auto" and only in _AUTO_KEEPING:
        kept = _AUTO_KEEPING[only]
        return replace(plan, name=kept, reason=f"{plan.reason}; {kept} instead: a passed module is not cast")
    found = ", ".join(sorted(_dtype_name(dtype) for dtype in held - {plan.weight_dtype}))
    suggestion = f" or precision {_PRECISIONS_KEEPING[only]}" if only in _PRECISIONS_KEEPING else ""
    raise NeuronscopeError(f"precision {plan.requested!r} would cast the nn.Module you passed from {found} to "
                           f"{_dtype_name(plan.weight_dtype)} in place: pass a copy "
                           f"(load_model(copy.deepcopy(module), ...)){suggestion}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _module_tokenizer(module: nn.Module) -> TokenizerSpec:
    """CLIP's BPE for a module whose text tower has CLIP's vocabulary (or none); else unknown.

    A module carries no config naming its tokenizer: a text tower with another
    vocabulary (SigLIP's 32,000, xlm-roberta's 250,002) would read CLIP's ids as other words.
    """
    vocab = getattr(module, "vocab_size", None)
    if vocab is None or vocab == CLIP_BPE_VOCAB:
        return TokenizerSpec()
    return TokenizerSpec(unknown=(
        f"its text tower's vocabulary has {vocab} tokens, not CLIP's BPE's {CLIP_BPE_VOCAB}, and an nn.Module "
        f"does not say which tokenizer it reads; load it by its open_clip name, folder or hf-hub: repo instead"))


# --------------------------------------------------------------------------- building


def build(spec: ModelSpec) -> nn.Module:
    """A random-init module of ``spec``'s architecture, on the CPU in fp32."""
    if spec.source == "open_clip":
        downloading_tag = spec.weights != RANDOM and not spec.weights.startswith("sha256:")
        return openclip.build_named(spec.name, quick_gelu=spec.quick_gelu, may_download=downloading_tag)
    if spec.source == "config" and spec.model_cfg is not None:
        return openclip.build_from_cfg(spec.model_cfg, quick_gelu=spec.quick_gelu)
    raise WeightsError(f"cannot build {spec.key} from its spec (source {spec.source!r}); load it from its file")
