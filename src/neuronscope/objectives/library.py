"""The objective library: units, directions, prompts, batch relations and image penalties.

Every function returns an :class:`Objective` whose value is one number per
image [B]. ``unit`` arguments take one index (every image is scored by it; an
``int``, a NumPy / torch integer scalar or a string like ``"473"``) or one index per image (image ``i``
by ``unit[i]``; a list, an integer array or a string like ``"3,5,8"``): the latter is how one batch renders
many units. Both are read by :func:`~neuronscope.units.parse_units`, so a float is an error, never truncated. ``batch`` restricts an objective to some images (the
others score 0).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from neuronscope.errors import NeuronscopeError, UnitsError
from neuronscope.objectives.base import Context, Objective
from neuronscope.units import parse_units

Units = int | Sequence[int] | str
Batch = int | Sequence[int] | None


def _one_index(units: Units | Batch) -> int | None:
    """``units`` as one index, or None for a sequence of them.

    Anything with ``__index__`` is one index: a NumPy or torch integer scalar as well as an ``int``.
    """
    try:
        return operator.index(units)  # type: ignore[arg-type]
    except TypeError:
        return None


def _as_units(units: Units | str) -> int | list[int]:
    """``units`` read by :func:`~neuronscope.units.parse_units`: one plain int for every image (an int, a NumPy /
    torch integer, a string naming one unit) or a list of them, one per image (repeats kept: two images may
    render one unit). A float is refused, never truncated."""
    listed = parse_units(units, repeats=True)
    one = _one_index(units) is not None or (isinstance(units, str) and len(listed) == 1)
    return listed[0] if one else listed


def _check_units(listed: Sequence[int], layer: str, count: int) -> None:
    """Refuse a unit the layer does not have, on the host: indexing with it fails later and, on a GPU, as a
    device-side assert that names neither the unit nor the layer."""
    for unit in listed:
        if not 0 <= unit < count:
            raise UnitsError(f"unit {unit} of {layer}: the layer has {count} units (0 to {count - 1})")


def _per_image(values: Tensor, units: Units, layer: str) -> Tensor:
    """Pick ``units`` of ``layer`` from per-unit values [B, C]: one unit for all, or one per image -> [B]."""
    single = _one_index(units)
    listed = [single] if single is not None else [operator.index(u) for u in units]
    _check_units(listed, layer, values.shape[1])
    if single is not None:
        return values[:, single]
    if len(listed) != values.shape[0]:
        raise ValueError(f"{len(listed)} units for {values.shape[0]} images: give one unit, or one per image")
    index = torch.tensor(listed, dtype=torch.long, device=values.device)
    return values.gather(1, index[:, None])[:, 0]


def _masked(values: Tensor, batch: Batch) -> Tensor:
    """Zero every image but those in ``batch`` (None: keep all)."""
    if batch is None:
        return values
    keep = torch.zeros_like(values)
    single = _one_index(batch)
    keep[[single] if single is not None else [operator.index(b) for b in batch]] = 1
    return values * keep


def _units_text(units: Units) -> str:
    single = _one_index(units)
    if single is not None:
        return str(single)
    listed = [operator.index(u) for u in units]
    return ",".join(str(u) for u in listed) if len(listed) <= 4 else f"{listed[0]},...,{listed[-1]} ({len(listed)})"


def _batch_text(batch: Batch) -> str:
    return "" if batch is None else f", batch {batch}"


def channel(layer: str, unit: Units, *, relu: bool = False, batch: Batch = None) -> Objective:
    """The spatial mean of a unit (ViTs: the mean over patch tokens): the paper's neuron objective.

    ``relu``: the spatial mean of ``max(0, activation)`` instead, as OpenAI's faceted recipe reads its unit
    (only the cells where it fires count); its gradient is redirected while the render's ReLUs are.
    """
    unit = _as_units(unit)

    def value(ctx: Context) -> Tensor:
        maps = ctx.maps(layer)
        means = (ctx.relu(maps) if relu else maps).mean(dim=(2, 3))  # [B, C]: reduce.spatial_mean, in its layout
        return _masked(_per_image(means, unit, layer), batch)

    return Objective(value, [layer],
                     f"Channel [{layer}, {_units_text(unit)}{', relu' if relu else ''}{_batch_text(batch)}]")


def _cell_at(cell: tuple[int, int] | None, layer: str, grid: tuple[int, int]) -> tuple[int, int]:
    """``cell`` (the centre when None) checked against the layer's grid (rows, cols), known only in a forward:
    an index past it would fail inside torch without naming the grid."""
    rows, cols = grid
    if cell is None:
        return rows // 2, cols // 2
    row, col = cell
    if row >= rows or col >= cols:
        raise ValueError(f"cell ({row}, {col}) of {layer}: the layer's grid is {rows}x{cols} "
                         f"(rows 0 to {rows - 1}, columns 0 to {cols - 1})")
    return row, col


def neuron(layer: str, unit: Units, *, cell: tuple[int, int] | None = None, batch: Batch = None) -> Objective:
    """A unit at one spatial cell (row, col) counted from (0, 0) at the top left; the centre cell by default.

    Raises:
        ValueError: a cell that is not two non-negative indices (a negative one would wrap to the far side);
            a cell past the layer's grid, when the objective is evaluated.
    """
    if cell is not None:
        cell = tuple(operator.index(i) for i in cell)
        if len(cell) != 2 or min(cell) < 0:
            raise ValueError(f"cell {cell} of {layer}: give (row, col), each from 0 (the top left cell is (0, 0))")
    unit = _as_units(unit)

    def value(ctx: Context) -> Tensor:
        maps = ctx.maps(layer)  # [B, C, H, W]
        row, col = _cell_at(cell, layer, (maps.shape[2], maps.shape[3]))
        return _masked(_per_image(maps[:, :, row, col], unit, layer), batch)

    where = "centre" if cell is None else f"{cell[0]},{cell[1]}"
    return Objective(value, [layer], f"Neuron [{layer}, {_units_text(unit)} @ {where}{_batch_text(batch)}]")


def direction(layer: str, vector: Tensor, *, cossim_pow: float = 0.0, batch: Batch = None) -> Objective:
    """A direction in the layer's unit space: Lucid's ``direction`` objective with its cosine power.

    At every cell: ``dot(a, v) * max(cos(a, v), 0.1) ** cossim_pow``, then the mean
    over cells (Lucid's ``direction_neuron_cossim`` reads one cell instead).
    ``cossim_pow = 0`` is the plain dot product; higher powers reward pointing
    *along* ``v`` rather than just far (Lucid used 1 to 4).

    Args:
        vector: [C], one weight per unit.
    """
    target = vector.detach().float().flatten()

    def value(ctx: Context) -> Tensor:
        maps = ctx.maps(layer)  # [B, C, H, W]
        v = target.to(maps.device)
        if v.numel() != maps.shape[1]:
            raise ValueError(f"direction of {v.numel()} values for {layer} with {maps.shape[1]} units")
        dot = torch.einsum("bchw,c->bhw", maps, v)
        if cossim_pow:
            cos = dot / (maps.norm(dim=1) * v.norm() + 1e-6)
            dot = dot * cos.clamp(min=0.1) ** cossim_pow
        return _masked(dot.mean(dim=(1, 2)), batch)

    power = f", cossim^{cossim_pow:g}" if cossim_pow else ""
    return Objective(value, [layer], f"Direction [{layer}{power}{_batch_text(batch)}]")


def text_direction(model, prompt: str, *, cossim_pow: float = 1.0, batch: Batch = None) -> Objective:
    """The image embedding pointing along a prompt's text embedding (via the model's text tower).

    The layer is the image tower's output (the embedding CLIP compares with
    text), so the forward runs to the end.

    Args:
        model: a :class:`neuronscope.models.LoadedModel` with a text tower.
    """
    from neuronscope.probing.zeroshot import encode_texts

    if not hasattr(model.module, "encode_text"):
        raise NeuronscopeError(f"{model.key} has no text tower; text_direction needs a CLIP")
    text = encode_texts(model, [prompt])[0]  # [D], L2-normalised
    layer = model.spec.image_tower or "visual"
    objective = direction(layer, text, cossim_pow=cossim_pow, batch=batch)
    objective.description = f"Text [{prompt!r}{_batch_text(batch)}]"
    return objective


def _gram(maps: Tensor) -> Tensor:
    """Per image, the channels' Gram matrix flattened and L2-normalised: [B, C*C]."""
    flat = maps.flatten(2)  # [B, C, HW]
    gram = flat @ flat.transpose(1, 2) / flat.shape[2]
    return F.normalize(gram.flatten(1), dim=1)


def diversity(layer: str) -> Objective:
    """Lucid's diversity: minus each image's mean cosine similarity of Gram matrices to the others.

    Higher is more diverse. With one image it is 0.
    """
    def value(ctx: Context) -> Tensor:
        grams = _gram(ctx.maps(layer))  # [B, C*C]
        count = grams.shape[0]
        if count < 2:
            return grams.new_zeros(count)
        similarity = grams @ grams.T  # [B, B]
        others = similarity.sum(dim=1) - similarity.diagonal()
        return -others / (count - 1)

    return Objective(value, [layer], f"Diversity [{layer}]")


#: Lucid's alignment compares each image with those 1 to 4 places away in the batch.
ALIGNMENT_DISTANCES = 4


def alignment(layer: str, *, decay_ratio: float = 2.0) -> Objective:
    """Lucid's alignment: neighbouring images in the batch have close activations (for interpolations).

    Minus the mean squared distance between the maps of images ``d`` = 1..4 places apart, weighted by
    ``decay_ratio ** -d``; each pair's share goes half to each of its images, so the batch's sum is
    Lucid's number. Higher is better aligned.
    """
    def value(ctx: Context) -> Tensor:
        maps = ctx.maps(layer)
        count = maps.shape[0]
        penalty = maps.new_zeros(count)
        for distance in range(1, min(ALIGNMENT_DISTANCES, count - 1) + 1):
            gap = (maps[distance:] - maps[:-distance]).pow(2).mean(dim=(1, 2, 3)) / decay_ratio ** distance / 2
            penalty = penalty.index_add(0, torch.arange(distance, count, device=maps.device), gap)
            penalty = penalty.index_add(0, torch.arange(0, count - distance, device=maps.device), gap)
        return -penalty

    return Objective(value, [layer], f"Alignment [{layer}, decay {decay_ratio:g}]")


def l1(constant: float = 0.5) -> Objective:
    """Mean absolute distance of the image from ``constant`` grey: [B]. Subtract it as a penalty."""
    return Objective(lambda ctx: (ctx.image - constant).abs().mean(dim=(1, 2, 3)), (), f"L1 [image - {constant:g}]")


def l2(constant: float = 0.5) -> Objective:
    """Root mean square distance of the image from ``constant`` grey: [B]. Subtract it as a penalty."""
    def value(ctx: Context) -> Tensor:
        return (ctx.image - constant).pow(2).mean(dim=(1, 2, 3)).add(1e-12).sqrt()

    return Objective(value, (), f"L2 [image - {constant:g}]")


def total_variation() -> Objective:
    """Mean absolute difference of neighbouring pixels: [B]. Subtract it as a penalty (smoother images)."""
    def value(ctx: Context) -> Tensor:
        image = ctx.image
        rows = (image[:, :, 1:, :] - image[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
        cols = (image[:, :, :, 1:] - image[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
        return rows + cols

    return Objective(value, (), "TV [image]")


def as_objective(spec: "Objective | str") -> Objective:
    """An objective, or the shorthand ``"layer:unit"`` (a channel): ``"neurons:7"``,
    ``"visual.layer4.1.act3:input:473"``."""
    if isinstance(spec, Objective):
        return spec
    layer, _, unit = str(spec).rpartition(":")
    if not layer or not unit.strip().isdigit():
        raise NeuronscopeError(f"objective {spec!r}: write 'layer:unit', e.g. 'neurons:7'")
    return channel(layer, int(unit))
