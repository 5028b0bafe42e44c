"""``record``: activations of a few layers for a batch of images, in one call."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from PIL import Image
from torch import Tensor, nn

from neuronscope.activations.catalog import check_batched, layer_layouts
from neuronscope.activations.edits import Edit
from neuronscope.activations.layout import CHANNELS_FIRST
from neuronscope.activations.recorder import Images, Recorder
from neuronscope.activations.reduce import NO_CLASS_TOKEN, REDUCTIONS, NoClassTokenError, naming_layer, reduce_units
from neuronscope.errors import NeuronscopeError
from neuronscope.models.loaded import LoadedModel, runs_in_eval


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


@runs_in_eval
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
            (see :mod:`neuronscope.activations.reduce`; ``cls`` raises :class:`NoClassTokenError` for a
            ViT without a class token).
        batch_size: images per forward (None: all at once).
        grad: keep autograd on (the result is then not detached).

    Returns:
        Tensors on the model's device, concatenated over batches, in float32.

    Raises:
        UnbatchedLayerError: a layer without one row per image (Swin's window attention, a learned parameter
            such as an attention pooler's queries), whose dim 0 is not the images.
    """
    if reduce is not None and reduce not in (*REDUCTIONS, "center"):
        # Checked here, not in the hook: a function passed for its name would fail inside the first forward.
        raise ValueError(f"reduce={reduce!r}: give a reduction's name, one of {', '.join(REDUCTIONS)} "
                         f"(e.g. reduce=\"mean\" for spatial_mean)")
    if reduce == "cls" and isinstance(model, LoadedModel) and not model.has_class_token:
        # Before any forward: inside the hook it would fail only once the first batch had run.
        raise NoClassTokenError(f"{model.key}: {NO_CLASS_TOKEN}")
    grid = model.token_grid if isinstance(model, LoadedModel) else None
    # A plain module is read as open_clip lays out its ViTs: one class token, then the patches.
    prefix_tokens = model.prefix_tokens if isinstance(model, LoadedModel) else 1
    # A plain module has no catalogue: its 4-D layers are read as [B, C, H, W].
    layouts = layer_layouts(model) if reduce is not None and isinstance(model, LoadedModel) else {}

    def reducer(name: str) -> Callable[[Tensor], Tensor]:
        def reduce_in_hook(acts: Tensor) -> Tensor:
            # Reduce inside the hook: the full maps are never copied.
            layout = layouts.get(name, CHANNELS_FIRST) if acts.ndim == 4 else CHANNELS_FIRST
            if layout is None:
                raise NeuronscopeError(f"cannot tell whether layer {name} holds its units first or last; "
                                       f"record it with reduce=None and reduce it yourself")
            with naming_layer(name):
                return reduce_units(acts, reduce, grid=grid if acts.ndim == 3 else None,  # type: ignore[arg-type]
                                    layout=layout, prefix_tokens=prefix_tokens)
        return reduce_in_hook

    pieces: dict[str, list[Tensor]] = {}
    recorder = Recorder(model, layers, edits=edits, early_stop=early_stop, detach=not grad)
    if reduce is not None:
        recorder.capture_fn = {name: reducer(name) for name in recorder.layers}
    with recorder:
        for batch in _batches(images, batch_size):
            for name, acts in recorder.run(batch, grad=grad).items():
                check_batched(name, acts, len(batch))
                pieces.setdefault(name, []).append(acts)
    return {name: torch.cat(parts).float() for name, parts in pieces.items()}
