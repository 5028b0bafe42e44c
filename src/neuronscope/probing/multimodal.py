"""Measuring multimodality on a model: a layer's responses to labelled images and to their concepts' names.

The criterion is :mod:`neuronscope.analysis.multimodality`'s. Here the model
runs: images of a source whose categories name the concepts (an ``index.json``
category, else the folder an image sits in) are streamed through the layer, and
each concept's name is rastered as words (fonts, sizes, places) and run the
same way. A unit's response to an image is its spatial mean (the
feature-visualization objective); each rendered word is one sample.

For the bundled mini CLIP, :func:`bundled_concept_responses` gives exactly the
card's responses (held-out drawings averaged over their renders, held-out-font
words), so the card's multimodal units are found again.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..activations import Recorder, layer_geometry
from ..analysis.multimodality import ConceptResponses, Multimodality, multimodality
from ..errors import NeuronscopeError
from ..mining.loader import iter_batches
from ..mining.sources import NO_CATEGORY, Entry, image_folder, open_source
from ..models.loaded import LoadedModel, require_loaded, runs_in_eval
from .raster import RasterSettings, iter_word_batches

#: A concept needs this many images for its AUROC to mean anything (fewer are left out and counted).
MIN_IMAGES = 2


@dataclass(frozen=True)
class LabelledImages:
    """The images of one or more sources with the concept each one shows.

    Attributes:
        entries: the images, in listing order (sources in the order given).
        labels: [N] int64, index in ``concepts`` of each entry.
        concepts: the concept names: categories as the sources give them.
        sources: the sources' display names.
        left_out: ``{reason: count}`` of images not used (no category, not one of the concepts asked for,
            a concept with fewer than ``MIN_IMAGES`` images).
    """

    entries: tuple[Entry, ...]
    labels: np.ndarray
    concepts: tuple[str, ...]
    sources: tuple[str, ...]
    left_out: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"LabelledImages({len(self.entries)} images of {len(self.concepts)} concepts from {', '.join(self.sources)})"


def entry_category(name: str, categories: Mapping[str, str]) -> str | None:
    """An entry's concept: its ``index.json`` category, else the name of the folder it sits in (``animals/cat``
    -> ``cat``: the deepest folder names the concept); None at a source's top or for an index's ``(none)``."""
    category = categories.get(name)
    if category is None:
        folder = image_folder(name)
        category = posixpath.basename(folder) if folder else None
    return None if category in (None, "", NO_CATEGORY) else category


def labelled_images(inputs: Sequence[str], concepts: Sequence[str] | None = None, *,
                    names: Mapping[str, str] | None = None, min_images: int = MIN_IMAGES) -> LabelledImages:
    """List ``inputs`` (folders, ``.tar`` shards, ``.txt`` lists) with the concept of each image.

    ``names``: ``{category: concept name}`` where the categories are not words (ImageNet's ``n01440764``
    folders -> ``tench``): the name is what gets rastered; categories it does not hold keep their own.
    ``concepts``: the concepts to keep, in this order (as named); None keeps every concept with at least
    ``min_images`` images, sorted.

    Raises:
        NeuronscopeError: fewer than two concepts have images, or a concept asked for has none.
    """
    listed = [open_source(source) for source in inputs]
    names = names or {}
    named = [(entry, names.get(category, category) if (category := entry_category(entry.name, source.categories))
              else None) for source in listed for entry in source.entries]
    left_out: Counter[str] = Counter()
    left_out["no category"] = sum(category is None for _, category in named)
    counts = Counter(category for _, category in named if category is not None)
    if concepts is None:
        kept = sorted(c for c, n in counts.items() if n >= min_images)
        left_out[f"fewer than {min_images} images in their concept"] = sum(
            n for c, n in counts.items() if n < min_images)
    else:
        kept = list(dict.fromkeys(concepts))
        missing = [c for c in kept if counts[c] == 0]
        if missing:
            found = ", ".join(sorted(counts)[:8]) + (", ..." if len(counts) > 8 else "")
            raise NeuronscopeError(f"no images of {', '.join(missing)} in {', '.join(map(str, inputs))} (its "
                                   f"categories: {found or 'none'}): name concepts as the folders or index.json do")
        left_out["not one of the concepts"] = sum(n for c, n in counts.items() if c not in set(kept))
    if len(kept) < 2:
        raise NeuronscopeError(f"{', '.join(map(str, inputs))}: {len(kept)} concept(s) with at least {min_images} "
                               "images; multimodality compares concepts: give images in a folder per concept "
                               "(or an index.json with a category per image)")
    position = {c: i for i, c in enumerate(kept)}
    chosen = [(entry, position[category]) for entry, category in named if category in position]
    return LabelledImages(tuple(entry for entry, _ in chosen), np.array([i for _, i in chosen], dtype=np.int64),
                          tuple(kept), tuple(source.name for source in listed),
                          {reason: n for reason, n in left_out.items() if n})


@dataclass
class ImageResponses:
    """The responses collected so far: the state a long measurement checkpoints and resumes from.

    Attributes:
        done: entries read (decoded or skipped), from the first.
        values: [n, U] float32 responses of the images decoded.
        labels: [n] int64 their concepts.
        skipped: ``{reason: count}`` of unreadable files.
    """

    done: int
    values: torch.Tensor
    labels: torch.Tensor
    skipped: dict[str, int] = field(default_factory=dict)


#: Called after every batch with the responses so far (checkpoints, progress bars).
ResponsesHook = Callable[[ImageResponses], None]


def _unit_means(model: LoadedModel, layer: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A capture function: a layer's activations -> [B, U] spatial means, on the layer's geometry (so a ViT's
    tokens and a ResNet's maps reduce alike; the maps are never kept)."""
    geometry = layer_geometry(model, [layer])[layer]
    return lambda acts: geometry.maps(acts).mean(dim=(2, 3))


@runs_in_eval
@torch.no_grad()
def image_responses(model: LoadedModel, layer: str, images: LabelledImages, *, batch_size: int = 32,
                    workers: int = 0, resume: ImageResponses | None = None,
                    on_batch: ResponsesHook | None = None) -> ImageResponses:
    """Every unit's spatial-mean response of ``layer`` to each image of ``images``, streamed in batches.

    ``resume``: the state of an interrupted measurement (its entries are not read again). Unreadable files
    are skipped and counted, never raised.
    """
    require_loaded(model, "image_responses")
    canonical = model.resolve_layer(layer)
    state = resume or ImageResponses(0, torch.empty(0, 0), torch.empty(0, dtype=torch.long))
    values, labels = [state.values] if len(state.values) else [], [state.labels]
    skipped = Counter(state.skipped)
    done = state.done
    with Recorder(model, canonical, early_stop=True, capture_fn=_unit_means(model, canonical)) as recorder:
        for batch in iter_batches(images.entries[done:], model.preprocess, batch_size=batch_size,
                                  workers=workers, first=done):
            skipped.update(reason for _, _, reason in batch.skipped)
            if batch.pixels is not None:
                pixels = batch.pixels.to(model.device).float().div_(255.0)
                values.append(recorder.run(model.preprocess.normalize(pixels))[canonical].float().cpu())
                labels.append(torch.from_numpy(images.labels[batch.ordinals]))
            done = batch.last_ordinal + 1
            state = ImageResponses(done, torch.cat(values) if values else torch.empty(0, 0), torch.cat(labels),
                                   dict(skipped))
            if on_batch is not None:
                on_batch(state)
    return state


@runs_in_eval
@torch.no_grad()
def word_responses(model: LoadedModel, layer: str, concepts: Sequence[str], *,
                   settings: RasterSettings = RasterSettings(), batch_size: int = 64,
                   workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every unit's response to each concept's name rastered in every font, size and place of ``settings``.

    Returns:
        ``(values [len(concepts) * settings.variants, U], labels [same] concept index)``.
    """
    require_loaded(model, "word_responses")
    canonical = model.resolve_layer(layer)
    height, width = model.preprocess.image_size
    if height != width:
        raise ValueError(f"{model.key} takes {width}x{height} images; rastered words are square")
    chunks = []
    words_per_batch = max(1, batch_size // settings.variants)
    with Recorder(model, canonical, early_stop=True, capture_fn=_unit_means(model, canonical)) as recorder:
        for batch in iter_word_batches(list(concepts), settings, width, words_per_batch=words_per_batch,
                                       workers=workers):
            pixels = batch.flatten(0, 1).to(model.device).float().div_(255.0)  # [words * variants, 3, H, W]
            chunks.append(recorder.run(model.preprocess.normalize(pixels))[canonical].float().cpu())
    labels = torch.arange(len(concepts)).repeat_interleave(settings.variants)
    return torch.cat(chunks), labels


def measure_multimodality(model: LoadedModel, layer: str, images: LabelledImages | None, *,
                          settings: RasterSettings = RasterSettings(), batch_size: int = 32, workers: int = 0,
                          resume: ImageResponses | None = None,
                          on_batch: ResponsesHook | None = None) -> tuple[Multimodality, dict[str, int]]:
    """Score every unit of ``layer`` on ``images`` and their concepts' rastered names (``images=None``: the
    bundled mini CLIP's card measurement, :func:`bundled_concept_responses`).

    Returns the :class:`~neuronscope.analysis.multimodality.Multimodality` and ``{reason: count}`` of the
    unreadable files skipped.

    Raises:
        NeuronscopeError: no image of some concept could be read (its AUROC would mean nothing).
    """
    canonical = model.resolve_layer(layer)
    if images is None:
        return multimodality(bundled_concept_responses(model, canonical), canonical), {}
    seen = image_responses(model, canonical, images, batch_size=batch_size, workers=workers, resume=resume,
                           on_batch=on_batch)
    present = torch.bincount(seen.labels, minlength=len(images.concepts))
    if (present == 0).any():
        lost = [c for c, n in zip(images.concepts, present.tolist()) if n == 0]
        raise NeuronscopeError(f"no readable image of {', '.join(lost)}: give readable images of every concept")
    words, word_labels = word_responses(model, canonical, images.concepts, settings=settings,
                                        batch_size=batch_size, workers=workers)
    responses = ConceptResponses(seen.values, seen.labels, words, word_labels, images.concepts)
    return multimodality(responses, canonical), seen.skipped


def bundled_concept_responses(model: LoadedModel, layer: str) -> ConceptResponses:
    """The mini CLIP card's responses of ``layer``: held-out drawings (each averaged over its renders) and
    held-out-font words of the bundled test split, so :func:`multimodality` finds the card's units again."""
    from ..world.evaluate import split_responses
    from ..world.split import bundled_split

    split = bundled_split()
    side = split.meta["image_size"]
    if tuple(model.preprocess.image_size) != (side, side):
        raise NeuronscopeError(f"the bundled split's images are {side} px but {model.key} takes "
                               f"{model.preprocess.image_size}: give labelled images for this model")
    canonical = model.resolve_layer(layer)
    r = split_responses(model, split, [canonical])[canonical]
    return ConceptResponses(r.drawings, r.drawing_labels, r.words, r.word_labels, tuple(split.concepts))
