"""What one forward of a grey image tells about layers: their units, their map grid, their firing order.

    geometry = layer_geometry(model, ["visual.layer3.0", "neurons"])
    geometry["visual.layer4.1.act3:input"].units, geometry["visual.layer4.1.act3:input"].grid
    list(geometry)     # canonical layers in the order the forward runs them

One helper for the questions asked before any work starts (how many units may ``--units`` name, what
grid does an atlas register, how many units and cells does a scan keep, does a probe layer run before a
unit's layer), so they all read the same forward: a grey image (0.5, the renders' and the padding's
background) through the model's own preprocessing, stopped after the last layer asked for. Units and
grid are those of the maps every reduction reads (:func:`~neuronscope.activations.reduce.unit_maps`),
laid out as the model runs the layer (:func:`~neuronscope.activations.layer_layouts`): a channels-last
``[B, H, W, C]`` layer has C units on an (H, W) grid; a ViT's tokens ``[B, T, D]`` have D units on the patch
grid, after the ``prefix_tokens`` class and register tokens the model puts first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from neuronscope.activations.catalog import check_batched, known_layout
from neuronscope.activations.layout import CHANNELS_FIRST, Layout
from neuronscope.activations.recorder import Recorder
from neuronscope.activations.reduce import carried_prefix_tokens, naming_layer, unit_maps
from neuronscope.models.loaded import LoadedModel, require_loaded


@dataclass(frozen=True)
class LayerGeometry:
    """A layer's units (channels, or a ViT's width), the (rows, cols) of its map ((1, 1) for vectors),
    for a 4-D layer where it holds its units (``CHANNELS_FIRST`` for the others) and, for ViT tokens, how many
    tokens precede the patches (:attr:`~neuronscope.models.LoadedModel.prefix_tokens`; 0 for maps, vectors
    and tokens that are the patches alone, :func:`~neuronscope.activations.reduce.carried_prefix_tokens`).

    Read the layer's units as maps with :meth:`maps`, which knows all of it."""

    units: int
    grid: tuple[int, int]
    layout: Layout = CHANNELS_FIRST
    prefix_tokens: int = 0

    def maps(self, acts: torch.Tensor) -> torch.Tensor:
        """This layer's activations (any batch) -> maps [B, C, H, W] on :attr:`grid`, as every reduction reads them.

        Raises:
            TypeError: ``acts`` is a dict of layers (``record()``'s); a geometry knows its layout, not its name.
        """
        if isinstance(acts, Mapping):
            raise TypeError(f"maps() takes one layer's tensor, not a dict of {len(acts)} layers: pass acts[layer]")
        return unit_maps(acts, grid=self.grid, layout=self.layout, prefix_tokens=self.prefix_tokens)

    def spatial_mean(self, acts: torch.Tensor) -> torch.Tensor:
        """This layer's activations -> [B, C], each unit's mean over its map (the feature-vis objective,
        :func:`~neuronscope.activations.reduce.spatial_mean`, on this geometry): a capture function that keeps
        no maps."""
        return self.maps(acts).mean(dim=(2, 3))


@torch.no_grad()
def layer_geometry(model: LoadedModel, layers: Sequence[str]) -> dict[str, LayerGeometry]:
    """``{canonical layer: LayerGeometry}`` of ``layers`` (names or aliases), in the order they fire.

    Raises:
        NeuronscopeError: a 4-D layer whose layout the model does not fix (its units cannot be told);
            :class:`~neuronscope.activations.catalog.UnbatchedLayerError`: a layer without one row per image
            (Swin's window attention, a pooler's learned queries);
            :class:`~neuronscope.activations.reduce.OffGridTokensError`: tokens that are not on the patch grid
            (CoCa's attention pooler: 256 learned queries).
    """
    require_loaded(model, "layer_geometry")
    height, width = model.preprocess.image_size
    grey = model.preprocess.normalize(torch.full((1, 3, height, width), 0.5))
    recorder = Recorder(model, [model.resolve_layer(layer) for layer in layers], early_stop=True)
    recorder.run(grey)
    # The recorder keeps its captures in firing order.
    return {name: _geometry(model, name, acts) for name, acts in recorder.activations.items()}


def _geometry(model: LoadedModel, layer: str, acts: torch.Tensor) -> LayerGeometry:
    check_batched(layer, acts, 1)
    layout = known_layout(model, layer, acts)
    prefix_tokens = carried_prefix_tokens(acts, model.token_grid, model.prefix_tokens)
    with naming_layer(layer):
        maps = unit_maps(acts, grid=model.token_grid, layout=layout, prefix_tokens=prefix_tokens)  # [1, C, H, W]
    return LayerGeometry(int(maps.shape[1]), (int(maps.shape[2]), int(maps.shape[3])), layout, prefix_tokens)
