"""Emotion codes: emotion words × the paper's prompts → unit attributions → sparse codes and an NMF atlas.

Following the paper: every emotion word of the feeling wheel is put into
three prompts (:data:`EMOTION_PROMPTS`); each prompt's text attribution
over the layer's units (:mod:`neuronscope.probing.attribution`) is one
sample of its emotion; an L1 logistic regression per emotion
(:func:`~neuronscope.analysis.sparse_codes.fit_sparse_codes`) writes the
emotion as a few units; NMF of the emotions' mean attribution profiles
gives the atlas: 2 factors place the emotions on a map, 7 group them (the
wheel has 7 core feelings).

Units that read spelling rather than meaning (their top vocabulary texts
share a prefix or suffix, like the paper's "-ing" units) can be dropped
first: ``drop_units`` takes them, :func:`text_lexical_units` finds them.

The same machinery codes any words × templates (:func:`word_codes`); the
tests use it on the mini CLIP's concepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from neuronscope.analysis.sparse_codes import NMFFactors, SparseCodes, fit_sparse_codes, nmf_factors
from neuronscope.errors import NeuronscopeError
from neuronscope.models.loaded import LoadedModel, require_loaded
from neuronscope.probing.attribution import AttributionBasis
from neuronscope.probing.zeroshot import encode_texts

#: The paper's three emotion prompts.
EMOTION_PROMPTS = (
    "i am feeling {}",
    "Me feeling {} on my face",
    "a photo of me with a {} expression on my face",
)

#: NMF factors of the atlas: 2 place the emotions on a map, 7 group them (the wheel's core feelings).
ATLAS_FACTORS = (2, 7)


@dataclass
class WordCodes:
    """Sparse codes of words from their prompts' attributions.

    Attributes:
        words: the coded words (the classes).
        templates: prompts with ``{}`` for the word.
        codes: one sparse code per word.
        profiles: [words, kept units] the mean attribution over a word's prompts.
        kept_units: the unit index of each profile column (dropped units left out).
        dropped_units: ``{unit: reason}`` for units left out.
    """

    words: list[str]
    templates: list[str]
    codes: SparseCodes
    profiles: np.ndarray
    kept_units: list[int]
    dropped_units: dict[int, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # the dataclass's printed every word, unit and profile value
        return (f"WordCodes({len(self.words)} words x {len(self.templates)} templates, {len(self.kept_units)} units "
                f"kept, {len(self.dropped_units)} dropped)")


def word_codes(model: LoadedModel, basis: AttributionBasis, words: Sequence[str], templates: Sequence[str], *,
               max_units: int = 5, drop_units: dict[int, str] | Sequence[int] = (), jobs: int | None = None,
               on_step: Callable[[int, int], None] | None = None) -> WordCodes:
    """Code each word as a few units: its prompts' attributions → one-vs-rest L1 logistic regression.

    Args:
        basis: the layer's attribution basis.
        words: the words (classes), e.g. the feeling wheel's.
        templates: prompts with ``{}`` for the word; each is one sample of the word.
        max_units: the most units a code may use.
        drop_units: units to leave out (``{unit: reason}`` or a list).
        jobs: processes fitting the words side by side (:func:`~neuronscope.analysis.sparse_codes.fit_sparse_codes`;
            default: torch's thread count for big problems, else 1). The codes do not depend on it.
        on_step: called ``(words coded, words)`` (for a progress bar: 100+ words over thousands of units
            take minutes).
    """
    if len(templates) < 1 or any("{}" not in template for template in templates):
        raise ValueError(f"templates need a '{{}}' for the word: {list(templates)}")
    dropped = dict(drop_units) if isinstance(drop_units, dict) else {int(u): "dropped" for u in drop_units}
    kept = [unit for unit in range(basis.units) if unit not in dropped]
    prompts = [template.format(word) for word in words for template in templates]
    scores = basis.scores(encode_texts(model, prompts))[:, kept].numpy()  # [words * templates, kept]
    labels = np.repeat(np.arange(len(words)), len(templates))
    codes = fit_sparse_codes(scores, labels, list(words), units=kept, max_units=max_units, jobs=jobs,
                             on_step=on_step)
    profiles = scores.reshape(len(words), len(templates), len(kept)).mean(axis=1)
    return WordCodes(list(words), list(templates), codes, profiles, kept, dropped)


def text_lexical_units(model: LoadedModel, basis: AttributionBasis, vocabulary: Sequence[str]) -> dict[int, str]:
    """``{unit: affix}``: units whose top texts in ``vocabulary`` share a prefix or suffix (text-side scores)."""
    from neuronscope.probing.embedding import lexical_units

    scores = basis.scores(encode_texts(model, list(vocabulary)))  # [V, U]
    return lexical_units(list(vocabulary), scores)


@dataclass
class EmotionAtlas:
    """Emotion codes and their NMF atlas at one layer.

    Attributes:
        model, layer: where the attributions were read.
        coded: the sparse codes (:class:`WordCodes`) of the emotions.
        map2: NMF with 2 factors of the emotions' profiles (the map's coordinates).
        groups7: NMF with 7 factors (each emotion's group is its largest loading).
    """

    model: str
    layer: str
    coded: WordCodes
    map2: NMFFactors
    groups7: NMFFactors

    def __repr__(self) -> str:  # the dataclass's printed the codes' and factors' arrays (37k characters)
        return (f"EmotionAtlas({self.model} {self.layer}, {len(self.emotions)} emotions over "
                f"{len(self.coded.kept_units)} units, {self.groups7.loadings.shape[1]} groups)")

    @property
    def emotions(self) -> list[str]:
        return self.coded.words

    def to_json(self) -> dict:
        """Codes, map coordinates and groups (with each group's top units)."""
        return {
            "model": self.model, "layer": self.layer, "prompts": self.coded.templates,
            "dropped_units": [{"unit": u, "reason": r} for u, r in sorted(self.coded.dropped_units.items())],
            **self.coded.codes.to_json(),
            "map": [{"emotion": e, "x": round(float(x), 6), "y": round(float(y), 6)}
                    for e, (x, y) in zip(self.emotions, self.map2.loadings)],
            "groups": [{"group": g, "units": self.groups7.top_columns(g),
                        "emotions": [e for e, k in zip(self.emotions, self.groups7.groups) if k == g]}
                       for g in range(self.groups7.components.shape[0])],
        }


def check_emotion_words(emotions: Sequence[str]) -> None:
    """Refuse fewer distinct emotions than the atlas's largest NMF (one row per emotion); cheap, so a
    command can call it before the costly attribution basis."""
    needed = max(ATLAS_FACTORS)
    if len(set(emotions)) < needed:
        raise NeuronscopeError(f"{len(set(emotions))} emotion words are too few: the atlas groups them into "
                               f"{needed} NMF factors; give at least {needed} (one a line)")


def emotion_atlas(model: LoadedModel, basis: AttributionBasis, emotions: Sequence[str] | None = None, *,
                  prompts: Sequence[str] = EMOTION_PROMPTS, max_units: int = 5,
                  drop_units: dict[int, str] | Sequence[int] = (), seed: int = 0, jobs: int | None = None,
                  on_step: Callable[[int, int], None] | None = None) -> EmotionAtlas:
    """Sparse codes of the emotions and NMF atlases with 2 and 7 factors.

    Args:
        emotions: emotion words (default: the feeling wheel, ``load_vocabulary("emotions")``).
        prompts: templates (default: the paper's three).
        max_units: the most units an emotion's code may use.
        drop_units: units to leave out, e.g. :func:`text_lexical_units`.
        jobs: processes fitting the codes (:func:`word_codes`).
        on_step: called ``(emotions coded, emotions)``.
    """
    require_loaded(model, "emotion_atlas")
    if emotions is None:
        from neuronscope.probing.vocab import load_vocabulary

        emotions = load_vocabulary("emotions")
    check_emotion_words(emotions)
    coded = word_codes(model, basis, emotions, prompts, max_units=max_units, drop_units=drop_units, jobs=jobs,
                       on_step=on_step)
    map_factors, group_factors = ATLAS_FACTORS
    map2 = nmf_factors(coded.profiles, map_factors, columns=coded.kept_units, seed=seed)
    groups7 = nmf_factors(coded.profiles, group_factors, columns=coded.kept_units, seed=seed)
    return EmotionAtlas(basis.model, basis.layer, coded, map2, groups7)
