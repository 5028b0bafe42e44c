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
   those) takes the layout of an earlier tensor of known layout (the latest)
   with the same shape, or else the other layout of one whose shape is its
   own permuted (a block that permutes back);
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
    # The layout of the latest tensor of each shape whose layout is known. A block's input may come from
    # further back than the last tensor (a ResNet's downsample reads the block's input, after bn3 ran).
    known: dict[tuple[int, ...], Layout] = {tuple(pixels): CHANNELS_FIRST} if pixels else {}
    for name, module, shape in fired:
        if len(shape) != 4:
            continue
        layout = declared_layout(module, shape) or _follow(known, shape)
        layouts[name] = layout
        if layout is not None:
            known[shape] = layout
    return layouts


def _follow(known: dict[tuple[int, ...], Layout], shape: tuple[int, ...]) -> Layout | None:
    """The layout of a tensor of ``shape`` computed from earlier tensors of ``known`` shapes and layouts."""
    if shape in known:
        return known[shape]
    batch, a, b, c = shape
    if known.get((batch, c, a, b)) == CHANNELS_FIRST:  # [B, C, H, W] permuted to [B, H, W, C]
        return CHANNELS_LAST
    if known.get((batch, b, c, a)) == CHANNELS_LAST:  # [B, H, W, C] permuted back to [B, C, H, W]
        return CHANNELS_FIRST
    return None
