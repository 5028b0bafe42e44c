"""Per-unit reductions of captured activations.

Layouts, batch first:

- conv maps ``[B, C, H, W]``: units are channels (dim 1), cells are (row, col);
  maps run channels last, ``[B, H, W, C]`` (timm ConvNeXt's MLPs), have
  ``layout="channels_last"``: the layer's layout comes from the model, never
  from the shape (:func:`neuronscope.activations.layer_layouts`);
- ViT tokens ``[B, T, D]``: units are the last dim; the first
  ``prefix_tokens`` tokens are class and register tokens (the model says how
  many, :attr:`~neuronscope.models.LoadedModel.prefix_tokens`: open_clip's own
  ViTs 1, the class token; a SigLIP timm trunk 0), the remaining
  ``T - prefix_tokens`` are patches on a ``grid`` (rows, cols) in row-major
  order (tokens that fill the grid exactly carry none: a timm trunk's
  ``patch_embed``, before the class token joins; tokens without prefix tokens that do not fill it, as in
  Swin's later stages, lie on it shrunk by an integer factor, :func:`tokens_grid`). "Spatial" reductions run
  over the patch tokens only;
  :func:`cls_token` takes the class token, and refuses tokens that have none;
- vectors ``[B, D]``: units are the last dim, one cell.

:func:`unit_maps` brings all three to ``[B, C, H, W]``, so every reduction is
written once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from neuronscope.activations.layout import CHANNELS_FIRST, CHANNELS_LAST, Layout
from neuronscope.errors import NeuronscopeError


class NoClassTokenError(NeuronscopeError, ValueError):
    """A class-token reduction of a model with no class token: a ViT that pools its patch tokens (SigLIP), or a
    conv net (a ModifiedResNet), whose layers are maps."""


class OffGridTokensError(NeuronscopeError, ValueError):
    """Tokens that do not lie on the model's patch grid (CoCa's attention pooler: 256 learned queries on a 7x7
    grid), so their units have no cells to reduce over."""


@contextmanager
def naming_layer(layer: str) -> Iterator[None]:
    """Name ``layer`` in an :class:`OffGridTokensError` raised inside: :func:`unit_maps` sees only a tensor."""
    try:
        yield
    except OffGridTokensError as error:
        raise OffGridTokensError(f"layer {layer}: {error}") from None


NO_CLASS_TOKEN = ("this model has no class token (a ViT like SigLIP's pools its patch tokens; a conv net's "
                  "layers are maps): reduce with mean, max or centre instead of cls")


def unit_axis(acts: Tensor, layout: Layout = CHANNELS_FIRST) -> int:
    """The units' dim: 1 for maps [B, C, H, W], the last for tokens [B, T, D], vectors [B, D] and
    channels-last maps [B, H, W, C]."""
    return 1 if acts.ndim == 4 and layout == CHANNELS_FIRST else acts.ndim - 1


def unit_count(acts: Tensor, layout: Layout = CHANNELS_FIRST) -> int:
    return acts.shape[unit_axis(acts, layout)]


def map_grid(acts: Tensor, grid: tuple[int, int] | None = None, *, prefix_tokens: int = 1,
             layout: Layout = CHANNELS_FIRST) -> tuple[int, int]:
    """(rows, cols) of the maps :func:`unit_maps` makes of ``acts`` (same arguments): the cells that
    reductions of this layer report lie on this grid."""
    maps = unit_maps(acts[:1], prefix_tokens=prefix_tokens, grid=grid, layout=layout)
    return int(maps.shape[2]), int(maps.shape[3])


def carried_prefix_tokens(acts: Tensor, grid: tuple[int, int] | None, prefix_tokens: int) -> int:
    """How many of the model's ``prefix_tokens`` these activations carry: none for maps and vectors, and none
    for tokens that are exactly the patch ``grid`` (a timm trunk's ``patch_embed`` runs before the class and
    register tokens join)."""
    if acts.ndim != 3 or (grid is not None and acts.shape[1] == grid[0] * grid[1]):
        return 0
    return prefix_tokens


def unit_maps(acts: Tensor, *, prefix_tokens: int = 1, grid: tuple[int, int] | None = None,
              layout: Layout = CHANNELS_FIRST) -> Tensor:
    """Any layout -> maps [B, C, H, W] (tokens: patch tokens only, laid on ``grid``, or on a square
    grid when None; 4-D: as ``layout`` says)."""
    if acts.ndim == 4:
        return acts.permute(0, 3, 1, 2) if layout == CHANNELS_LAST else acts
    if acts.ndim == 2:
        return acts[:, :, None, None]
    if acts.ndim != 3:
        raise ValueError(f"cannot read units from a tensor of shape {tuple(acts.shape)}")
    prefix = carried_prefix_tokens(acts, grid, prefix_tokens)
    patches = acts[:, prefix:, :]  # [B, H*W, D]
    count = patches.shape[1]
    if grid is None:
        side = math.isqrt(count)
        if side * side != count:
            raise ValueError(f"{count} patch tokens are not a square grid; pass grid=(rows, cols)")
        grid = (side, side)
    stage_grid = tokens_grid(count, grid) if prefix == 0 else (grid if grid[0] * grid[1] == count else None)
    if stage_grid is None:
        raise OffGridTokensError(f"these {acts.shape[1]} tokens are not on the model's {grid[0]}x{grid[1]} patch "
                                 f"grid{f' plus {prefix} class or register token(s)' if prefix else ''} (learned queries "
                                 f"of an attention pooler, say): they have no cells; pick a layer before the "
                                 f"pooler, e.g. a block's output")
    return patches.transpose(1, 2).reshape(acts.shape[0], acts.shape[2], *stage_grid)


def tokens_grid(count: int, grid: tuple[int, int]) -> tuple[int, int] | None:
    """The (rows, cols) that ``count`` patch tokens lie on: ``grid`` when they fill it, else ``grid`` shrunk by
    an integer factor that leaves ``count`` cells (a hierarchical ViT's later stage: Swin's 56x56 patches merge to
    28x28, 14x14, 7x7), else None. Only for tokens without prefix tokens: a class token would be miscounted."""
    rows, cols = grid
    if rows * cols == count:
        return grid
    factor = math.isqrt(rows * cols // count) if count and (rows * cols) % count == 0 else 0
    if factor > 1 and factor * factor * count == rows * cols and rows % factor == 0 and cols % factor == 0:
        return rows // factor, cols // factor
    return None


def spatial_mean(acts: Tensor, *, prefix_tokens: int = 1, grid: tuple[int, int] | None = None,
                 layout: Layout = CHANNELS_FIRST) -> Tensor:
    """Mean over space (maps) or patch tokens (ViTs): [B, C]. The feature-vis objective."""
    return unit_maps(acts, prefix_tokens=prefix_tokens, grid=grid, layout=layout).mean(dim=(2, 3))


def spatial_max(acts: Tensor, *, prefix_tokens: int = 1, grid: tuple[int, int] | None = None,
                layout: Layout = CHANNELS_FIRST) -> tuple[Tensor, Tensor]:
    """Max over space and where it is: values [B, C] and cells [B, C, 2] as (row, col).

    How dataset examples are ranked: by the max, keeping the argmax cell.
    Ties go to the first cell in row-major order.
    """
    maps = unit_maps(acts, prefix_tokens=prefix_tokens, grid=grid, layout=layout)
    width = maps.shape[3]
    values, flat = maps.flatten(2).max(dim=2)  # [B, C], [B, C]
    cells = torch.stack((flat // width, flat % width), dim=-1)  # [B, C, 2]
    return values, cells


def centre(acts: Tensor, *, prefix_tokens: int = 1, grid: tuple[int, int] | None = None,
           layout: Layout = CHANNELS_FIRST) -> Tensor:
    """The centre cell, (H // 2, W // 2): [B, C]. For even sizes, the lower-right of the middle four."""
    maps = unit_maps(acts, prefix_tokens=prefix_tokens, grid=grid, layout=layout)
    return maps[:, :, maps.shape[2] // 2, maps.shape[3] // 2]


def cls_token(acts: Tensor, *, class_token: bool = True) -> Tensor:
    """The class token of ViT tokens [B, T, D] -> [B, D] (open_clip and timm put it first).

    ``class_token``: whether the tokens have one (:attr:`~neuronscope.models.LoadedModel.has_class_token`);
    without one the first token is a register or a patch, so this raises :class:`NoClassTokenError`.
    """
    if acts.ndim != 3:
        raise ValueError(f"cls_token needs tokens [B, T, D], got shape {tuple(acts.shape)}")
    if not class_token:
        raise NoClassTokenError(NO_CLASS_TOKEN)
    return acts[:, 0, :]


REDUCTIONS = ("mean", "max", "centre", "cls")


def reduce_units(acts: Tensor, how: str, *, prefix_tokens: int = 1, grid: tuple[int, int] | None = None,
                 layout: Layout = CHANNELS_FIRST, class_token: bool = True) -> Tensor:
    """One value per unit [B, C] by ``how`` in ``mean|max|centre|cls`` (max drops the cell; ``cls`` needs
    ``class_token``, see :func:`cls_token`)."""
    if how == "mean":
        return spatial_mean(acts, prefix_tokens=prefix_tokens, grid=grid, layout=layout)
    if how == "max":
        return spatial_max(acts, prefix_tokens=prefix_tokens, grid=grid, layout=layout)[0]
    if how in ("centre", "center"):
        return centre(acts, prefix_tokens=prefix_tokens, grid=grid, layout=layout)
    if how == "cls":
        if class_token and acts.ndim == 3 and carried_prefix_tokens(acts, grid, prefix_tokens) == 0:
            # The model has a class token, but not yet at this layer: its first token is a patch.
            raise NoClassTokenError("these tokens are the patches alone (a layer before the class token joins, "
                                    "such as a timm trunk's patch_embed): reduce with mean, max or centre")
        return cls_token(acts, class_token=class_token)
    raise ValueError(f"unknown reduction {how!r}: use one of {', '.join(REDUCTIONS)}")
