"""A stored multimodality measurement, read one unit at a time (torch-free: the microscope reads it).

The measurement is :meth:`neuronscope.analysis.multimodality.Multimodality.to_dict`, kept as a layer's
``multimodality`` artifact: per-unit lists of the concept index (images' and words'), both AUROCs, and the
concept names and threshold they are read with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The artifact (kind, name) a layer's latest measurement is stored under.
ARTIFACT = ("multimodality", "scores")
#: The mini CLIP card's threshold on both AUROCs.
DEFAULT_THRESHOLD = 0.9
#: The concept index of a unit that answers every concept alike (a dead or constant unit): it has none.
NO_CONCEPT = -1


def multimodality_record(concepts: Sequence[str], concept: int, word_concept: int, auroc_images: float,
                         auroc_words: float, threshold: float) -> dict[str, Any]:
    """The criterion, once, for one unit: ``{"concept", "score", "auroc_images", "auroc_words", "word_concept",
    "threshold", "multimodal"}``; ``score`` is the weaker AUROC, ``multimodal`` whether it reaches the threshold
    with images and words agreeing on the concept; a concept index :data:`NO_CONCEPT` reads None."""
    score = min(auroc_images, auroc_words)
    return {"concept": None if concept == NO_CONCEPT else concepts[concept], "score": score,
            "auroc_images": auroc_images, "auroc_words": auroc_words,
            "word_concept": None if word_concept == NO_CONCEPT else concepts[word_concept], "threshold": threshold,
            "multimodal": concept != NO_CONCEPT and concept == word_concept and score >= threshold}


def unit_multimodality(scores: Mapping[str, Any], unit: int) -> dict[str, Any]:
    """One unit's record (:func:`multimodality_record`) from a stored measurement."""
    return multimodality_record(scores["concepts"], scores["concept"][unit], scores["word_concept"][unit],
                                scores["auroc_images"][unit], scores["auroc_words"][unit], scores["threshold"])


def layer_multimodality(scores: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every unit's record (:func:`unit_multimodality`), in unit order: a layer's grid cards carry them."""
    return [unit_multimodality(scores, unit) for unit in range(len(scores["concept"]))]


def layer_summary(scores: Mapping[str, Any]) -> dict[str, Any]:
    """What a layer's measurement comes to: ``{"units", "concepts", "threshold", "measured_units",
    "measured_concepts", "chance"}``: how many units are multimodal, for how many distinct concepts, out of the
    units and concepts measured, and how many units the label-shuffle control passed, one count per seed (``[]``
    for a measurement stored without it) (the microscope's home and layer pages say it)."""
    passing = [record for record in layer_multimodality(scores) if record["multimodal"]]
    return {"units": len(passing), "concepts": len({record["concept"] for record in passing}),
            "threshold": scores["threshold"], "measured_units": len(scores["concept"]),
            "measured_concepts": len(scores["concepts"]), "chance": (scores.get("chance") or {}).get("units", [])}
