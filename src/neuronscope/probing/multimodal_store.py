"""Multimodality into an atlas: a recorded run, checkpoints while the images stream, the scores stored.

    run = measure_multimodality_into(atlas, model, "neurons", labelled_images(["photos/"]))
    run.measurement.scores                                 # a Multimodality
    atlas.unit(model.key, "neurons", 7)["multimodality"]   # {"concept", "score", ...}

The same call after a kill continues from the last checkpoint of image responses. With ``images=None`` the
bundled mini CLIP's card measurement is stored (a few seconds: no checkpoint). ``label=True`` also labels
each multimodal unit with its concept (source ``auto:multimodality``), never replacing a label from
elsewhere (a user's, the card's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..analysis.multimodality import DEFAULT_THRESHOLD
from ..atlas import Atlas
from ..atlas.runs import (CHECKPOINT_SECONDS, CheckpointSchedule, abandon_stale_runs, config_digest,
                          drop_checkpoints, marked_interrupted, open_run, refuse_edited, start_run)
from ..models.loaded import LoadedModel
from .multimodal import (ImageResponses, LabelledImages, MultimodalMeasurement, ResponsesHook, check_words,
                         measure_multimodality)
from .raster import RasterSettings

log = logging.getLogger(__name__)

#: The label source of the concepts ``label=True`` writes.
LABEL_SOURCE = "auto:multimodality"
#: Images between checkpoints (also every :data:`~neuronscope.atlas.runs.CHECKPOINT_SECONDS`).
CHECKPOINT_IMAGES = 2048
#: What the bundled measurement is recorded as reading.
BUNDLED = "mini-clip test split (held-out drawings, held-out-font words)"


@dataclass(frozen=True)
class MultimodalRun:
    """What :func:`measure_multimodality_into` did: the measurement (its scores, unreadable files and concepts
    left out), its run (None: not stored), the entry it resumed at (0: from the first), the units it labelled."""

    measurement: MultimodalMeasurement
    run_id: int | None = None
    resumed_from: int = 0
    labelled: tuple[int, ...] = ()


def images_fingerprint(images: LabelledImages) -> str:
    """A hash of the listing and its labels (names, sizes, concepts): a resumed run checks nothing changed."""
    digest = hashlib.sha256("\0".join(images.concepts).encode())
    for entry, label in zip(images.entries, images.labels.tolist()):
        digest.update(f"\0{entry.name}\0{entry.size}\0{label}".encode())
    return digest.hexdigest()


def run_config(model: LoadedModel, layer: str, images: LabelledImages | None,
               settings: RasterSettings) -> tuple[dict[str, Any], str]:
    """The run's config (what decides its scores) and key. Not in it: batch size and workers, nor the threshold,
    which only decides which units a reader calls multimodal (a new threshold is a new run of the same key)."""
    config: dict[str, Any] = {"model": model.key, "weights_sha256": model.weights_identity(), "layer": layer,
                              "precision": model.precision.name}
    if images is None:
        config["images"] = BUNDLED
    else:
        config.update(images=list(images.sources), images_sha256=images_fingerprint(images),
                      concepts=list(images.concepts), settings=settings.to_dict())
    config = json.loads(json.dumps(config))  # as the atlas stores it
    return config, "multimodality-" + config_digest(config, 20)


class ResponseCheckpoints:
    """The ``on_batch`` hook that checkpoints the image responses: each save appends the rows new since the last
    as a part (``KEY-partNNNNNN``) and rewrites the small ``KEY`` record of how far the job got, so a long
    measurement writes its responses once, not once per checkpoint."""

    def __init__(self, atlas: Atlas, config_key: str, run_id: int, total: int, resumed: ImageResponses | None, *,
                 every_images: int, every_seconds: float, then: ResponsesHook | None) -> None:
        self.atlas, self.config_key, self.run_id, self.total, self.then = atlas, config_key, run_id, total, then
        self.rows = 0 if resumed is None else len(resumed.values)
        self.parts = len(_part_files(atlas, config_key))
        self.last: ImageResponses | None = None  # the latest state reported: whole at any time
        self.schedule = CheckpointSchedule(every_images, every_seconds, done=0 if resumed is None else resumed.done,
                                           total=total)

    def __call__(self, state: ImageResponses) -> None:
        self.last = state
        if self.schedule.due(state.done):
            self.save(state)
        if self.then is not None:
            self.then(state)

    def keep(self) -> None:
        """Save the responses collected since the last checkpoint (on a Ctrl-C: checkpoints are minutes apart);
        the last state the measurement reported is whole, whatever a Ctrl-C cut after it."""
        if self.last is not None and self.last.done > self.schedule.saved_items:
            self.save(self.last)

    def save(self, state: ImageResponses) -> None:
        """Append the rows new since the last save as a part, then record how far the job got."""
        if len(state.values) > self.rows:
            self.atlas.save_checkpoint(f"{self.config_key}-part{self.parts:06d}",
                                       {"values": state.values[self.rows:].numpy(),
                                        "labels": state.labels[self.rows:].numpy(),
                                        "keys": state.keys[self.rows:]}, {"run_id": self.run_id})
            self.parts, self.rows = self.parts + 1, len(state.values)
        self.atlas.save_checkpoint(self.config_key, {"rows": np.array([self.rows])},
                                   {"run_id": self.run_id, "done": state.done, "entries": self.total,
                                    "rows": self.rows, "parts": self.parts, "skipped": state.skipped})
        self.schedule.saved(state.done)


def _part_files(atlas: Atlas, config_key: str) -> list:
    return sorted(atlas.checkpoints.files(f"{config_key}-part"))


def _resumed(atlas: Atlas, config_key: str, checkpoint: tuple[dict[str, np.ndarray], dict[str, Any]] | None
             ) -> ImageResponses | None:
    """The responses a checkpoint's parts hold, or None (no checkpoint, or parts missing: start over)."""
    if checkpoint is None:
        return None
    meta = checkpoint[1]
    parts = [atlas.load_checkpoint(path.stem) for path in _part_files(atlas, config_key)[:meta["parts"]]]
    if len(parts) != meta["parts"] or any(part is None for part in parts):
        return None
    values = np.concatenate([part[0]["values"] for part in parts]) if parts else np.empty((0, 0), np.float32)
    labels = np.concatenate([part[0]["labels"] for part in parts]) if parts else np.empty(0, np.int64)
    if any("keys" not in part[0] for part in parts):
        log.warning("the checkpoint of %s was written before duplicate files were measured once: the "
                    "measurement starts over", config_key)
        return None
    keys = np.concatenate([part[0]["keys"] for part in parts]) if parts else np.empty(0, np.uint64)
    if len(values) != meta["rows"]:
        return None
    return ImageResponses(int(meta["done"]), torch.from_numpy(values), torch.from_numpy(labels),
                          dict(meta.get("skipped") or {}), keys.astype(np.uint64))


def _abandon_changed_sources(atlas: Atlas, config: dict[str, Any], config_key: str) -> None:
    """Mark abandoned, and drop the checkpoints of, the unfinished runs of this measurement over the same sources
    as they were before a change (files added, removed or relabelled): their key can never come back."""
    def same_measurement(run: dict[str, Any]) -> bool:
        return run["config_key"].startswith("multimodality-") and all(
            run["config"].get(key) == config.get(key) for key in ("model", "weights_sha256", "layer", "images"))

    for run in abandon_stale_runs(atlas, config_key, same_measurement):
        log.warning("the images of %s changed since run %d was interrupted: it cannot resume, so a new run starts; "
                    "run %d is marked abandoned and its checkpoint dropped",
                    ", ".join(config["images"]), run["id"], run["id"])


def measure_multimodality_into(atlas: Atlas, model: LoadedModel, layer: str, images: LabelledImages | None, *,
                               settings: RasterSettings = RasterSettings(), threshold: float = DEFAULT_THRESHOLD,
                               label: bool = False, command: str | None = None, batch_size: int = 32,
                               workers: int = 0, checkpoint_every: int = CHECKPOINT_IMAGES,
                               checkpoint_seconds: float = CHECKPOINT_SECONDS,
                               on_batch: ResponsesHook | None = None,
                               on_resume: Callable[[int, int], None] | None = None) -> MultimodalRun:
    """Measure ``layer``'s multimodality (:func:`~neuronscope.probing.multimodal.measure_multimodality`, or the
    bundled card's with ``images=None``) and store it in ``atlas``, resumably; see the module's docstring.

    ``on_resume``: called with (entry resumed at, entries in all) when a checkpoint is restored, before the first
    batch.
    """
    canonical = model.resolve_layer(layer)
    config, config_key = run_config(model, canonical, images, settings)
    total = 0 if images is None else len(images)
    refuse_edited(model)
    if images is not None:
        check_words(model, images.concepts, settings)  # before a run is recorded: it could never finish

    def fits(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bool:
        return meta.get("entries") == total and "parts" in meta

    def start() -> int:
        _abandon_changed_sources(atlas, config, config_key)
        dataset = {"kind": "labelled images", "name": ", ".join(images.sources) if images else BUNDLED,
                   "entries": total if images else None}
        return start_run(atlas, model, command=command or _default_command(model.key, canonical), config=config,
                         config_key=config_key, layers=[canonical], dataset=dataset)

    opened = open_run(atlas, config_key, start, checkpoint_key=config_key, checkpoint_fits=fits)
    resume = _resumed(atlas, config_key, opened.checkpoint)
    if resume is None:
        drop_checkpoints(atlas, config_key)  # parts of an attempt that cannot be continued
    elif on_resume is not None:
        on_resume(resume.done, total)
    with marked_interrupted(atlas, opened.run_id):
        checkpoints = ResponseCheckpoints(atlas, config_key, opened.run_id, total, resume,
                                          every_images=checkpoint_every, every_seconds=checkpoint_seconds,
                                          then=on_batch)
        try:
            measured = measure_multimodality(model, canonical, images, settings=settings, batch_size=batch_size,
                                             workers=workers, resume=resume, on_batch=checkpoints)
        except KeyboardInterrupt:
            checkpoints.keep()
            raise
        labelled = _store(atlas, opened.run_id, model, measured, threshold, label=label)
    drop_checkpoints(atlas, config_key)
    return MultimodalRun(measured, opened.run_id, 0 if resume is None else resume.done, labelled)


def _store(atlas: Atlas, run_id: int, model: LoadedModel, measured: MultimodalMeasurement, threshold: float, *,
           label: bool) -> tuple[int, ...]:
    """Register the layer, store the scores (and with ``label`` the concepts of the multimodal units as labels,
    in place of this source's earlier ones), finish the run (with the images measured); the labelled units."""
    result = measured.scores
    layer = result.layer
    atlas.register_layer(model.key, layer, aliases=model.aliases_of(layer), units=len(result.concept),
                         grid=model.layer_shape(layer)[1], run_id=run_id)
    atlas.write_multimodality(run_id, model.key, layer, result.to_dict(threshold))
    labelled: list[int] = []
    if label:
        labels = {record["unit"]: record["concept"] for record in result.units(threshold)}
        labelled = atlas.replace_labels(model.key, layer, labels, source=LABEL_SOURCE)
    atlas.finish_run(run_id, images=sum(result.images_per_concept), skipped=measured.skipped)
    return tuple(sorted(labelled))


def _default_command(model: str, layer: str) -> str:
    return shlex.join(["neuronscope", "multimodal", "--model", model, "--layer", layer])
