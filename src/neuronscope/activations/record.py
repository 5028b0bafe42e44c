"""``record``: activations of a few layers for a batch of images, in one call."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from neuronscope.activations.edits import Edit
from neuronscope.activations.recorder import Images, Recorder
from neuronscope.activations.reduce import REDUCTIONS, reduce_units
from neuronscope.models.loaded import LoadedModel


def _batches(images: Images, batch_size: int | None) -> list[Tensor | list[Image.Image]]:
    """``images`` cut into forwards of ``batch_size``; one image ([3, H, W] or PIL) is a batch of one."""
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, Tensor) and images.ndim == 3:
        images = images.unsqueeze(0)  # [3, H, W] -> [1, 3, H, W]: split along images, never channels
    if batch_size is None:
        return [images if isinstance(images, Tensor) else list(images)]
    if isinstance(images, Tensor):
        return list(images.split(batch_size))
    listed = list(images)
    return [listed[i:i + batch_size] for i in range(0, len(listed), batch_size)]


def record(
    model: LoadedModel | nn.Module,
    images: Images,
    layers: str | Sequence[str],
    *,
    early_stop: bool = True,
    edits: Iterable[Edit] = (),
    reduce: str | None = None,
    batch_size: int | None = None,
    grad: bool = False,
) -> dict[str, Tensor]:
    """Record ``layers`` for ``images``; returns ``{canonical layer: float32 tensor}``.

    Args:
        model: a :class:`LoadedModel` (or a plain module fed tensors).
        images: normalised tensor [B, 3, H, W] (or one image [3, H, W]) or PIL
            images (any size; the model's preprocessing contract resizes them).
        layers: names, aliases (``neurons``) or wildcards (``visual.layer3.*``).
        early_stop: stop each forward once every layer is captured (same
            values as a full forward, less compute).
        edits: unit edits active during the forwards.
        reduce: None for full activations ([B, C, H, W] maps, [B, T, D]
            tokens), or ``mean|max|centre|cls`` for one value per unit [B, C]
            (see :mod:`neuronscope.activations.reduce`).
        batch_size: images per forward (None: all at once).
        grad: keep autograd on (the result is then not detached).

    Returns:
        Tensors on the model's device, concatenated over batches, in float32.
    """
    if reduce is not None and reduce not in (*REDUCTIONS, "center"):
        # Checked here, not in the hook: a function passed for its name would fail inside the first forward.
        raise ValueError(f"reduce={reduce!r}: give a reduction's name, one of {', '.join(REDUCTIONS)} "
                         f"(e.g. reduce=\"mean\" for spatial_mean)")
    grid = model.token_grid if isinstance(model, LoadedModel) else None

    def reduce_in_hook(acts: Tensor) -> Tensor:
        # Reduce inside the hook: the full maps are never copied.
        return reduce_units(acts, reduce, grid=grid if acts.ndim == 3 else None)  # type: ignore[arg-type]

    pieces: dict[str, list[Tensor]] = {}
    capture_fn = reduce_in_hook if reduce is not None else None
    with Recorder(model, layers, edits=edits, early_stop=early_stop, detach=not grad, capture_fn=capture_fn) as recorder:
        for batch in _batches(images, batch_size):
            for name, acts in recorder.run(batch, grad=grad).items():
                pieces.setdefault(name, []).append(acts)
    return {name: torch.cat(parts).float() for name, parts in pieces.items()}
