"""Result objects of renders; saving and showing live elsewhere (the CLI, the atlas)."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from neuronscope.errors import NeuronscopeError
from neuronscope.visualize.param import PARAMETERIZATIONS

TRANSFORMS = ("standard", "none")


class RenderConfigError(NeuronscopeError, ValueError):
    """A :class:`RenderConfig` that cannot run as given."""


@dataclass(frozen=True)
class RenderConfig:
    """How a render runs. Defaults are Lucid's.

    Attributes:
        steps: optimiser steps (Lucid 512; Microscope 4096).
        lr: Adam's learning rate (Lucid 0.05).
        size: image side (None: the model's input size). A different size
            meets the model by centre crop or grey pad, never by resizing.
        param: ``fft`` or ``pixel``.
        decorrelate: optimise in decorrelated colour.
        alpha: add an alpha channel (composited over random noise each step).
        sd, decay_power: the parameterization's init sd and spectrum decay.
        param_size: the longest side the parameterization lives at, upsampled
            (bilinear) to the image (None: the image's own; Lucid's ``lowres_tensor``).
        transforms: ``standard`` (Lucid's stack, scaled down below 224 px) or ``none``.
        pad, jitter, scales, angles: override the standard stack's amounts
            (pixels; scale factors; degrees). None: Lucid's, scaled down below 224 px.
        redirect_steps: steps with redirected ReLU gradients (Lucid 16).
        l2, tv: weights of an L2 / total-variation penalty on the image (0: off).
        seed: seeds the init and every random transform.
    """

    steps: int = 512
    lr: float = 0.05
    size: int | None = None
    param: str = "fft"
    decorrelate: bool = True
    alpha: bool = False
    sd: float = 0.01
    decay_power: float = 1.0
    param_size: int | None = None
    transforms: str = "standard"
    pad: int | None = None
    jitter: int | None = None
    scales: tuple[float, ...] | None = None
    angles: tuple[float, ...] | None = None
    redirect_steps: int = 16
    l2: float = 0.0
    tv: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        # Checked here, not in the loop: a misspelt choice would otherwise run as another one (no
        # transforms) and a zero count would fail only after the render, in ``final``.
        if self.transforms not in TRANSFORMS:
            raise RenderConfigError(f"transforms {self.transforms!r}: use {' or '.join(map(repr, TRANSFORMS))}")
        if self.param not in PARAMETERIZATIONS:
            raise RenderConfigError(f"param {self.param!r}: use {' or '.join(map(repr, PARAMETERIZATIONS))}")
        if self.steps < 1:
            raise RenderConfigError(f"steps {self.steps}: a render takes at least 1 step")
        if not self.lr > 0:
            raise RenderConfigError(f"lr {self.lr}: Adam needs a positive learning rate (Lucid's 0.05)")
        for name in ("size", "param_size"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise RenderConfigError(f"{name} {getattr(self, name)}: give a positive side in pixels, or None")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_pil(image: Tensor) -> Image.Image:
    """One image [C, H, W] in [0, 1] (C = 3 or 4) -> an RGB or RGBA PIL image."""
    array = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), "RGBA" if array.shape[2] == 4 else "RGB")


def png_bytes(image: Tensor) -> bytes:
    """One image [C, H, W] in [0, 1] as PNG bytes (lossless: reading it back gives the 8-bit pixels)."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class RenderResult:
    """One optimised batch.

    Attributes:
        images: [B, C, H, W] in [0, 1], float32 on the CPU (C = 4 with alpha).
        final: [B]: each finished image's score (``render``'s ``score``: by default the objective without
            the config's penalties), on the image as the model sees it, without transforms.
        curve: [steps, B]: each image's objective, penalties included, at each step, on that step's
            transformed view (before the step's update).
        description: the objective's description.
        config: the :class:`RenderConfig` used.
        seconds: wall time of the optimisation.
    """

    images: Tensor
    final: Tensor
    curve: Tensor
    description: str
    config: RenderConfig
    seconds: float = 0.0

    def pil(self, index: int) -> Image.Image:
        return to_pil(self.images[index])

    def __repr__(self) -> str:  # the tensors would fill a notebook
        return (f"RenderResult({self.description}, {len(self.images)} images "
                f"{self.images.shape[-2]}x{self.images.shape[-1]}, {self.config.steps} steps)")


@dataclass
class UnitRender:
    """One unit's image out of a batched render.

    Attributes:
        unit: the unit (channel) index in ``layer``.
        kind: ``plain``, ``diverse`` or ``facet:NAME``.
        index: which of a unit's several images (diverse renders, facet strengths); 0 otherwise.
        image: [C, H, W] in [0, 1].
        objective: the unit's channel on the finished image as the model sees it (no transforms, no
            penalties, no diversity or facet term): what the atlas stores.
        curve: [steps] the image's whole objective (penalties and terms included) per step, on each
            step's transformed view.
        description: the objective of this image.
        extra: e.g. ``{"strength": 5.0}`` for a faceted render.
    """

    layer: str
    unit: int
    kind: str
    index: int
    image: Tensor
    objective: float
    curve: Tensor
    description: str
    extra: dict[str, Any] = field(default_factory=dict)

    def png(self) -> bytes:
        return png_bytes(self.image)

    def __repr__(self) -> str:
        return f"UnitRender({self.layer} unit {self.unit}, {self.kind} #{self.index}, objective {self.objective:.4g})"
