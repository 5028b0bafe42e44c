"""Rastered-word probing: the words that most excite each unit when written as images.

    probe = probe_words(model, "neurons", load_vocabulary("english-10k"))
    probe.top_words(550, k=5)      # [("spider", 3.1), ...]

Every word is rastered as a few images (:mod:`neuronscope.probing.raster`:
fonts x sizes x positions), rendered in worker processes; the model runs on
batches of them in its own precision (``load_model(..., precision=)``, the
scanner's rules: :func:`neuronscope.runtime.resolve_precision`). A unit's
response to one image is its spatial mean over the layer's grid (the
paper's neuron objective). Per word, as the paper did: the max over
positions, then the mean over sizes (and fonts).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..activations.recorder import Recorder
from ..errors import NeuronscopeError
from ..models.loaded import LoadedModel, require_loaded, runs_in_eval
from ..units import parse_units
from .ranking import top_k
from .raster import RasterSettings, iter_word_batches, resolve_fonts, undrawable_words
from .zeroshot import text_list

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 20


@dataclass
class WordProbe:
    """Scores of every word of a vocabulary for every unit of one layer.

    Attributes:
        model: the model's key (``mini-clip@bundled``).
        layer: the canonical layer name.
        words: the vocabulary, in order; row i of ``scores`` is word i.
        scores: float32 [words, units]: per word and unit, the mean over sizes
            and fonts of the max over positions of the unit's spatial-mean response.
        settings: how the words were rastered.
        grid: (rows, cols) of the layer's map.
        precision: the precision the forwards ran in.
        seconds: wall time of the probe.
        undrawable: the words given but left out, in their order: a font of ``settings`` has no glyph for
            one of their characters (:func:`drawable_words`).
    """

    model: str
    layer: str
    words: list[str]
    scores: torch.Tensor
    settings: RasterSettings
    grid: tuple[int, int]
    precision: str
    seconds: float = 0.0
    undrawable: list[str] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # the default one prints every word and the scores
        return f"WordProbe({self.model} {self.layer}, {len(self.words)} words x {self.units} units, {self.precision})"

    @property
    def units(self) -> int:
        return self.scores.shape[1]

    def _unit(self, unit: int) -> int:
        """``unit`` checked against the layer: a negative one would wrap, a large one fail inside torch."""
        (checked,) = parse_units(unit, self.units)  # UnitsError naming the layer's range
        return checked

    def index(self, word: str) -> int:
        """Row of ``word``; a clear error when it is not in the vocabulary."""
        if not self._index:
            self._index = {w: i for i, w in enumerate(self.words)}
        if word not in self._index:
            raise KeyError(f"{word!r} is not in the probed vocabulary ({len(self.words)} words); "
                           "add it to the vocabulary and probe again")
        return self._index[word]

    def top_words(self, unit: int, k: int = DEFAULT_TOP_K) -> list[tuple[str, float]]:
        """The unit's ``k`` best words with their scores, best first (ties by vocabulary order)."""
        values, rows = top_k(self.scores[:, self._unit(unit)], k)
        return [(self.words[int(i)], float(v)) for v, i in zip(values, rows)]

    def top_words_all(self, k: int = DEFAULT_TOP_K) -> dict[int, list[tuple[str, float]]]:
        """``{unit: top_words(unit, k)}`` for every unit, equal to it on ties too (:func:`.ranking.top_k`)."""
        values, rows = top_k(self.scores, k)  # [k, units]
        return {unit: [(self.words[int(i)], float(v)) for i, v in zip(rows[:, unit], values[:, unit])]
                for unit in range(self.units)}

    def rank(self, word: str, unit: int) -> int:
        """Rank of ``word`` among the vocabulary for ``unit``: 1 + the words scoring strictly higher (1 = its
        best word; ties count in its favour, so words tied for best all rank 1)."""
        column = self.scores[:, self._unit(unit)]
        return int((column > column[self.index(word)]).sum()) + 1

    def to_npz(self) -> bytes:
        """The score matrix (float16, [words, units]) and the words, as .npz bytes (the atlas stores these)."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, scores=self.scores.numpy().astype(np.float16), words=np.array(self.words))
        return buffer.getvalue()


#: Called after every batch with (words done, words total); a scan's hook takes a ScanProgress instead
#: (:data:`neuronscope.mining.scanner.ScanProgressHook`).
ProgressHook = Callable[[int, int], None]
#: Called after every batch with (words done, that batch's scores float32 [words in batch, units]).
ScoresHook = Callable[[int, torch.Tensor], None]


class DrawableWords(NamedTuple):
    """A vocabulary split by :func:`drawable_words`: the words every raster font draws, in order, and the rest."""

    words: list[str]
    undrawable: list[str]


def drawable_words(words: Sequence[str], settings: RasterSettings) -> DrawableWords:
    """``words`` split into those every font of ``settings`` can draw and those left out, named in one warning.

    A character a font has no glyph for (its cmap: CJK or emoji in DejaVu) is drawn as the font's .notdef box,
    so such words would be probed as identical boxes and scored as if words. :func:`probe_words` splits here,
    so a Python caller and the ``words`` command leave out the same words.

    Raises:
        NeuronscopeError: none of ``words`` can be drawn.
    """
    missing = undrawable_words(words, resolve_fonts(settings))
    if not missing:
        return DrawableWords(list(words), [])
    fonts = ", ".join(sorted({Path(font).name for lacking in missing.values() for font in lacking}))
    named = ", ".join(list(missing)[:5]) + (", ..." if len(missing) > 5 else "")
    if len(missing) == len(words):
        raise NeuronscopeError(f"none of the {len(words)} words can be drawn in {fonts} ({named}): give fonts "
                               f"that have their characters (--fonts, RasterSettings(fonts=...))")
    log.warning("%d of %d words have characters %s cannot draw, left out (they would be probed as identical "
                ".notdef boxes): %s; give fonts that draw them (--fonts, RasterSettings(fonts=...))",
                len(missing), len(words), fonts, named)
    return DrawableWords([word for word in words if word not in missing], list(missing))


def _reduce_word_images(values: torch.Tensor, settings: RasterSettings) -> torch.Tensor:
    """[words * variants, units] image responses -> [words, units]: max over positions, mean over sizes and fonts."""
    fonts, sizes, positions = settings.grid
    per_variant = values.view(-1, fonts, sizes, positions, values.shape[-1])
    return per_variant.amax(dim=3).mean(dim=(1, 2))


@runs_in_eval
@torch.no_grad()
def probe_words(model: LoadedModel, layer: str, words: str | Sequence[str] | DrawableWords, *,
                settings: RasterSettings = RasterSettings(), batch_size: int = 64, workers: int = 0,
                on_batch: ProgressHook | None = None, scored: torch.Tensor | None = None,
                on_scores: ScoresHook | None = None) -> WordProbe:
    """Raster every word and score it for every unit of ``layer``.

    Args:
        model: a loaded model; its precision decides how the forwards run.
        layer: a layer name or alias (``neurons``).
        words: the vocabulary (see :func:`neuronscope.probing.vocab.load_vocabulary`); a single string is one word.
            Words a font cannot draw are left out with one warning (:func:`drawable_words`; a vocabulary
            already split by it is taken as split).
        settings: fonts, sizes (fractions of the input width) and positions.
        batch_size: images per forward (rounded down to whole words, at least one word).
        workers: rendering processes (0: render in this process).
        on_batch: called with (words done, words total) after every batch.
        scored: float32 [n, units], the scores of the first n words from an interrupted probe (a checkpoint):
            only the words after them are rastered. Batches start at word n, so with the same batch size
            (n a whole number of batches) the result equals an uninterrupted probe's.
        on_scores: called with (words done, the batch's scores) after every batch, before ``on_batch``
            (:mod:`neuronscope.probing.word_store` checkpoints with it).

    Returns:
        A :class:`WordProbe` with scores float32 [words drawn, units], the words left out in ``undrawable``;
        ``seconds`` counts this call only.
    """
    require_loaded(model, "probe_words")
    drawn = words if isinstance(words, DrawableWords) else drawable_words(text_list(words), settings)
    words = drawn.words
    if not words:
        raise ValueError("probe_words needs at least one word")
    started = time.perf_counter()
    canonical = model.resolve_layer(layer)
    height, width = model.preprocess.image_size
    if height != width:
        raise ValueError(f"{model.key} takes {width}x{height} images; rastered words are square")
    geometry = model.geometry(canonical)  # where the units lie, the grid, the prefix tokens
    chunks = _scored_rows(scored, len(words), geometry.units)
    done = sum(len(chunk) for chunk in chunks)
    for n_words, values in iter_word_responses(model, canonical, words[done:], settings, batch_size=batch_size,
                                               workers=workers):
        chunks.append(_reduce_word_images(values, settings).cpu())
        done += n_words
        if on_scores is not None:
            on_scores(done, chunks[-1])
        if on_batch is not None:
            on_batch(done, len(words))
    return WordProbe(model=model.key, layer=canonical, words=words, scores=torch.cat(chunks),
                     settings=settings, grid=geometry.grid, precision=model.precision.name,
                     seconds=time.perf_counter() - started, undrawable=drawn.undrawable)


def iter_word_responses(model: LoadedModel, layer: str, words: Sequence[str], settings: RasterSettings, *,
                        batch_size: int, workers: int) -> Iterator[tuple[int, torch.Tensor]]:
    """Each batch of ``words`` rastered (every variant of ``settings``) and run to the canonical ``layer``:
    ``(words in the batch, float32 [words * variants, U] spatial means on the model's device)``, in vocabulary
    order. A batch holds ``batch_size`` images rounded down to whole words (at least one word); ``workers``
    processes render them (0: this one). The model's input must be square (the caller checks, in its words)."""
    width = model.preprocess.image_size[1]
    words_per_batch = max(1, batch_size // settings.variants)
    with Recorder(model, layer, early_stop=True, capture_fn=model.geometry(layer).spatial_mean) as recorder:
        for batch in iter_word_batches(words, settings, width, words_per_batch=words_per_batch, workers=workers):
            pixels = batch.flatten(0, 1).to(model.device).float().div_(255.0)  # [words * variants, 3, H, W]
            yield batch.shape[0], recorder.run(model.preprocess.normalize(pixels))[layer].float()


def _scored_rows(scored: torch.Tensor | None, words: int, units: int) -> list[torch.Tensor]:
    """The chunks a probe starts from: ``scored`` checked against the vocabulary and the layer, or none."""
    if scored is None:
        return []
    if scored.ndim != 2 or scored.shape[0] > words or scored.shape[1] != units:
        raise ValueError(f"scored words are {tuple(scored.shape)}, not [at most {words} words, {units} units] "
                         "of this vocabulary and layer; probe again without them")
    return [scored.float()]
