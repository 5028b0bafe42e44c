"""What one forward of a grey image tells about layers: their units, their map grid, their firing order.

    geometry = layer_geometry(model, ["visual.layer3.0", "neurons"])
    geometry["visual.layer4.1.act3:input"].units, geometry["visual.layer4.1.act3:input"].grid
    list(geometry)     # canonical layers in the order the forward runs them

One helper for the questions a command asks before it starts (how many units may ``--units`` name, what
grid does an atlas register, does a probe layer run before a unit's layer), so they all read the same
forward: a grey image (0.5, the renders' and the padding's background) through the model's own
preprocessing, stopped after the last layer asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from neuronscope.activations.recorder import Recorder
from neuronscope.activations.reduce import map_grid, unit_count
from neuronscope.models.loaded import LoadedModel


@dataclass(frozen=True)
class LayerGeometry:
    """A layer's units (channels, or a ViT's width) and the (rows, cols) of its map ((1, 1) for vectors)."""

    units: int
    grid: tuple[int, int]


@torch.no_grad()
def layer_geometry(model: LoadedModel, layers: Sequence[str]) -> dict[str, LayerGeometry]:
    """``{canonical layer: LayerGeometry}`` of ``layers`` (names or aliases), in the order they fire."""
    height, width = model.preprocess.image_size
    grey = model.preprocess.normalize(torch.full((1, 3, height, width), 0.5))
    recorder = Recorder(model, [model.resolve_layer(layer) for layer in layers], early_stop=True)
    recorder.run(grey)
    return {name: LayerGeometry(unit_count(acts), map_grid(acts, model.token_grid))
            for name, acts in recorder.activations.items()}  # the recorder keeps them in firing order
