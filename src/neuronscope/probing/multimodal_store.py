"""Multimodality into an atlas: a recorded run, checkpoints while the images stream, the scores stored.

    run = measure_multimodality_into(atlas, model, "neurons", labelled_images(["photos/"]))
    atlas.unit(model.key, "neurons", 7)["multimodality"]   # {"concept", "score", ...}

The same call after a kill continues from the last checkpoint of image responses. With ``images=None`` the
bundled mini CLIP's card measurement is stored (a few seconds: no checkpoint). ``label=True`` also labels
each multimodal unit with its concept (source ``auto:multimodality``), never replacing a label from
elsewhere (a user's, the card's).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..activations import layer_geometry
from ..analysis.multimodality import DEFAULT_THRESHOLD, Multimodality
from ..atlas import Atlas
from ..atlas.runs import (CHECKPOINT_SECONDS, CheckpointSchedule, config_digest, drop_checkpoints,
                          marked_interrupted, open_run, refuse_edited, start_run)
from ..models.loaded import LoadedModel
from .multimodal import ImageResponses, LabelledImages, ResponsesHook, measure_multimodality
from .raster import RasterSettings

#: The label source of the concepts ``label=True`` writes.
LABEL_SOURCE = "auto:multimodality"
#: Images between checkpoints (also every :data:`~neuronscope.atlas.runs.CHECKPOINT_SECONDS`).
CHECKPOINT_IMAGES = 2048
#: What the bundled measurement is recorded as reading.
BUNDLED = "mini-clip test split (held-out drawings, held-out-font words)"


@dataclass(frozen=True)
class MultimodalRun:
    """What :func:`measure_multimodality_into` did: the measurement, its run (None: not stored), the entry it
    resumed at (0: from the first), the unreadable files skipped, and the units it labelled."""

    result: Multimodality
    run_id: int | None
    resumed_from: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    labelled: tuple[int, ...] = ()


def images_fingerprint(images: LabelledImages) -> str:
    """A hash of the listing and its labels (names, sizes, concepts): a resumed run checks nothing changed."""
    digest = hashlib.sha256("\0".join(images.concepts).encode())
    for entry, label in zip(images.entries, images.labels.tolist()):
        digest.update(f"\0{entry.name}\0{entry.size}\0{label}".encode())
    return digest.hexdigest()


def run_config(model: LoadedModel, layer: str, images: LabelledImages | None, settings: RasterSettings,
               threshold: float) -> tuple[dict[str, Any], str]:
    """The run's config (what decides its results) and key; batch size and workers are not in it."""
    config: dict[str, Any] = {"model": model.key, "weights_sha256": model.weights_identity(), "layer": layer,
                              "precision": model.precision.name, "threshold": threshold}
    if images is None:
        config["images"] = BUNDLED
    else:
        config.update(images=list(images.sources), images_sha256=images_fingerprint(images),
                      concepts=list(images.concepts), settings=settings.to_dict())
    config = json.loads(json.dumps(config))  # as the atlas stores it
    return config, "multimodality-" + config_digest(config, 20)


class ResponseCheckpoints:
    """The ``on_batch`` hook that saves the image responses so far as the run's checkpoint."""

    def __init__(self, atlas: Atlas, config_key: str, run_id: int, total: int, done: int, *, every_images: int,
                 every_seconds: float, then: ResponsesHook | None) -> None:
        self.atlas, self.config_key, self.run_id, self.total, self.then = atlas, config_key, run_id, total, then
        self.schedule = CheckpointSchedule(every_images, every_seconds, done=done, total=total)

    def __call__(self, state: ImageResponses) -> None:
        if self.schedule.due(state.done):
            self.atlas.save_checkpoint(self.config_key,
                                       {"values": state.values.numpy(), "labels": state.labels.numpy()},
                                       {"run_id": self.run_id, "done": state.done, "entries": self.total,
                                        "skipped": state.skipped})
            self.schedule.saved(state.done)
        if self.then is not None:
            self.then(state)


def _resumed(checkpoint: tuple[dict[str, np.ndarray], dict[str, Any]] | None) -> ImageResponses | None:
    if checkpoint is None:
        return None
    arrays, meta = checkpoint
    return ImageResponses(int(meta["done"]), torch.from_numpy(arrays["values"]), torch.from_numpy(arrays["labels"]),
                          dict(meta.get("skipped") or {}))


def measure_multimodality_into(atlas: Atlas, model: LoadedModel, layer: str, images: LabelledImages | None, *,
                               settings: RasterSettings = RasterSettings(), threshold: float = DEFAULT_THRESHOLD,
                               label: bool = False, command: str | None = None, batch_size: int = 32,
                               workers: int = 0, checkpoint_every: int = CHECKPOINT_IMAGES,
                               checkpoint_seconds: float = CHECKPOINT_SECONDS,
                               on_batch: ResponsesHook | None = None) -> MultimodalRun:
    """Measure ``layer``'s multimodality (:func:`~neuronscope.probing.multimodal.measure_multimodality`, or the
    bundled card's with ``images=None``) and store it in ``atlas``, resumably; see the module's docstring."""
    canonical = model.resolve_layer(layer)
    config, config_key = run_config(model, canonical, images, settings, threshold)
    total = 0 if images is None else len(images)
    refuse_edited(model)

    def fits(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bool:
        return meta.get("entries") == total and len(arrays["values"]) == len(arrays["labels"])

    def start() -> int:
        dataset = {"kind": "labelled images", "name": ", ".join(images.sources) if images else BUNDLED,
                   "entries": total}
        return start_run(atlas, model, command=command or _default_command(model.key, canonical), config=config,
                         config_key=config_key, layers=[canonical], dataset=dataset)

    opened = open_run(atlas, config_key, start, checkpoint_key=config_key, checkpoint_fits=fits)
    resume = _resumed(opened.checkpoint)
    with marked_interrupted(atlas, opened.run_id):
        checkpoints = ResponseCheckpoints(atlas, config_key, opened.run_id, total,
                                          0 if resume is None else resume.done, every_images=checkpoint_every,
                                          every_seconds=checkpoint_seconds, then=on_batch)
        result, skipped = measure_multimodality(model, canonical, images, settings=settings, batch_size=batch_size,
                                                workers=workers, resume=resume, on_batch=checkpoints)
        labelled = _store(atlas, opened.run_id, model, result, threshold, label=label, images=total, skipped=skipped)
    drop_checkpoints(atlas, config_key)
    return MultimodalRun(result, opened.run_id, 0 if resume is None else resume.done, skipped, labelled)


def _store(atlas: Atlas, run_id: int, model: LoadedModel, result: Multimodality, threshold: float, *, label: bool,
           images: int, skipped: dict[str, int]) -> tuple[int, ...]:
    """Register the layer, store the scores (and the concepts as labels), finish the run; the labelled units."""
    layer = result.layer
    atlas.register_layer(model.key, layer, aliases=model.aliases_of(layer), units=len(result.concept),
                         grid=_grid(model, layer), run_id=run_id)
    atlas.write_multimodality(run_id, model.key, layer, result.to_dict(threshold))
    labelled = []
    if label:
        for record in result.units(threshold):
            source = atlas.label_source(model.key, layer, record["unit"])
            if source in (None, LABEL_SOURCE):
                atlas.set_label(model.key, layer, record["unit"], record["concept"], source=LABEL_SOURCE)
                labelled.append(record["unit"])
    atlas.finish_run(run_id, images=images, skipped=skipped)
    return tuple(sorted(labelled))


def _grid(model: LoadedModel, layer: str) -> tuple[int, int]:
    return layer_geometry(model, [layer])[layer].grid


def _default_command(model: str, layer: str) -> str:
    return shlex.join(["neuronscope", "multimodal", "--model", model, "--layer", layer])
