"""Image-based word embeddings: a layer's response to a rastered word, minus the vocabulary's mean.

    embedding = WordEmbedding.from_probe(probe, mask_lexical=True)
    embedding.nearest("cat", k=5)
    embedding.arithmetic(plus=["king", "woman"], minus=["man"])
    embedding.cosine("terrorist", "muslims")

Raw responses share a large common part (every rastered word is black text
on white), so raw cosines are high for any pair; the paper subtracts the
mean over the vocabulary (cos("Terrorist", "Muslims") 0.98 raw, 0.52
corrected on RN50x4). Lexical units, those whose top words share a prefix
or suffix (the paper's "-ing" and "un-" units), respond to spelling rather
than meaning; masking them keeps the embedding about meaning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from ..atlas.words import WordMatrix
from .ranking import top_k
from .words import WordProbe


@dataclass(frozen=True)
class LexicalRule:
    """When a unit counts as lexical: at least ``min_share`` of its top ``top_k`` words share a prefix or
    suffix of ``min_affix``..``max_affix`` letters (the word itself longer than the affix)."""

    top_k: int = 10
    min_share: float = 0.6
    min_affix: int = 2
    max_affix: int = 5


def shared_affix(words: Sequence[str], rule: LexicalRule = LexicalRule()) -> str | None:
    """The longest prefix (``"un-"``) or suffix (``"-ing"``) that at least ``rule.min_share`` of ``words`` share."""
    words = [w.lower() for w in words]
    needed = rule.min_share * len(words)
    for length in range(rule.max_affix, rule.min_affix - 1, -1):  # longest first: "-ing" rather than "-ng"
        suffixes = Counter(w[-length:] for w in words if len(w) > length)
        prefixes = Counter(w[:length] for w in words if len(w) > length)
        for counts, form in ((suffixes, "-{}"), (prefixes, "{}-")):
            if counts:
                affix, count = counts.most_common(1)[0]
                if count >= needed:
                    return form.format(affix)
    return None


def lexical_units(words: Sequence[str], scores: torch.Tensor, rule: LexicalRule = LexicalRule()) -> dict[int, str]:
    """``{unit: affix}`` for the units of ``scores`` [words, units] whose top words share an affix."""
    k = min(rule.top_k, len(words))
    _, top = top_k(scores, k)  # [k, units], ties in vocabulary order
    found = {}
    for unit in range(scores.shape[1]):
        affix = shared_affix([words[int(i)] for i in top[:, unit]], rule)
        if affix is not None:
            found[unit] = affix
    return found


class WordEmbedding:
    """Word vectors [words, kept units] from a layer's responses, centred and optionally with units masked.

    Args:
        words: the vocabulary; row i of ``responses`` is word i.
        responses: float [words, units], e.g. :attr:`WordProbe.scores`.
        center: subtract the mean over the vocabulary (the paper's correction).
        mask_units: units left out of the vectors (e.g. :func:`lexical_units`).
    """

    def __init__(self, words: Sequence[str], responses: torch.Tensor, *, center: bool = True,
                 mask_units: Sequence[int] = ()) -> None:
        if len(words) != responses.shape[0]:
            raise ValueError(f"{len(words)} words but {responses.shape[0]} rows of responses")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.masked = sorted(set(int(u) for u in mask_units))
        keep = torch.ones(responses.shape[1], dtype=torch.bool)
        keep[self.masked] = False
        self.units = keep.nonzero().flatten()  # [kept] original unit indices
        vectors = responses.float()[:, keep]
        self.mean = vectors.mean(dim=0) if center else torch.zeros(vectors.shape[1])
        self.vectors = vectors - self.mean  # [words, kept]

    @cached_property
    def _unit(self) -> torch.Tensor:
        """Rows of unit length, for cosines (made on first use: unit rankings need no second copy)."""
        return torch.nn.functional.normalize(self.vectors, dim=1)

    @classmethod
    def from_probe(cls, probe: WordProbe, *, center: bool = True, mask_lexical: bool = False,
                   rule: LexicalRule = LexicalRule()) -> "WordEmbedding":
        """The embedding of a probe's vocabulary; ``mask_lexical`` drops units found by :func:`lexical_units`."""
        masked = lexical_units(probe.words, probe.scores, rule) if mask_lexical else {}
        return cls(probe.words, probe.scores, center=center, mask_units=list(masked))

    def vector(self, word: str) -> torch.Tensor:
        """The word's (centred, masked) vector [kept units]."""
        if word not in self.index:
            raise KeyError(f"{word!r} is not in the embedding's vocabulary ({len(self.words)} words); "
                           "probe a vocabulary that contains it")
        return self.vectors[self.index[word]]

    def cosine(self, a: str, b: str) -> float:
        """Cosine similarity of two words' vectors."""
        return float(torch.nn.functional.cosine_similarity(self.vector(a), self.vector(b), dim=0))

    def nearest(self, query: str | torch.Tensor, k: int = 10, exclude: Sequence[str] = ()) -> list[tuple[str, float]]:
        """The ``k`` words closest to ``query`` (a word or a vector [kept units]) by cosine, best first.

        A word query leaves itself out, as do the words in ``exclude``.
        """
        if isinstance(query, str):
            exclude = (*exclude, query)
            query = self.vector(query)
        similarity = self._unit @ torch.nn.functional.normalize(query.float(), dim=0)  # [words]
        for word in exclude:
            if word in self.index:
                similarity[self.index[word]] = float("-inf")
        order = torch.argsort(-similarity, stable=True)[:k]
        return [(self.words[i], float(similarity[i])) for i in order if similarity[i] > float("-inf")]

    def top_units(self, word: str, k: int = 10) -> list[dict[str, float | int]]:
        """The ``k`` (kept) units the rastered ``word`` stands out for, best first: ``[{"unit", "z", "rank"},
        ...]`` (:meth:`~neuronscope.atlas.words.WordMatrix.top_units`: the word's z-score among each unit's
        responses to the vocabulary, and its place among the unit's words). How the paper found its Spider-Man
        unit from the word "spider".

        Raises:
            KeyError: a word the vocabulary does not hold.
        """
        return self._matrix.top_units(word, k)

    @cached_property
    def _matrix(self) -> WordMatrix:
        return WordMatrix(self.words, self.vectors.numpy(), self.units.numpy())  # centred or not: the same z

    def arithmetic(self, plus: Sequence[str], minus: Sequence[str] = (), k: int = 10) -> list[tuple[str, float]]:
        """Nearest words to sum(plus) - sum(minus), leaving the input words out."""
        if not plus:
            raise ValueError("word arithmetic needs at least one word to add")
        target = torch.stack([self.vector(w) for w in plus]).sum(dim=0)
        if minus:
            target = target - torch.stack([self.vector(w) for w in minus]).sum(dim=0)
        return self.nearest(target, k, exclude=(*plus, *minus))
