"""The layer catalogue: every hookable layer of a model with its aliases and shape."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from neuronscope.activations.names import aliases_by_layer, all_layer_names
from neuronscope.activations.recorder import Recorder
from neuronscope.models.loaded import LoadedModel


@dataclass(frozen=True)
class LayerInfo:
    """One hookable layer: canonical name, its aliases, its shape without the batch dim."""

    name: str
    aliases: tuple[str, ...]
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "aliases": list(self.aliases), "shape": list(self.shape)}


def _shape_only(acts: torch.Tensor) -> torch.Tensor:
    return torch.empty(acts.shape, dtype=acts.dtype, device="meta")


def list_layers(model: LoadedModel) -> list[LayerInfo]:
    """All layers that run in the image forward, in execution order, with shapes.

    One dummy forward (a single zero image at the model's input size) with a
    recorder on every module's input and output. Modules that do not run in
    the image forward (the text tower) or pass no tensor are left out.
    """
    height, width = model.preprocess.image_size
    pixels = torch.zeros(1, 3, height, width)
    # Only shapes are needed: keep a meta tensor, not a copy of every activation.
    recorder = Recorder(model, all_layer_names(model.module), capture_fn=_shape_only)
    with warnings.catch_warnings():
        # Modules that run twice (shared activations) are listed with their first call.
        warnings.simplefilter("ignore", RuntimeWarning)
        captured = recorder.run(pixels, require_all=False)
    names = sorted(captured, key=list(recorder.activations).index)  # firing order
    by_layer = aliases_by_layer(model.layer_aliases)
    return [LayerInfo(name, tuple(by_layer.get(name, ())), tuple(captured[name].shape[1:])) for name in names]
