"""Reproducing the article's rastered words on CLIP RN50x4 ``image_block_4/5/Add_6``.

The article (Goh et al., Distill 2021, CC-BY 4.0) lists each unit's top-3
rastered words; ``neuronscope/data/paper/`` ships that table and the 109
units its text names. :func:`compare_with_paper` scores a
:class:`~neuronscope.probing.words.WordProbe` of that layer against them.
Only the real OpenAI RN50x4 weights can match; random weights give the
chance figure.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import NeuronscopeError
from .words import WordProbe

PAPER_MODEL = "RN50x4"
PAPER_LAYER = "image_block_4/5/Add_6"
PAPER_UNITS = 2560
#: ``PAPER_LAYER``'s canonical name on RN50x4 (CONVENTIONS: the input of the last block's in-place ReLU).
PAPER_CANONICAL_LAYER = "visual.layer4.5.act3:input"
DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "paper"
TOP3_FILE = "rn50x4_image_block_4_5_Add_6_top3_words.tsv"
NAMED_FILE = "validation_neurons.tsv"


def _ranked_words(cell: str) -> list[str]:
    """A table cell's words in rank order, ``""`` where the article shows none (47 cells have a blank)."""
    return [w.strip() for w in cell.split(",")]


def _split_words(cell: str) -> list[str]:
    return [w for w in _ranked_words(cell) if w]


def _top3_cells() -> dict[int, str]:
    with open(DATA_DIR / TOP3_FILE, encoding="utf-8", newline="") as handle:
        return {int(row["unit"]): row["top3_rastered_words"] for row in csv.DictReader(handle, delimiter="\t")}


def paper_top_words() -> dict[int, list[str]]:
    """``{unit: [its words]}`` for the 2560 units, from the article's table: 3 words, 2 where a cell is blank."""
    return {unit: _split_words(cell) for unit, cell in _top3_cells().items()}


def paper_top1_words() -> dict[int, str]:
    """``{unit: the article's top-1 word}``, without the 39 units whose top-1 cell is blank: their first word
    listed is the article's second."""
    return {unit: ranked[0] for unit, cell in _top3_cells().items() if (ranked := _ranked_words(cell))[0]}


def paper_named_units() -> list[dict]:
    """The 109 units the article names: ``{"family", "unit", "label", "words"}`` each."""
    with open(DATA_DIR / NAMED_FILE, encoding="utf-8", newline="") as handle:
        return [{"family": row["family"], "unit": int(row["unit"]), "label": row["label_in_article"],
                 "words": _split_words(row["top3_rastered_words"])}
                for row in csv.DictReader(handle, delimiter="\t")]


@dataclass
class OverlapStats:
    """Agreement of our top words with the article's over a set of units.

    Attributes:
        units: units compared.
        top3_overlap: mean of |our top-3 ∩ paper top-3| / |paper top-3| (some rows list two words).
        any_top3: share of units with at least one paper word in our top 3.
        paper_top1_in_top_k: share of the units with a paper top-1 word (``top1_units``) whose top-1 word is in
            our top ``k``.
        k: that ``k``.
        top1_units: units whose top-1 cell in the article's table is not blank.
    """

    units: int
    top3_overlap: float
    any_top3: float
    paper_top1_in_top_k: float
    k: int
    top1_units: int = 0


@dataclass
class PaperComparison:
    """Our top words against the article's, overall and for its 109 named units."""

    model: str
    layer: str
    vocabulary_words: int
    paper_words_in_vocabulary: float  # share of the table's distinct words our vocabulary holds
    overall: OverlapStats
    named: OverlapStats
    named_units: list[dict]  # {"unit", "label", "family", "paper", "ours"}

    def to_dict(self) -> dict:
        return asdict(self)


def _overlap(ours: dict[int, list[str]], paper: dict[int, list[str]], paper_top1: dict[int, str],
             units: list[int], k: int) -> OverlapStats:
    if not units:
        return OverlapStats(0, 0.0, 0.0, 0.0, k)
    shared = [len(set(ours[u][:3]) & set(paper[u])) for u in units]
    listed = [max(1, len(set(paper[u]))) for u in units]  # 47 rows of the table list only two words
    top1 = [paper_top1[u] in ours[u][:k] for u in units if u in paper_top1]
    overlap = sum(s / n for s, n in zip(shared, listed)) / len(units)
    return OverlapStats(units=len(units), top3_overlap=round(overlap, 4),
                        any_top3=round(sum(s > 0 for s in shared) / len(units), 4),
                        paper_top1_in_top_k=round(sum(top1) / max(1, len(top1)), 4), k=k, top1_units=len(top1))


def compare_with_paper(probe: WordProbe, k: int = 20) -> PaperComparison:
    """Compare a probe of RN50x4's ``image_block_4/5/Add_6`` with the article's top-3 words."""
    # The unit count alone would accept any 2,560-unit layer, whose unit indices mean nothing to the table.
    if probe.layer != PAPER_CANONICAL_LAYER or probe.units != PAPER_UNITS:
        raise NeuronscopeError(f"the article's table covers the {PAPER_UNITS} units of RN50x4 {PAPER_LAYER} "
                               f"({PAPER_CANONICAL_LAYER}); the probe has {probe.units} units of {probe.layer} "
                               f"({probe.model}): probe that layer (`reproduce words`)")
    paper, paper_top1 = paper_top_words(), paper_top1_words()
    ours = {unit: [w for w, _ in entries] for unit, entries in probe.top_words_all(max(k, 3)).items()}
    named = paper_named_units()
    vocabulary = set(probe.words)
    paper_words = {w for words in paper.values() for w in words}
    return PaperComparison(
        model=probe.model, layer=probe.layer, vocabulary_words=len(probe.words),
        paper_words_in_vocabulary=round(len(paper_words & vocabulary) / max(1, len(paper_words)), 4),
        overall=_overlap(ours, paper, paper_top1, sorted(paper), k),
        named=_overlap(ours, paper, paper_top1, [n["unit"] for n in named], k),
        named_units=[{"unit": n["unit"], "label": n["label"], "family": n["family"], "paper": n["words"],
                      "ours": ours[n["unit"]][:3]} for n in named],
    )
