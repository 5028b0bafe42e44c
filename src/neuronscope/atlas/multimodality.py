"""A stored multimodality measurement, read one unit at a time (torch-free: the microscope reads it).

The measurement is :meth:`neuronscope.analysis.multimodality.Multimodality.to_dict`, kept as a layer's
``multimodality`` artifact: per-unit lists of the concept index (images' and words'), both AUROCs, and the
concept names and threshold they are read with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The artifact (kind, name) a layer's latest measurement is stored under.
ARTIFACT = ("multimodality", "scores")


def unit_multimodality(scores: Mapping[str, Any], unit: int) -> dict[str, Any]:
    """One unit's record: ``{"concept", "score", "auroc_images", "auroc_words", "word_concept", "multimodal",
    "threshold"}``; ``score`` is the weaker AUROC, ``multimodal`` whether it reaches the threshold with images
    and words agreeing on the concept."""
    concepts = scores["concepts"]
    concept, word_concept = scores["concept"][unit], scores["word_concept"][unit]
    auroc_images, auroc_words = scores["auroc_images"][unit], scores["auroc_words"][unit]
    score = min(auroc_images, auroc_words)
    return {"concept": concepts[concept] if concept >= 0 else None, "score": score, "auroc_images": auroc_images,
            "auroc_words": auroc_words, "word_concept": concepts[word_concept], "threshold": scores["threshold"],
            "multimodal": 0 <= concept == word_concept and score >= scores["threshold"]}


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
