"""The layer catalogue: every hookable layer of a model with its aliases and shape."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import Tensor, nn

from neuronscope.activations.layout import CHANNELS_FIRST, Layout, infer_layouts
from neuronscope.activations.names import LayerRef, aliases_by_layer, all_layer_names
from neuronscope.activations.recorder import Recorder
from neuronscope.errors import NeuronscopeError
from neuronscope.models.loaded import LoadedModel, require_loaded


@dataclass(frozen=True)
class LayerInfo:
    """One hookable layer: canonical name, its aliases, its shape without the batch dim, and for a 4-D
    layer where its units are (``channels_first``: [C, H, W], ``channels_last``: [H, W, C], None: unknown;
    see :mod:`neuronscope.activations.layout`).

    ``batched`` is False for a layer without one row per image (Swin's window attention, [images x windows, ...];
    a layer fed by a parameter, such as CoCa's pooler queries ``visual.attn_pool.ln_q:input``): its ``shape`` is
    then the whole captured shape for :data:`LISTING_IMAGES` images, since no dim of it is the batch."""

    name: str
    aliases: tuple[str, ...]
    shape: tuple[int, ...]
    layout: Layout | None = None
    batched: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The ``layers --json`` entry; ``"batched": false`` only on the few layers without a batch dim."""
        entry = {"name": self.name, "aliases": list(self.aliases), "shape": list(self.shape), "layout": self.layout}
        return entry if self.batched else {**entry, "batched": False}


LISTING_IMAGES = 2
"""Images in the listing's forward: two, so that a parameter's leading 1 is not taken for the batch."""


def _shape_only(acts: torch.Tensor) -> torch.Tensor:
    return torch.empty(acts.shape, dtype=acts.dtype, device="meta")


def list_layers(model: LoadedModel) -> list[LayerInfo]:
    """All layers that run in the image forward, in execution order, with shapes.

    One dummy forward (:data:`LISTING_IMAGES` zero images at the model's input size) with a
    recorder on every module's input and output. Modules that do not run in
    the image forward (the text tower) or pass no tensor are left out.
    """
    require_loaded(model, "list_layers")
    height, width = model.preprocess.image_size
    pixels = torch.zeros(LISTING_IMAGES, 3, height, width)
    # Only shapes are needed: keep a meta tensor, not a copy of every activation.
    recorder = Recorder(model, all_layer_names(model.module), capture_fn=_shape_only)
    with warnings.catch_warnings():
        # Modules that run twice (shared activations) are listed with their first call.
        warnings.simplefilter("ignore", RuntimeWarning)
        captured = recorder.run(pixels, require_all=False)
    names = sorted(captured, key=list(recorder.activations).index)  # firing order
    layouts = infer_layouts(((name, model.module.get_submodule(LayerRef.parse(name).path), tuple(captured[name].shape))
                             for name in names), pixels=tuple(pixels.shape))
    by_layer = aliases_by_layer(model.layer_aliases)
    return [_layer_info(name, tuple(by_layer.get(name, ())), tuple(captured[name].shape), layouts.get(name))
            for name in names]


def _layer_info(name: str, aliases: tuple[str, ...], shape: tuple[int, ...], layout: Layout | None) -> LayerInfo:
    """The listing's entry for a capture of ``shape`` (with its batch of :data:`LISTING_IMAGES`, if it has one)."""
    batched = bool(shape) and shape[0] == LISTING_IMAGES
    return LayerInfo(name, aliases, shape[1:] if batched else shape, layout, batched)


_LAYOUTS: WeakKeyDictionary[nn.Module, dict[str, Layout | None]] = WeakKeyDictionary()


def layer_layouts(model: LoadedModel) -> dict[str, Layout | None]:
    """``{layer: layout}`` of every 4-D layer of ``model`` (see :class:`LayerInfo`), from one dummy forward
    per module (cached: a module's layouts do not change)."""
    require_loaded(model, "layer_layouts")
    if model.module not in _LAYOUTS:
        _LAYOUTS[model.module] = {info.name: info.layout for info in list_layers(model)
                                  if len(info.shape) == (3 if info.batched else 4)}
    return _LAYOUTS[model.module]


def capture_layout(model: LoadedModel, layer: str, acts: Tensor) -> Layout | None:
    """Where ``acts``, a capture of the canonical ``layer``, holds its units: a 4-D tensor's layout from
    :func:`layer_layouts` (None: the model does not fix it), ``CHANNELS_FIRST`` for tokens and vectors (their
    units are last whatever the layout says). The catalogue's forward runs only for a 4-D capture."""
    if acts.ndim != 4:
        return CHANNELS_FIRST
    return layer_layouts(model).get(layer)


def known_layout(model: LoadedModel, layer: str, acts: Tensor) -> Layout:
    """:func:`capture_layout`, where reading units needs it known: an error naming the layer when it is not."""
    layout = capture_layout(model, layer, acts)
    if layout is None:
        raise NeuronscopeError(unknown_layout_message(layer, tuple(acts.shape)))
    return layout


def unknown_layout_message(layer: str, shape: tuple[int, ...]) -> str:
    """The one-line error for reading units of a 4-D ``layer`` (``shape`` with batch) whose layout is unknown."""
    return (f"cannot tell whether layer {layer} {list(shape[1:])} holds its units first or last (no Conv, "
            f"Linear or norm layer fixes it): use a neighbouring Conv, Linear or norm layer")


class UnbatchedLayerError(NeuronscopeError, ValueError):
    """A layer whose first dim is not the images: Swin's window attention (images x windows), or a layer fed by
    a parameter (an attention pooler's learned queries), which has no batch dim at all."""


def check_batched(layer: str, acts: Tensor, images: int) -> None:
    """Raise :class:`UnbatchedLayerError` when ``acts`` of ``layer``, captured for ``images`` images, do not have
    one row per image: reading its dim 0 as the images would mix windows or queries with images."""
    if acts.ndim and acts.shape[0] != images:
        raise UnbatchedLayerError(
            f"layer {layer} {list(acts.shape)} does not hold one row per image ({images} in, {acts.shape[0]} "
            f"out: attention over windows, as in Swin, or a learned parameter): its units have no value per "
            f"image; pick a block's or stage's output")
