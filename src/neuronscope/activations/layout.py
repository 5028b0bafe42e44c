"""Which dim of a 4-D activation holds the units: channels first or channels last.

Most 4-D activations are maps ``[B, C, H, W]`` (convolutions, BatchNorm,
pooling). Some models also run modules on ``[B, H, W, C]``: timm's ConvNeXt
(open_clip's ``convnext_*`` towers) permutes each block's input and runs its
LayerNorm and MLP (``Linear`` layers) channels last, then permutes back. A
tensor's shape alone cannot say which it is, so a layer's layout is decided
once, from the model:

1. modules that fix it by type: ``Conv*``/``BatchNorm*``/``GroupNorm``/
   ``InstanceNorm*``/2-D pooling read channels on dim 1, ``Linear`` on the last
   dim; a LayerNorm on the dim its ``normalized_shape`` matches;
2. any other module (activations, dropout, blocks, ``:input`` ports of
   those) takes the layout of the last 4-D tensor that ran before it, from a
   module of known layout: the same layout if its shape is the same, the other
   if its shape is that one permuted (a block that permutes back);
3. otherwise the layout is unknown (None), and reading units from the layer
   is an error, never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from torch import nn

Layout = Literal["channels_first", "channels_last"]
CHANNELS_FIRST: Layout = "channels_first"
CHANNELS_LAST: Layout = "channels_last"

_UNITS_ON_DIM_1 = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                   nn.modules.instancenorm._InstanceNorm, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                   nn.AdaptiveMaxPool2d)


def declared_layout(module: nn.Module, shape: tuple[int, ...]) -> Layout | None:
    """The layout ``module`` fixes for a 4-D tensor of ``shape`` [B, ., ., .] it reads or returns, or None."""
    if isinstance(module, _UNITS_ON_DIM_1):
        return CHANNELS_FIRST
    if isinstance(module, nn.Linear):
        return CHANNELS_LAST
    normalized = getattr(module, "normalized_shape", None)  # LayerNorm and its subclasses (timm's LayerNorm2d)
    if isinstance(module, nn.LayerNorm) and normalized is not None and len(normalized) == 1:
        on_first, on_last = shape[1] == normalized[0], shape[3] == normalized[0]
        if on_first != on_last:
            return CHANNELS_FIRST if on_first else CHANNELS_LAST
    return None


def infer_layouts(fired: Iterable[tuple[str, nn.Module, tuple[int, ...]]],
                  pixels: tuple[int, ...] | None = None) -> dict[str, Layout | None]:
    """Layouts of the 4-D layers among ``fired``: ``(layer name, its module, shape with batch)`` in firing order.

    ``pixels``: the shape of the forward's input images [B, 3, H, W], channels
    first by contract. Non-4-D layers are left out. See the module docstring
    for the rules.
    """
    layouts: dict[str, Layout | None] = {}
    # The last 4-D tensor of known layout, and its shape.
    last: tuple[Layout, tuple[int, ...]] | None = (CHANNELS_FIRST, tuple(pixels)) if pixels else None
    for name, module, shape in fired:
        if len(shape) != 4:
            continue
        layout = declared_layout(module, shape)
        if layout is None and last is not None:
            layout = _follow(last, shape)
        layouts[name] = layout
        if layout is not None:
            last = (layout, shape)
    return layouts


def _follow(last: tuple[Layout, tuple[int, ...]], shape: tuple[int, ...]) -> Layout | None:
    """The layout of a tensor of ``shape`` computed from the tensor ``last`` (its layout and shape)."""
    layout, before = last
    if shape == before:
        return layout
    to_last, to_first = (before[0], before[2], before[3], before[1]), (before[0], before[3], before[1], before[2])
    if shape == (to_last if layout == CHANNELS_FIRST else to_first):
        return CHANNELS_LAST if layout == CHANNELS_FIRST else CHANNELS_FIRST
    return None
