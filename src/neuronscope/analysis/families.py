"""Unit families from rastered words: region, emotion, colour, time and art-style units, and lexical ones.

The paper grouped neurons into families (region, emotion, colour, seasons and
holidays, art style, ...) by what they answer to. Here a family is a list of
words (the built-in vocabularies: countries and cities, the feeling wheel's
emotions, colours, time words, art styles),
and a unit's affinity for it is an AUROC over a stored word probe: do the
family's words score higher for the unit than the probe's other words? A
rastered word's response depends on its length (a unit that likes short words
would look like a colour unit: colour words are short), so the AUROC is taken
within each word length and averaged, weighted by the family's words of that
length.

One threshold cannot serve every family: a list of 20 words reaches a high
affinity by chance far more easily than one of 131, and a wide layer has more
units to reach it. So each family gets a null: ``NULL_DRAWS`` lists of the
same lengths drawn (seeded) from the probe's other words, and the highest
affinity any unit reaches for any of them. A unit belongs to the family with
the highest affinity among those where it reaches both the threshold and
that null; otherwise, when its top words share a prefix or suffix (the
paper's "-ing" and "un-" units), to the ``lexical`` family.

The word lists are the built-in vocabularies as they are, not curated for
this: a few entries have other common meanings (emotion's "content", "free",
"busy"; region's "jordan", "charlotte", "phoenix", "kennedy"; time's "may",
"march", "fall"; art's "oil", "ink"), so a unit that
answers such a word for its other sense counts it as a family word.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..atlas.families import DEFAULT_THRESHOLD, LEXICAL, NULL_DRAWS, NULL_SEED
from ..probing.embedding import LexicalRule, lexical_units
from ..units import parse_unit
from .selectivity import average_ranks

#: A family is scored only when the probe holds this many of its words.
MIN_FAMILY_WORDS = 10


@functools.cache
def builtin_families() -> dict[str, tuple[str, ...]]:
    """The families' word lists, from the built-in vocabularies (read once: the cities' file is large)."""
    from ..probing.vocab import art_styles, cities, colours, countries, emotion_words, time_words

    return {"region": (*countries(), *cities()), "emotion": tuple(emotion_words()), "colour": tuple(colours()),
            "time": tuple(time_words()), "art": tuple(art_styles())}


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
        null_max: each family's null (:func:`family_null`): the highest affinity any unit reaches for a random
            list of the family's lengths, which a member must also reach (empty: none drawn).
        null_draws: how many random lists each null was drawn from (0: none).
        seed: their seed.
    """

    layer: str
    names: tuple[str, ...]
    affinity: torch.Tensor
    words_found: tuple[int, ...]
    lexical: dict[int, str]
    threshold: float = DEFAULT_THRESHOLD
    null_max: tuple[float, ...] = ()
    null_draws: int = 0
    seed: int = NULL_SEED

    def required_affinity(self) -> torch.Tensor:
        """[F] the affinity each family needs: the threshold, or its null where that is higher."""
        null = torch.tensor(self.null_max, dtype=torch.float32) if self.null_max else torch.zeros(len(self.names))
        return null.clamp(min=self.threshold)

    def null_by_family(self) -> dict[str, float]:
        """``{family: null}``, rounded to 4 places, as the ``families`` artifact and ``--json`` give it."""
        return {name: round(value, 4) for name, value in zip(self.names, self.null_max)}

    def family(self, unit: Any) -> dict[str, Any] | None:
        """``{"family", "score"}`` of a unit (``score``: its affinity, the highest among the families whose bar
        it reaches; for ``lexical``, the affix as ``"affix"`` and no score), or None."""
        u = parse_unit(unit)
        if self.names:
            scores = self.affinity[:, u]
            passed = scores >= self.required_affinity()
            if bool(passed.any()):
                best = int(torch.where(passed, scores, torch.tensor(-1.0)).argmax())
                return {"family": self.names[best], "score": round(float(scores[best]), 4)}
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
        words in it and null, the lexical units' affixes (an atlas keeps it beside the families)."""
        return {"vocabulary": vocabulary, "threshold": self.threshold,
                "family_words": dict(zip(self.names, self.words_found)),
                "null": self.null_by_family(),
                "null_draws": self.null_draws, "seed": self.seed,
                "lexical": {str(unit): affix for unit, affix in self.lexical.items()}}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name} {len(units)}" for name, units in self.members().items()) or "none"
        return f"Families({self.layer!r}, {self.affinity.shape[1]} units: {sizes})"


def stratified_auroc(scores: torch.Tensor, positive: torch.Tensor, strata: torch.Tensor) -> torch.Tensor:
    """AUROC of the ``positive`` rows against the others, within each stratum, averaged with the weight of
    the stratum's positives; strata without positives or without negatives are left out.

    scores: [N, U]; positive: [..., N] bool: one set, or any batch of sets at once (``word_families`` passes
    [F, 1 + draws, N]; each stratum is ranked once for all of them); strata: [N] int. Returns [..., U] (0.5 where
    no stratum has both).
    """
    sets = positive.reshape(-1, positive.shape[-1])  # [S, N]
    total = torch.zeros(len(sets), scores.shape[1], dtype=torch.float64)
    weight = torch.zeros(len(sets), 1, dtype=torch.float64)
    for stratum in strata[sets.any(dim=0)].unique().tolist():
        rows = strata == stratum
        in_stratum = sets[:, rows].double()  # [S, n_rows]
        n_pos = in_stratum.sum(dim=1, keepdim=True)  # [S, 1]
        n_neg = int(rows.sum()) - n_pos
        both = (n_pos > 0) & (n_neg > 0)
        rank_sum = in_stratum @ average_ranks(scores[rows].double())  # [S, U]
        total += torch.where(both, (rank_sum - n_pos * (n_pos + 1) / 2) / n_neg.clamp(min=1), 0.0)
        weight += torch.where(both, n_pos, 0.0)
    auroc = torch.where(weight > 0, total / weight.clamp(min=1), 0.5).float()
    return auroc.reshape(*positive.shape[:-1], scores.shape[1])


def null_lists(positive: torch.Tensor, strata: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """[draws, N] bool: random word lists with the lengths of the ``positive`` [N] words, each drawn (seeded,
    without replacement) from the other words of the same length (all of them where there are fewer)."""
    generator = torch.Generator().manual_seed(seed)
    lists = torch.zeros(draws, len(positive), dtype=torch.bool)
    for stratum in strata[positive].unique().tolist():
        wanted = int((positive & (strata == stratum)).sum())
        others = torch.nonzero(~positive & (strata == stratum)).flatten()
        picks = torch.rand(draws, len(others), generator=generator).argsort(dim=1)[:, :wanted]  # [draws, k]
        lists.scatter_(1, others[picks], True)
    return lists


def family_null(affinities: torch.Tensor) -> float:
    """The null of a family from its random lists' affinities [draws, U]: the highest any unit reaches for any
    list.

    Why the maximum, not a percentile: were the family's words no more to the layer than a random list, its
    best unit would be one more draw of a list's best unit, and would beat the maximum of ``draws`` of them with
    a chance of 1 / (draws + 1) (under 5% at 20 draws): a family-wise bound, per family and layer, that holds
    whatever the family's size and the layer's width. A percentile over unit-draws (the 99.9th) would let about
    one unit in a thousand through by chance: 2-3 false members per family on a 2,560-unit layer.
    """
    return float(affinities.max())


def word_families(words: Sequence[str], scores: torch.Tensor, layer: str = "", *,
                  families: Mapping[str, Sequence[str]] | None = None, threshold: float = DEFAULT_THRESHOLD,
                  lexical_rule: LexicalRule = LexicalRule(), null_draws: int = NULL_DRAWS, seed: int = NULL_SEED,
                  length: Callable[[str], int] = len) -> Families:
    """Families of every unit from a word probe: ``scores`` [len(words), U] (``WordProbe.scores``, or the
    matrix an atlas keeps), ``families`` ``{name: words}`` (default: :func:`builtin_families`); words match
    case-insensitively. Each family's null comes from ``null_draws`` random lists of its lengths (0: none, the
    threshold alone decides), drawn with ``seed`` (the same for every family, so a family's null does not
    depend on which others are scored)."""
    families = builtin_families() if families is None else families
    lowered = [w.lower() for w in words]
    strata = torch.tensor([length(w) for w in words])
    # the null lists are drawn over the words in sorted order: the same words in another order (a vocabulary
    # file's lines) give the same nulls
    order = torch.tensor(sorted(range(len(words)), key=lambda i: (lowered[i], words[i])), dtype=torch.long)
    names, sets = [], []
    for name, family_words in families.items():
        members = {w.lower() for w in family_words}
        positive = torch.tensor([w in members for w in lowered], dtype=torch.bool)
        if int(positive.sum()) >= MIN_FAMILY_WORDS:
            names.append(name)
            nulls = torch.zeros(null_draws, len(words), dtype=torch.bool)
            nulls[:, order] = null_lists(positive[order], strata[order], null_draws, seed)
            sets.append(torch.cat([positive[None], nulls]))
    if not names:
        affinity = torch.empty(0, scores.shape[1])
        return Families(layer, (), affinity, (), lexical_units(words, scores, lexical_rule), threshold,
                        null_draws=null_draws, seed=seed)
    scored = stratified_auroc(scores.float(), torch.stack(sets), strata)  # [F, 1 + draws, U]: each stratum ranked once
    null = tuple(family_null(scored[f, 1:]) for f in range(len(names))) if null_draws else ()
    return Families(layer, tuple(names), scored[:, 0], tuple(int(s[0].sum()) for s in sets),
                    lexical_units(words, scores, lexical_rule), threshold, null, null_draws, seed)
