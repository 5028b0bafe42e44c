"""Activations: layer names, the Recorder (capture and edit), reductions.

    from neuronscope.activations import record
    acts = record(model, images, ["neurons", "visual.layer3.*"])
    acts["visual.layer4.5.act3:input"].shape   # [B, 2560, 9, 9] on RN50x4
    layer_geometry(model, ["neurons"])         # {"visual.layer4.5.act3:input": LayerGeometry(2560, (9, 9), ...)}
"""

from neuronscope.activations.catalog import (
    LayerInfo,
    UnbatchedLayerError,
    capture_layout,
    known_layout,
    layer_layouts,
    list_layers,
)
from neuronscope.activations.edits import Edit, mean_ablate, set_units, zero_units
from neuronscope.activations.geometry import LayerGeometry, layer_geometry
from neuronscope.activations.layout import CHANNELS_FIRST, CHANNELS_LAST, Layout
from neuronscope.activations.names import (
    INPUT,
    LayerRef,
    aliases_by_layer,
    all_layer_names,
    resolve_layer,
    resolve_layers,
    split_layer_list,
)
from neuronscope.activations.record import record
from neuronscope.activations.recorder import Recorder
from neuronscope.activations.reduce import (
    REDUCTIONS,
    NoClassTokenError,
    OffGridTokensError,
    centre,
    cls_token,
    map_grid,
    reduce_units,
    spatial_max,
    spatial_mean,
    unit_axis,
    unit_count,
    unit_maps,
)

__all__ = [
    "CHANNELS_FIRST", "CHANNELS_LAST", "INPUT", "REDUCTIONS",
    "Edit", "LayerGeometry", "LayerInfo", "LayerRef", "Layout", "NoClassTokenError", "OffGridTokensError", "Recorder",
    "UnbatchedLayerError",
    "aliases_by_layer", "all_layer_names", "capture_layout", "centre", "cls_token", "known_layout", "layer_geometry",
    "layer_layouts", "list_layers", "map_grid", "mean_ablate", "record",
    "reduce_units", "resolve_layer", "resolve_layers", "set_units", "spatial_max", "spatial_mean",
    "split_layer_list", "unit_axis", "unit_count", "unit_maps", "zero_units",
]
