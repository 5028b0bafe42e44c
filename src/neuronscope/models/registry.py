"""The registry: architectures and the weight tags each can be filled with.

Architectures and weights are data (as in open_clip and timm): every
open_clip architecture with its pretrained tags, plus neuronscope's own
entries (the bundled mini CLIP and the tiny test models). A
:class:`ModelSpec` is made from an entry and a weights choice.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from neuronscope.errors import UnknownModelError, WeightsError
from neuronscope.models import bundled, openclip, tiny
from neuronscope.models.preprocess import OPENAI_MEAN, OPENAI_STD, Preprocess
from neuronscope.models.spec import BUNDLED, RANDOM, ModelSpec


@dataclass(frozen=True)
class Architecture:
    """A registered architecture and the weights it can take.

    Attributes:
        name: registry name (``RN50x4``, ``tiny-rn``, ``mini-clip``).
        source: ``open_clip`` (built from open_clip's config of that name),
            ``config`` (``CLIP(**model_cfg)``) or ``bundled`` (a config
            folder shipped in the package).
        tags: ``{tag: pretrained cfg}``; a cfg holds where to get the weights
            (``hf_hub``, ``url`` or ``file``) and their contract (``mean``,
            ``std``, ``interpolation``, ``resize_mode``, ``quick_gelu``).
        default_weights: what an omitted ``weights`` means: ``bundled``,
            ``random``, or None = the first tag found in the local cache.
        model_cfg, preprocess, quick_gelu: the random-init contract of a
            ``config`` architecture.
        probe_layers: where facet probes are trained (see :class:`ModelSpec`).
    """

    name: str
    source: str
    tags: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_weights: str | None = None
    model_cfg: Mapping[str, Any] | None = None
    preprocess: Preprocess | None = None
    quick_gelu: bool = False
    description: str = ""
    probe_layers: tuple[str, ...] = ()

    def weight_choices(self) -> list[str]:
        """What ``weights=`` accepts besides a PATH, in display order."""
        bundled_tag = [BUNDLED] if self.source == "bundled" else []
        return [*bundled_tag, *self.tags, RANDOM]

    def spec(self, weights: str) -> ModelSpec:
        """The spec of this architecture filled with ``weights`` (a tag, bundled or random).

        Local files get theirs from :meth:`spec_for_file`.
        """
        if self.source == "bundled":
            if weights not in (BUNDLED, RANDOM):
                raise WeightsError(f"{self.name} takes weights {BUNDLED}, {RANDOM} or PATH, not {weights!r}")
            config = bundled.bundled_config()
            return ModelSpec(
                name=self.name, weights=weights, preprocess=config.preprocess,
                activation="quick_gelu" if config.model_cfg.get("quick_gelu") else "gelu",
                source="config", model_cfg=config.model_cfg, description=self.description,
                probe_layers=self.probe_layers,
            )
        if self.source == "config":
            if weights != RANDOM and weights not in self.tags:
                raise self.unknown_weights(weights)
            tag_cfg = self.tags.get(weights, {})
            preprocess = _merge_preprocess(self.preprocess, tag_cfg)
            quick_gelu = bool(tag_cfg.get("quick_gelu", self.quick_gelu))
            return ModelSpec(
                name=self.name, weights=weights, preprocess=preprocess,
                activation="quick_gelu" if quick_gelu else "gelu", source="config",
                model_cfg=self.model_cfg, description=self.description, probe_layers=self.probe_layers,
            )
        # open_clip: image size from the architecture, the rest from the tag.
        config = openclip.model_config(self.name) or {}
        image_size = config.get("vision_cfg", {}).get("image_size", 224)
        base = Preprocess(image_size=image_size, mean=OPENAI_MEAN, std=OPENAI_STD)
        if weights != RANDOM and weights not in self.tags:
            raise self.unknown_weights(weights)
        tag_cfg = self.tags.get(weights, {})
        quick_gelu = bool(tag_cfg.get("quick_gelu", config.get("quick_gelu", False)))
        return ModelSpec(
            name=self.name, weights=weights, preprocess=_merge_preprocess(base, tag_cfg),
            activation="quick_gelu" if quick_gelu else "gelu", source="open_clip",
            description=self.description, probe_layers=self.probe_layers,
        )

    def spec_for_file(self, weights: str) -> tuple[ModelSpec, list[str]]:
        """The spec of a local weights file of this architecture (``weights``: its ``sha256:...`` key), and
        the fields of it that are a guess.

        A state dict does not say how its model sees: the preprocessing and activation that every tag of
        the architecture shares are taken, since the file most likely holds one of them (MobileCLIP-S1's
        [0, 1] pixels, SigLIP's 0.5 mean and std: the random spec's OpenAI mean and std would feed them
        wrongly normalised pixels). A field the tags disagree on keeps the random spec's value and is
        returned in the list, for the caller to warn about.
        """
        chosen: dict[str, Any] = {}
        guessed: list[str] = []
        tagged = [self.spec(tag) for tag in self.tags]
        for name in ("preprocess", "activation"):
            values = {getattr(spec, name) for spec in tagged}
            if len(values) == 1:
                chosen[name] = values.pop()
            elif values:
                guessed.append(name)
        return self.spec(RANDOM).with_weights(weights, **chosen), guessed

    def unknown_weights(self, weights: str) -> WeightsError:
        choices = ", ".join(self.weight_choices())
        return WeightsError(f"{self.name} has no weights {weights!r}: use one of {choices}, or PATH to a local file")


def _merge_preprocess(base: Preprocess | None, tag_cfg: Mapping[str, Any]) -> Preprocess:
    if base is None:
        raise ValueError("a config architecture needs a preprocess contract")
    return Preprocess(
        image_size=base.image_size,
        mean=tuple(tag_cfg.get("mean", base.mean)),
        std=tuple(tag_cfg.get("std", base.std)),
        interpolation=tag_cfg.get("interpolation", base.interpolation),
        resize_mode=tag_cfg.get("resize_mode", base.resize_mode),
    )


# --------------------------------------------------------------------------- entries

_OWN: dict[str, Architecture] = {}


def register(architecture: Architecture, *, replace: bool = False) -> Architecture:
    """Add an architecture (a config or a folder) to the registry; returns it."""
    if architecture.name in _OWN and not replace:
        raise ValueError(f"{architecture.name!r} is already registered (pass replace=True to override it)")
    _OWN[architecture.name] = architecture
    return architecture


def unregister(name: str) -> None:
    """Remove one of neuronscope's own entries (tests use this to clean up)."""
    _OWN.pop(name, None)


register(Architecture(
    name="mini-clip", source="bundled", default_weights=BUNDLED,
    description="the bundled mini CLIP, trained on a clipart-and-words world (64 px ModifiedResNet)",
    probe_layers=("visual.layer3.{0,1}",),
))
register(Architecture(
    name="tiny-rn", source="config", default_weights=RANDOM, model_cfg=tiny.TINY_RN,
    preprocess=Preprocess(image_size=64), description="tiny ModifiedResNet CLIP for tests (random weights)",
))
register(Architecture(
    name="tiny-vit", source="config", default_weights=RANDOM, model_cfg=tiny.TINY_VIT,
    preprocess=Preprocess(image_size=64), description="tiny ViT CLIP for tests (random weights)",
))


# Facet-probe layers of open_clip architectures (the paper's, for RN50x4: layer3 blocks 0,2,4,6,8 post-ReLU).
OPEN_CLIP_PROBE_LAYERS: dict[str, tuple[str, ...]] = {
    "RN50": ("visual.layer3.{0,2,4}",),
    "RN101": ("visual.layer3.{0,4,8,12,16,20}",),
    "RN50x4": ("visual.layer3.{0,2,4,6,8}",),
    "RN50x16": ("visual.layer3.{0,3,6,9,12,15}",),
    "RN50x64": ("visual.layer3.{0,4,8,12,16,20,24,28,32}",),
}


def _open_clip_architecture(name: str) -> Architecture | None:
    if openclip.model_config(name) is None:
        return None
    return Architecture(name=name, source="open_clip", tags=openclip.pretrained_tags(name),
                        probe_layers=OPEN_CLIP_PROBE_LAYERS.get(name, ()))


def get_architecture(name: str) -> Architecture:
    """The registry entry for ``name``; an error with close matches when there is none."""
    if name in _OWN:
        return _OWN[name]
    found = _open_clip_architecture(name)
    if found is not None:
        return found
    known = [*_OWN, *openclip.architectures()]
    by_case = [k for k in known if k.lower() == name.lower()]
    close = by_case or difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}{hint} (`neuronscope models` lists them; hf-hub:ORG/REPO and local files work too)"
    )


def list_architectures(pattern: str | None = None) -> list[Architecture]:
    """Registered and open_clip architectures whose name matches ``pattern``.

    ``pattern`` is a case-insensitive shell pattern (``RN50*``) or, without
    wildcards, a substring (``vit-b``).
    """
    names = [*_OWN, *(n for n in openclip.architectures() if n not in _OWN)]
    if pattern:
        wanted = pattern.lower()
        if not any(ch in wanted for ch in "*?["):
            wanted = f"*{wanted}*"
        names = [n for n in names if fnmatch.fnmatchcase(n.lower(), wanted)]
    return [get_architecture(n) for n in names]


def split_model_name(text: str) -> tuple[str, str | None]:
    """``"RN50x4@openai"`` -> ``("RN50x4", "openai")``; ``"mini-clip"`` -> ``("mini-clip", None)``.

    An existing path is never split (file names may contain ``@``).
    """
    if "@" not in text or os.path.exists(text):
        return text, None
    name, _, weights = text.rpartition("@")
    return name, weights or None
