"""Writing the text side into an atlas: unit → texts, text feature visualizations, emotion codes.

The compute modules (:mod:`.attribution`, :mod:`.textvis`,
:mod:`neuronscope.analysis.emotions`) return result objects; this module
is the one place that turns them into atlas rows.

Texts from vocabulary scoring and from text feature visualization share
the atlas's ``texts`` table: the scores are the same attribution, so a write
over the same image sample *merges* with a unit's stored texts, keeping the
best ``keep`` by score. Scores over another sample (other ``--images``,
``--sample`` or ``--seed``) are not comparable: such a write replaces the
unit's texts. Each run records its sample's identity (``sample_key``); a run
from before that is matched by the sample its config describes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from neuronscope.activations.names import aliases_by_layer
from neuronscope.atlas import Atlas
from neuronscope.models.loaded import LoadedModel
from neuronscope.probing.attribution import AttributionBasis


def text_run_key(model: str, layer: str, kind: str, config: Mapping[str, Any]) -> str:
    """The config key of a text-side run (``Atlas.finished_run`` finds an earlier one by it)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return f"{kind}:{model}:{layer}:{digest}"


def start_text_run(atlas: Atlas, model: LoadedModel, basis: AttributionBasis, *, command: str, kind: str,
                   config: Mapping[str, Any], dataset: Mapping[str, Any] | None = None) -> int:
    """Record a text-side run and make its layer known to the atlas; returns the run id."""
    aliases = aliases_by_layer(model.layer_aliases).get(basis.layer, [])
    # the sample's description beside the config's own keys ("sample" there is the command's image count)
    run_id = atlas.start_run(command=command, config={**config, "sample_source": basis.sample,
                                                      "sample_key": basis.sample_key},
                             config_key=text_run_key(basis.model, basis.layer, kind, config), model=basis.model,
                             weights_sha256=model.weights_sha256,
                             layers=[{"layer": basis.layer, "aliases": aliases}], dataset=dataset,
                             precision=model.precision.name)
    atlas.register_layer(basis.model, basis.layer, aliases=aliases, units=basis.units, grid=basis.grid, run_id=run_id)
    return run_id


def merge_unit_texts(atlas: Atlas, run_id: int, model: str, layer: str,
                     scored: Mapping[int, list[tuple[str, float]]], keep: int = 50) -> None:
    """Add texts to units' stored texts over the same image sample (the run's ``sample_key``): the same text
    keeps its newest score; the best ``keep`` stay. Texts stored over another sample are replaced."""
    recorded: dict[int | None, tuple] = {None: ()}  # run -> its sample's identity

    def samples(run: int | None) -> tuple:
        if run not in recorded:
            recorded[run] = _sample_identity(atlas.run(run).get("config") or {})
        return recorded[run]

    config = atlas.run(run_id).get("config") or {}
    current, legacy = _sample_identity(config), _sample_identity({**config, "sample_key": None})
    merged: dict[int, list[tuple[str, float]]] = {}
    for unit, entries in scored.items():
        stored = {text: score for text, score, stored_run in _stored_texts(atlas, model, layer, int(unit))
                  if samples(stored_run) in (current, legacy)}
        stored.update({text: float(score) for text, score in entries})
        merged[int(unit)] = sorted(stored.items(), key=lambda item: -item[1])[:keep]
    atlas.write_unit_texts("texts", run_id, model, layer, merged)


def _sample_identity(config: Mapping[str, Any]) -> tuple:
    """What a run's scores were read over: its ``sample_key``; for a run from before keys were recorded, the
    sample's description with the options that chose it (the same command over the same sample matches)."""
    if config.get("sample_key"):
        return ("key", config["sample_key"])
    return ("described", config.get("sample_source"), config.get("sample"), config.get("seed"), config.get("images"))


def _stored_texts(atlas: Atlas, model: str, layer: str, unit: int) -> list[tuple[str, float, int | None]]:
    """A unit's stored texts with the run that wrote each: ``(text, score, run_id)``.

    Read from the table itself: ``Atlas.unit_texts`` leaves the run out.
    """
    rows = atlas.db.execute("SELECT text, score, run_id FROM texts WHERE model = ? AND layer = ? AND unit = ?",
                            (model, layer, unit))
    return [(row["text"], float(row["score"]), row["run_id"]) for row in rows]

