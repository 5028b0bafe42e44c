"""A layer's stored families, read one unit at a time (torch-free: the CLI and the microscope read them).

The families are :meth:`neuronscope.analysis.families.Families.records`, kept as the atlas's ``families`` rows
(``family``, ``score``, ``source``), with what a source's families came from kept as its ``families`` artifact
(:meth:`~neuronscope.analysis.families.Families.about`: the probe, the threshold, each family's null, and the
lexical units' affixes). The criteria's defaults live here so that the command and the microscope read them
without importing torch; :mod:`neuronscope.analysis.families` imports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from neuronscope.atlas.store import Atlas

#: The kind of the artifact that says where a source's families came from (one per source, named by it).
ARTIFACT = "families"
#: The family of a unit whose top words share an affix.
LEXICAL = "lexical"
#: The affinity a family needs (length-stratified AUROC), besides its null.
DEFAULT_THRESHOLD = 0.85
#: Random word lists per family for its null, and their seed.
NULL_DRAWS = 20
NULL_SEED = 0


def family_sources(atlas: Atlas, model: str, layer: str) -> dict[str, dict[str, Any]]:
    """``{source: about}``: what each source of a layer's families stored of where they came from (the
    ``families`` artifacts; for ``auto:words``: ``{"vocabulary", "threshold", "family_words", "null",
    "null_draws", "seed", "lexical": {unit: affix}}``; ``{}`` for a source that stored nothing)."""
    return {artifact["name"]: artifact["data"] or {} for artifact in atlas.artifacts(model, layer, ARTIFACT)}


def unit_family(row: Mapping[str, Any] | None, unit: int, sources: Mapping[str, Mapping[str, Any]]
                ) -> dict[str, Any] | None:
    """A unit's family record from its ``families`` row and :func:`family_sources`: ``{"family", "score",
    "source"}``, and for a lexical unit the ``"affix"`` its top words share (the affixes are kept in the source's
    artifact, not the row; None where the source kept none). The one join :meth:`Atlas.unit`, the grid and the
    export read."""
    if row is None:
        return None
    family = {column: row[column] for column in ("family", "score", "source")}
    if family["family"] == LEXICAL:
        family["affix"] = sources.get(family["source"], {}).get("lexical", {}).get(str(unit))
    return family


def family_text(family: Mapping[str, Any]) -> str:
    """A family record's name as ``show`` and the export write it: the family, and a lexical unit's affix after
    it (``lexical -ing``), which says what the unit answers as a score says it for the other families."""
    affix = family.get("affix")
    return f"{family['family']} {affix}" if affix else family["family"]
