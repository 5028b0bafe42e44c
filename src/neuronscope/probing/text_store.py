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

The attribution basis, the costly part of every text-side command, is kept
in the atlas's checkpoints while a command runs (:func:`keep_basis`) and
dropped when it finishes: a rerun after a failure reuses it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from neuronscope.atlas import Atlas
from neuronscope.atlas.runs import config_digest, open_run, refuse_edited, start_run
from neuronscope.models.loaded import LoadedModel
from neuronscope.probing.attribution import AttributionBasis, ImageSample
from neuronscope.probing.vocab import VocabularyRecord

log = logging.getLogger(__name__)


def text_run_key(model: str, layer: str, kind: str, config: Mapping[str, Any]) -> str:
    """The config key of a text-side run (``Atlas.finished_run`` finds an earlier one by it)."""
    return f"{kind}:{model}:{layer}:{config_digest(config, 12)}"


def vocabulary_run_config(model: LoadedModel, vocabulary: VocabularyRecord, **settings: Any) -> dict[str, Any]:
    """The config (so the key) of a text-side run over a vocabulary (``attribute --out``, ``emotions``, the
    demo's texts): its words, its own ``settings``, and the weights and precision the texts depend on."""
    return {**vocabulary.config(), **settings, "precision": model.precision.name,
            "weights_sha256": model.weights_identity()}


def start_text_run(atlas: Atlas, model: LoadedModel, basis: AttributionBasis, *, command: str, kind: str,
                   config: Mapping[str, Any], dataset: Mapping[str, Any] | None = None,
                   resume: bool = False) -> int:
    """Record a text-side run and make its layer known to the atlas; returns the run id.

    ``resume``: continue the latest unfinished run of the same key (a killed ``textvis``), or else reopen
    the latest finished one (a rerun of a finished ``textvis``, or one with more units), instead of starting
    another; the caller skips the units the run has stored (:func:`units_with_texts`). ``config`` must then
    name everything a unit's texts depend on (precision, weights: a run of other texts is never continued)
    but not which units, as ``visualize`` keys its renders: more units extend the run. A run still marked
    ``running`` is taken for a killed one, as ``words`` and ``scan`` take it: a SIGKILL leaves it so, and no
    process can mark it. Refused while a Recorder's edits are attached to ``model``.
    """
    refuse_edited(model)
    config_key = text_run_key(basis.model, basis.layer, kind, config)

    def start() -> int:
        # the sample's description beside the config's own keys ("sample" there is the command's image count)
        return start_run(atlas, model, command=command, config={**config, "sample_source": basis.sample,
                                                                "sample_key": basis.sample_key},
                         config_key=config_key, layers=[basis.layer], dataset=dataset)

    run_id = open_run(atlas, config_key, start, reopen_finished=True).run_id if resume else start()
    atlas.register_layer(basis.model, basis.layer, aliases=model.aliases_of(basis.layer),
                         units=basis.units, grid=basis.grid, run_id=run_id)
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


def units_with_texts(atlas: Atlas, run_id: int, model: str, layer: str) -> set[int]:
    """Units whose stored texts a run wrote: what a resumed text feature visualization has done already.

    A later run merging into a unit takes its rows over, so such a unit counts as not done (redone, the
    same texts merge again).
    """
    rows = atlas.db.execute("SELECT DISTINCT unit FROM texts WHERE run_id = ? AND model = ? AND layer = ?",
                            (run_id, model, layer))
    return {int(row["unit"]) for row in rows}


# ---------------------------------------------------------------------------- the basis kept for a rerun


def basis_checkpoint_key(model: LoadedModel, layer: str, sample: ImageSample) -> str:
    """The checkpoint name of a layer's attribution basis: what it depends on (weights, random ones too,
    precision, sample)."""
    identity = [model.key, model.weights_identity(), model.resolve_layer(layer), model.precision.name, sample.key]
    return "basis-" + config_digest(identity, 16)


def load_basis(atlas: Atlas, key: str) -> AttributionBasis | None:
    """The basis an earlier, unfinished command kept under ``key`` (:func:`keep_basis`), or None."""
    stored = atlas.load_checkpoint(key)
    if stored is None:
        return None
    arrays, meta = stored
    return AttributionBasis(meta["model"], meta["layer"], torch.from_numpy(arrays["per_image"]),
                            torch.from_numpy(arrays["image_embeddings"]), float(meta["logit_scale"]),
                            tuple(meta["grid"]), meta["sample"], meta["sample_key"])


def keep_basis(atlas: Atlas, key: str, basis: AttributionBasis) -> bool:
    """Store ``basis`` in the atlas's checkpoints until the command finishes (:meth:`Atlas.drop_checkpoint`), so
    that a rerun after a failure, a kill or a full disk does not compute it again (minutes on a real model).

    Returns False, with a warning, when it cannot be written (no space on disk, or a memory error while
    writing): the command goes on without it.
    """
    meta = {"model": basis.model, "layer": basis.layer, "logit_scale": basis.logit_scale, "grid": list(basis.grid),
            "sample": basis.sample, "sample_key": basis.sample_key}
    try:
        atlas.save_checkpoint(key, {"per_image": basis.per_image.numpy(),
                                    "image_embeddings": basis.image_embeddings.numpy()}, meta)
    except (OSError, MemoryError) as err:
        log.warning("the attribution basis could not be kept for a rerun (%s); going on without it",
                    err if str(err) else type(err).__name__)  # a bare MemoryError says nothing
        return False
    return True
