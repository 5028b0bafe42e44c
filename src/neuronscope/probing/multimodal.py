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

from ..activations import Recorder
from ..analysis.multimodality import RANK_BYTES, RANK_MEMORY, ConceptResponses, Multimodality, multimodality
from ..errors import NeuronscopeError
from ..mining.loader import iter_batches
from ..mining.scanner import ContentKeys, first_copies, repeat_mask
from ..mining.sources import NO_CATEGORY, Entry, image_folder, open_source
from ..models.loaded import LoadedModel, require_loaded, runs_in_eval
from ..runtime import available_memory
from .raster import RasterSettings, resolve_fonts, undrawable_words
from .words import iter_word_responses

#: A concept needs this many images (fewer are left out and counted). Few images a concept let units pass by
#: chance (the concept is chosen and scored on them): the label-shuffle control says how many.
MIN_IMAGES = 4


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
    """An entry's category, as the conditional plots count it: its ``index.json`` category, else the folder it
    sits in within its source (``animals/cat``); None at a source's top or for an index's ``(none)``."""
    category = categories.get(name) or image_folder(name)
    return None if category in (None, "", NO_CATEGORY) else category


def concept_name(category: str, names: Mapping[str, str]) -> str:
    """The word a category is rastered and reported as: ``names``' (by the category or its last folder), else
    the category's last folder (``animals/cat`` -> ``cat``)."""
    leaf = posixpath.basename(category)
    return names.get(category) or names.get(leaf) or leaf


def labelled_images(inputs: Sequence[str], concepts: Sequence[str] | None = None, *,
                    names: Mapping[str, str] | None = None, min_images: int = MIN_IMAGES,
                    per_concept: int | None = None, seed: int = 0) -> LabelledImages:
    """List ``inputs`` (folders, ``.tar`` shards, ``.txt`` lists) with the concept of each image.

    ``names``: ``{category: concept name}`` where the categories are not words (ImageNet's ``n01440764``
    folders -> ``tench``): the name is what gets rastered; other categories are named by their last folder.
    ``concepts``: the concepts to keep, in this order (as named); None keeps every concept with at least
    ``min_images`` images, sorted. ``per_concept``: keep a sample of at most this many images of each concept,
    drawn with ``seed`` (listing order kept): the measurement holds 4 bytes an image and unit in memory, so a
    large collection is measured on a sample of it.

    Raises:
        NeuronscopeError: two categories would share a name (``star/indoor`` and ``clock/indoor``, or two
            categories ``names`` gives one name: their images would be pooled), fewer than two concepts have
            images, or a concept asked for has none.
    """
    listed = [open_source(source) for source in inputs]
    names = names or {}
    categories = [(entry, entry_category(entry.name, source.categories))
                  for source in listed for entry in source.entries]
    _refuse_shared_names({category for _, category in categories if category is not None}, names)
    named = [(entry, None if category is None else concept_name(category, names)) for entry, category in categories]
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
                                   f"concepts: {found or 'none'}): name concepts as their folders (or index.json "
                                   "categories) are named, or map categories to names with --names")
        left_out["not one of the concepts asked for"] = sum(n for c, n in counts.items() if c not in set(kept))
    if len(kept) < 2:
        raise NeuronscopeError(f"{', '.join(map(str, inputs))}: {len(kept)} concept(s) with at least {min_images} "
                               "images; multimodality compares concepts: give images in a folder per concept "
                               "(or an index.json with a category per image)")
    position = {c: i for i, c in enumerate(kept)}
    chosen = [(entry, position[category]) for entry, category in named if category in position]
    if per_concept is not None:
        sampled = _sample_per_concept(np.array([i for _, i in chosen], dtype=np.int64), per_concept, seed)
        left_out[f"beyond {per_concept} images of their concept"] = len(chosen) - len(sampled)
        chosen = [chosen[i] for i in sampled]
    return LabelledImages(tuple(entry for entry, _ in chosen), np.array([i for _, i in chosen], dtype=np.int64),
                          tuple(kept), tuple(source.name for source in listed),
                          {reason: n for reason, n in left_out.items() if n})


def folder_like_names(concepts: Sequence[str]) -> list[str]:
    """The concept names that read as folder names rather than words (``breads_and_carbs``, ``flat-theme``):
    rastered as written, they test a unit's reading of strings no one writes."""
    return [concept for concept in concepts if "_" in concept or "-" in concept]


def _sample_per_concept(labels: np.ndarray, per_concept: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of at most ``per_concept`` of each label's entries."""
    if per_concept < MIN_IMAGES:
        raise NeuronscopeError(f"a sample of {per_concept} images a concept is too few: keep at least {MIN_IMAGES}")
    rng = np.random.default_rng(seed)
    kept = [rng.choice(where, per_concept, replace=False) if len(where) > per_concept else where
            for where in (np.flatnonzero(labels == label) for label in np.unique(labels))]
    return np.sort(np.concatenate(kept))


def _refuse_shared_names(categories: set[str], names: Mapping[str, str]) -> None:
    """Raise when two categories get one concept name: their images would be pooled as one concept."""
    by_name: dict[str, list[str]] = {}
    for category in sorted(categories):
        by_name.setdefault(concept_name(category, names), []).append(category)
    shared = {name: found for name, found in by_name.items() if len(found) > 1}
    if shared:  # every one, so that one --names file mends them all
        pooled = "; ".join(f"{name!r}: {', '.join(found)}" for name, found in shared.items())
        raise NeuronscopeError(f"{len(shared)} concept name(s) would pool different categories ({pooled}): give "
                               "each category its own name (--names FILE, category<TAB>name) or an index.json "
                               "category per image")


@dataclass
class ImageResponses:
    """The responses collected so far: the state a long measurement checkpoints and resumes from.

    Attributes:
        done: entries read (decoded or skipped), from the first.
        values: [n, U] float32 responses of the images decoded (a view of the measurement's buffer while it
            runs: copy it to keep it).
        labels: [n] int64 their concepts.
        skipped: ``{reason: count}`` of files not measured: unreadable ones, and ``duplicate``s (a file whose
            content an earlier entry had: measured once, with the earlier entry's concept).
        keys: [n] uint64 the content keys of the images that could repeat (their size is another entry's),
            0 for the others: what tells a duplicate after a resume.
    """

    done: int
    values: torch.Tensor
    labels: torch.Tensor
    skipped: dict[str, int] = field(default_factory=dict)
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))


#: Called after every batch with the responses so far (checkpoints, progress bars).
ResponsesHook = Callable[[ImageResponses], None]


@runs_in_eval
@torch.no_grad()
def image_responses(model: LoadedModel, layer: str, images: LabelledImages, *, batch_size: int = 32,
                    workers: int = 0, resume: ImageResponses | None = None,
                    on_batch: ResponsesHook | None = None) -> ImageResponses:
    """Every unit's spatial-mean response of ``layer`` to each image of ``images``, streamed in batches into one
    preallocated [len(images), U] float32 buffer (the memory this takes: 4 bytes an image and unit).

    ``resume``: the state of an interrupted measurement (its entries are not read again). Unreadable files
    are skipped and counted, never raised.
    """
    require_loaded(model, "image_responses")
    canonical = model.resolve_layer(layer)
    geometry = model.geometry(canonical)
    _require_memory(images, geometry.units)
    values = torch.empty(len(images), geometry.units)
    labels = torch.empty(len(images), dtype=torch.long)
    keys = np.zeros(len(images), np.uint64)
    may_repeat = repeat_mask(images.entries)
    filled, done, skipped, seen = 0, 0, Counter(), ContentKeys()
    if resume is not None:
        filled, done, skipped = len(resume.values), resume.done, Counter(resume.skipped)
        if filled:  # a checkpoint written before any image was decoded holds no rows (nor their width)
            values[:filled], labels[:filled], keys[:filled] = resume.values, resume.labels, resume.keys
        seen = ContentKeys(key for key in resume.keys.tolist() if key)
    with Recorder(model, canonical, early_stop=True, capture_fn=geometry.spatial_mean) as recorder:
        for batch in iter_batches(images.entries[done:], model.preprocess, batch_size=batch_size,
                                  workers=workers, first=done):
            skipped.update(reason for _, _, reason in batch.skipped)
            # a file filed under two concepts (a copy, a symlink) would be a positive and a negative of one AUROC
            kept, kept_keys = first_copies(batch.ordinals, batch.sha256s, may_repeat, seen)
            skipped["duplicate"] += len(batch.ordinals) - len(kept)
            if kept:
                pixels = batch.pixels if len(kept) == len(batch.ordinals) else batch.pixels[kept]
                pixels = pixels.to(model.device).float().div_(255.0)
                rows = recorder.run(model.preprocess.normalize(pixels))[canonical].float().cpu()
                ordinals = [batch.ordinals[position] for position in kept]
                values[filled:filled + len(rows)] = rows
                labels[filled:filled + len(rows)] = torch.from_numpy(images.labels[ordinals])
                keys[filled:filled + len(rows)] = kept_keys
                filled += len(rows)
            done = batch.last_ordinal + 1
            if on_batch is not None:
                on_batch(ImageResponses(done, values[:filled], labels[:filled], +skipped, keys[:filled]))
    return ImageResponses(done, values[:filled], labels[:filled], +skipped, keys[:filled])


def _measurement_memory(images: int, units: int) -> int:
    """Bytes a measurement of ``images`` x ``units`` holds at once: the responses (4 bytes each), and the ranks
    of the AUROCs' largest block of units (at most ``RANK_MEMORY``)."""
    return 4 * images * units + min(RANK_MEMORY, images * units * RANK_BYTES)


def _require_memory(images: LabelledImages, units: int) -> None:
    """Refuse, before any image is read, a measurement whose responses and ranks would not fit the memory this
    machine has free: the system would kill it part way."""
    free = available_memory()
    needed = _measurement_memory(len(images), units)
    if free is None or needed <= free:
        return
    most = free // (units * (4 + RANK_BYTES))  # images that fit while their ranks are one block
    if _measurement_memory(most, units) > free or most * units * RANK_BYTES >= RANK_MEMORY:
        most = (free - RANK_MEMORY) // (4 * units)  # more images, ranked in blocks of RANK_MEMORY
    fits = max(0, most) // len(images.concepts)
    advice = (f"measure a sample of at most {fits} images a concept (--per-concept {fits}, or "
              f"labelled_images(per_concept={fits}))" if fits >= MIN_IMAGES else "give fewer concepts")
    raise NeuronscopeError(f"{len(images):,} images x {units:,} units need {needed / 2**30:.2f} GiB for their "
                           f"responses and ranks, more than the {free / 2**30:.2f} GiB free here: {advice}")


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
    check_words(model, concepts, settings)
    canonical = model.resolve_layer(layer)
    chunks = [values.cpu() for _, values in iter_word_responses(model, canonical, list(concepts), settings,
                                                                batch_size=batch_size, workers=workers)]
    labels = torch.arange(len(concepts)).repeat_interleave(settings.variants)
    return torch.cat(chunks), labels


@dataclass(frozen=True)
class MultimodalMeasurement:
    """What :func:`measure_multimodality` found: the scores, and what it could not use.

    Attributes:
        scores: the :class:`~neuronscope.analysis.multimodality.Multimodality` (with its label-shuffle control).
        skipped: ``{reason: count}`` of files not measured: unreadable ones and ``duplicate``s.
        dropped: concepts none of whose images could be read (measured without them).
    """

    scores: Multimodality
    skipped: dict[str, int] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()


def check_words(model: LoadedModel, concepts: Sequence[str], settings: RasterSettings) -> None:
    """Refuse, before any image is read, what would fail or mislead only after the image pass: a model whose
    input is not square (rastered words are), or concept names a font cannot draw (they would be rastered as
    identical .notdef boxes)."""
    height, width = model.preprocess.image_size
    if height != width:
        raise NeuronscopeError(f"{model.key} takes {width}x{height} images; rastered words are square, so "
                               "multimodality needs a model with a square input")
    missing = undrawable_words(list(concepts), resolve_fonts(settings))
    if missing:
        named = ", ".join(list(missing)[:5])
        raise NeuronscopeError(f"{len(missing)} concept name(s) cannot be drawn in the raster fonts ({named}): "
                               "give them drawable names (--names FILE) or fonts that have their characters (--fonts)")


def measure_multimodality(model: LoadedModel, layer: str, images: LabelledImages | None, *,
                          settings: RasterSettings = RasterSettings(), batch_size: int = 32, workers: int = 0,
                          resume: ImageResponses | None = None,
                          on_batch: ResponsesHook | None = None) -> MultimodalMeasurement:
    """Score every unit of ``layer`` on ``images`` and their concepts' rastered names (``images=None``: the
    bundled mini CLIP's card measurement, :func:`bundled_concept_responses`), with the label-shuffle control.

    A concept none of whose images can be read is left out (``dropped``).

    Raises:
        NeuronscopeError: a non-square model, an undrawable concept name (both before any image is read), or
            fewer than two concepts with readable images.
    """
    canonical = model.resolve_layer(layer)
    if images is None:
        return MultimodalMeasurement(multimodality(bundled_concept_responses(model, canonical), canonical))
    check_words(model, images.concepts, settings)
    seen = image_responses(model, canonical, images, batch_size=batch_size, workers=workers, resume=resume,
                           on_batch=on_batch)
    present = torch.bincount(seen.labels, minlength=len(images.concepts)) > 0
    kept = [c for c, here in zip(images.concepts, present.tolist()) if here]
    if len(kept) < 2:
        raise NeuronscopeError(f"readable images of {len(kept)} concept(s) only: give readable images of two or more")
    renumber = torch.cumsum(present.long(), 0) - 1  # old concept index -> index among the kept ones
    words, word_labels = word_responses(model, canonical, kept, settings=settings, batch_size=batch_size,
                                        workers=workers)
    responses = ConceptResponses(seen.values, renumber[seen.labels], words, word_labels, tuple(kept))
    return MultimodalMeasurement(multimodality(responses, canonical), seen.skipped,
                                 tuple(c for c, here in zip(images.concepts, present.tolist()) if not here))


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
    return split_responses(model, split, [canonical])[canonical]
