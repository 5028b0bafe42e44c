"""A layer's stored word probe as a matrix, and the units a word stands out for (torch-free: the microscope's
search reads it).

``neuronscope words`` keeps each probe's whole matrix (an artifact of kind ``words`` named after its
vocabulary, an ``.npz`` of ``words`` and ``scores`` [words, units]); a unit's top words are its column's best
rows. Read the other way, a word's row says which units answer it: the paper found its Spider-Man unit from
the rastered word "spider".
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from neuronscope.atlas.store import Atlas

#: The artifact kind of a stored word probe.
ARTIFACT = "words"


def stored_probes(atlas: Atlas, model: str, layer: str) -> dict[str, dict[str, Any]]:
    """``{vocabulary: artifact}`` of the word probes stored for a layer (those with their matrix)."""
    return {artifact["name"]: artifact for artifact in atlas.artifacts(model, layer, ARTIFACT) if artifact["path"]}


class WordMatrix:
    """A layer's responses to a vocabulary's rastered words.

    Args:
        words: the vocabulary; row i of ``responses`` is word i.
        responses: float32 [words, columns].
        units: the unit of each column (default: column i is unit i), for a matrix with units left out.
    """

    def __init__(self, words: Sequence[str], responses: np.ndarray, units: Sequence[int] | None = None) -> None:
        if len(words) != responses.shape[0]:
            raise ValueError(f"{len(words)} words but {responses.shape[0]} rows of responses")
        self.words = list(words)
        self.index = {word: row for row, word in enumerate(self.words)}
        self.responses = responses
        self.units = np.arange(responses.shape[1]) if units is None else np.asarray(units)

    @classmethod
    def read(cls, atlas: Atlas, artifact: dict[str, Any]) -> "WordMatrix":
        """A stored probe's matrix (an artifact of :func:`stored_probes`)."""
        with np.load(atlas.path / artifact["path"]) as arrays:
            return cls([str(word) for word in arrays["words"]], arrays["scores"].astype(np.float32))

    @cached_property
    def _moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Each column's mean and spread over the vocabulary, summed in float64 (float32 sums of 10,000 words
        are off by ~1e-5 relative); a constant column's spread is infinite, so its z is 0."""
        mean = self.responses.mean(axis=0, dtype=np.float64)
        spread = (self.responses.std(axis=0, ddof=1, dtype=np.float64) if len(self.words) > 1
                  else np.zeros(self.responses.shape[1]))
        return mean, np.where(spread > 1e-9 * np.maximum(np.abs(mean), 1e-9), spread, np.inf)

    def lookup(self, word: str) -> str | None:
        """The vocabulary's spelling of ``word``: as given, else in lower case (vocabularies are mostly lower
        case); None when it holds neither."""
        return next((w for w in (word, word.lower()) if w in self.index), None)

    def top_units(self, word: str, k: int = 10) -> list[dict[str, float | int]]:
        """The ``k`` units the rastered ``word`` stands out for, best first: ``[{"unit", "z", "rank"}, ...]``.

        A unit's score is the word's z-score among the unit's responses to the whole vocabulary, so a unit that
        fires strongly for every word does not outrank one for which this word is exceptional; ``rank`` is the
        word's place among the unit's own words (1: its top word). ``word`` as :meth:`lookup` finds it.

        Raises:
            KeyError: a word the vocabulary does not hold.
        """
        spelled = self.lookup(word)
        if spelled is None:
            raise KeyError(f"{word!r} is not in the probe's vocabulary ({len(self.words)} words); "
                           "probe a vocabulary that contains it")
        row = self.responses[self.index[spelled]]
        mean, spread = self._moments
        z = (row - mean) / spread
        order = np.argsort(-z, kind="stable")[:k]
        ranks = (self.responses[:, order] > row[order]).sum(axis=0) + 1
        return [{"unit": int(self.units[column]), "z": float(z[column]), "rank": int(rank)}
                for column, rank in zip(order, ranks)]
