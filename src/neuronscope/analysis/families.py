"""Unit families from rastered words: region, emotion, colour units, and lexical ones.

The paper grouped neurons into families (region, emotion, colour, ...) by
what they answer to. Here a family is a list of words (the built-in
vocabularies: countries and cities, the feeling wheel's emotions, colours),
and a unit's affinity for it is an AUROC over a stored word probe: do the
family's words score higher for the unit than the probe's other words? A
rastered word's response depends on its length (a unit that likes short words
would look like a colour unit: colour words are short), so the AUROC is taken
within each word length and averaged, weighted by the family's words of that
length. A unit belongs to the family with the highest affinity when it
reaches the threshold; otherwise, when its top words share a prefix or suffix
(the paper's "-ing" and "un-" units), to the ``lexical`` family.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..probing.embedding import LexicalRule, lexical_units
from ..units import parse_unit
from .selectivity import average_ranks

#: The affinity a family needs (length-stratified AUROC).
DEFAULT_THRESHOLD = 0.85
#: A family is scored only when the probe holds this many of its words.
MIN_FAMILY_WORDS = 10
#: The family of a unit whose top words share an affix.
LEXICAL = "lexical"


@functools.cache
def builtin_families() -> dict[str, tuple[str, ...]]:
    """The families' word lists, from the built-in vocabularies (read once: the cities' file is large)."""
    from ..probing.vocab import cities, colours, countries, emotion_words

    return {"region": (*countries(), *cities()), "emotion": tuple(emotion_words()), "colour": tuple(colours())}


@dataclass(frozen=True)
class Families:
    """Every unit's affinity for each family, and its family.

    Attributes:
        layer: the layer's canonical name.
        names: the families scored (those with at least ``MIN_FAMILY_WORDS`` words in the probe).
        affinity: [F, U] length-stratified AUROC of each family's words against the other words.
        words_found: how many of each family's words the probe holds.
        lexical: ``{unit: affix}`` of the units whose top words share a prefix or suffix.
        threshold: the affinity a family needs.
    """

    layer: str
    names: tuple[str, ...]
    affinity: torch.Tensor
    words_found: tuple[int, ...]
    lexical: dict[int, str]
    threshold: float = DEFAULT_THRESHOLD

    def family(self, unit: Any) -> dict[str, Any] | None:
        """``{"family", "score"}`` of a unit (``score``: its affinity; for ``lexical``, the affix as ``"affix"``
        and no score), or None."""
        u = parse_unit(unit)
        if self.names:
            best = int(self.affinity[:, u].argmax())
            score = float(self.affinity[best, u])
            if score >= self.threshold:
                return {"family": self.names[best], "score": round(score, 4)}
        if u in self.lexical:
            return {"family": LEXICAL, "score": None, "affix": self.lexical[u]}
        return None

    def records(self) -> dict[int, dict[str, Any]]:
        """``{unit: {"family", "score"[, "affix"]}}`` of the units with a family, as the atlas stores them."""
        return {unit: record for unit in range(self.affinity.shape[1]) if (record := self.family(unit)) is not None}

    def members(self) -> dict[str, list[int]]:
        """``{family: [units]}`` of every family with members."""
        found: dict[str, list[int]] = {}
        for unit, record in self.records().items():
            found.setdefault(record["family"], []).append(unit)
        return found

    def about(self, vocabulary: str) -> dict[str, Any]:
        """JSON of what the families came from: the probe's vocabulary, the threshold, each scored family's
        words in it, the lexical units' affixes (an atlas keeps it beside the families)."""
        return {"vocabulary": vocabulary, "threshold": self.threshold,
                "family_words": dict(zip(self.names, self.words_found)),
                "lexical": {str(unit): affix for unit, affix in self.lexical.items()}}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name} {len(units)}" for name, units in self.members().items()) or "none"
        return f"Families({self.layer!r}, {self.affinity.shape[1]} units: {sizes})"


def stratified_auroc(scores: torch.Tensor, positive: torch.Tensor, strata: torch.Tensor) -> torch.Tensor:
    """AUROC of the ``positive`` rows against the others, within each stratum, averaged with the weight of
    the stratum's positives; strata without positives or without negatives are left out.

    scores: [N, U]; positive: [N] bool; strata: [N] int. Returns [U] (0.5 when no stratum has both).
    """
    total = torch.zeros(scores.shape[1], dtype=torch.float64)
    weight = 0
    for stratum in strata[positive].unique().tolist():
        rows = strata == stratum
        n_pos, n_neg = int((positive & rows).sum()), int((~positive & rows).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = average_ranks(scores[rows].double())  # [n_rows, U]
        rank_sum = ranks[positive[rows]].sum(dim=0)
        total += (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg) * n_pos
        weight += n_pos
    return (total / weight).float() if weight else torch.full((scores.shape[1],), 0.5)


def word_families(words: Sequence[str], scores: torch.Tensor, layer: str = "", *,
                  families: Mapping[str, Sequence[str]] | None = None, threshold: float = DEFAULT_THRESHOLD,
                  lexical_rule: LexicalRule = LexicalRule(),
                  length: Callable[[str], int] = len) -> Families:
    """Families of every unit from a word probe: ``scores`` [len(words), U] (``WordProbe.scores``, or the
    matrix an atlas keeps), ``families`` ``{name: words}`` (default: :func:`builtin_families`); words match
    case-insensitively."""
    families = builtin_families() if families is None else families
    lowered = [w.lower() for w in words]
    strata = torch.tensor([length(w) for w in words])
    names, affinities, found = [], [], []
    for name, family_words in families.items():
        members = {w.lower() for w in family_words}
        positive = torch.tensor([w in members for w in lowered])
        if int(positive.sum()) < MIN_FAMILY_WORDS:
            continue
        names.append(name)
        found.append(int(positive.sum()))
        affinities.append(stratified_auroc(scores.float(), positive, strata))
    affinity = torch.stack(affinities) if affinities else torch.empty(0, scores.shape[1])
    return Families(layer, tuple(names), affinity, tuple(found), lexical_units(words, scores, lexical_rule), threshold)
