"""The streaming scan: every unit of one or more layers, one forward per batch, resumable.

    outcome = scan(model, open_source("photos/"), atlas, ["neurons"])

How a scan runs:

1. The source is listed (names and sizes); each entry's position is its
   ordinal. The run's config (model, weights, layers, source fingerprint, k,
   bins, seed, precision) is hashed into a key: the same command gives the
   same key, whatever ``batch_size`` or ``workers``.
2. If the atlas has an unfinished run with that key and its checkpoint, the
   scan restores the checkpoint and continues at the next entry (a batch
   boundary); otherwise it starts afresh.
3. Workers decode batches of consecutive entries; files already seen (same
   content) are skipped as ``duplicate`` (only files whose listed size another
   file shares can be: only their content keys are kept); one forward records
   every layer; each layer's :class:`LayerAccumulator` merges the batch.
4. Every ``checkpoint_every`` entries or ``checkpoint_seconds`` (5 minutes),
   whichever comes first, the whole state (a few arrays, bounded
   by units x k, plus those content keys) is written atomically into the atlas.
5. At the end, thumbnails of the top examples are drawn and everything is
   written to the catalogue in one transaction; the checkpoint is removed.

The streaming statistics do not depend on batch size, order or resume
points (see :mod:`neuronscope.mining.topk` and
:mod:`neuronscope.mining.histogram`), so a killed and resumed scan ends
identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from neuronscope.activations.geometry import LayerGeometry, layer_geometry
from neuronscope.activations.names import aliases_by_layer, resolve_layers
from neuronscope.activations.recorder import Recorder
from neuronscope.atlas.runs import (CHECKPOINT_SECONDS, CheckpointSchedule, abandon_stale_runs, config_digest,
                                    ctrl_c_held, drop_checkpoints, marked_interrupted, open_run, refuse_edited,
                                    start_run)
from neuronscope.atlas.store import Atlas
from neuronscope.atlas.thumbnails import thumbnail_name
from neuronscope.imagefiles import PILLOW_MAX_PIXELS, SkipCounts
from neuronscope.mining.accumulator import LayerAccumulator, ScanSettings
from neuronscope.mining.buckets import sample_hash
from neuronscope.mining.loader import Batch, iter_batches
from neuronscope.mining.results import Examples, HistogramArrays, ImageRecord, LayerScan, ScanOutcome
from neuronscope.mining.sources import Entry, ImageSource, size_twins
from neuronscope.mining.thumbnails import ThumbnailJob, ThumbnailProgressHook, render_thumbnails
from neuronscope.mining.topk import EMPTY
from neuronscope.models.loaded import LoadedModel, runs_in_eval

log = logging.getLogger(__name__)

#: ``format`` in a scan checkpoint's meta (:func:`write_checkpoint`). A checkpoint of another format is not
#: read: its run starts over (a checkpoint only lives while its run is unfinished, so no old layout is kept
#: readable). Bump it when the arrays or meta change. 2: records as UTF-8 JSON rows, sorted content keys, a
#: count per unit; checkpoints without ``format`` are older.
CHECKPOINT_FORMAT = 2


@dataclass(frozen=True)
class ScanProgress:
    """Reported after every batch: entries done (scanned + skipped) of ``total``, since ``resumed_from``."""

    done: int
    total: int
    images: int
    skipped: int
    resumed_from: int
    seconds: float

    @classmethod
    def of(cls, state: ScanState, done: int, total: int, resumed_from: int, started: float) -> ScanProgress:
        """The progress of a scan whose merged ``state`` covers ``done`` entries, started at ``started``
        (``time.perf_counter()``)."""
        return cls(done, total, state.images, state.skipped.total, resumed_from,
                   time.perf_counter() - started)


#: A scan's progress callback (``scan``'s and ``scan_ray``'s ``on_batch``): one :class:`ScanProgress` a call.
ScanProgressHook = Callable[[ScanProgress], None]
#: The old name of :data:`ScanProgressHook`, kept so imports keep working; not to be confused with
#: :data:`neuronscope.probing.words.ProgressHook`, which takes ``(done, total)``.
ProgressHook = ScanProgressHook


def content_key(sha256: str) -> int:
    """64 bits of a sha256, enough to recognise a file seen before (collisions: ~1 in 10^19 per pair)."""
    return int(sha256[:16], 16)


class ContentKeys:
    """The content keys (:func:`content_key`) of the files a scan has seen that may repeat, 8 bytes each.

    Keys grow with the collection (most files of a million JPEGs share their size with another). A
    Python set took 70 bytes a key and each checkpoint rewrote it at 0.34 s a million; here the keys
    of earlier checkpoints sit in a sorted uint64 array, and only those added since in a set.
    """

    def __init__(self, keys: Iterable[int] = ()) -> None:
        array = np.fromiter(keys, np.uint64)
        # A checkpoint's array is sorted already: checked in O(n) instead of sorted again (1 s a million).
        self._sorted = array if (array[1:] > array[:-1]).all() else np.unique(array)
        self._recent: set[int] = set()

    def __contains__(self, key: int) -> bool:
        if key in self._recent:
            return True
        at = int(np.searchsorted(self._sorted, np.uint64(key)))
        return at < len(self._sorted) and int(self._sorted[at]) == key

    def add(self, key: int) -> None:
        self._recent.add(key)

    def __len__(self) -> int:
        return len(self.array())

    def array(self) -> np.ndarray:
        """Every key, sorted (uint64): what a checkpoint stores. Folds the recent keys into the array."""
        if self._recent:
            # Insert the few recent keys into the sorted array: O(n) copying, not a sort of every key.
            recent = np.unique(np.fromiter(self._recent, np.uint64, len(self._recent)))
            at = np.searchsorted(self._sorted, recent)
            known = (self._sorted[np.minimum(at, len(self._sorted) - 1)] == recent if len(self._sorted)
                     else np.zeros(len(recent), bool))
            self._sorted = np.insert(self._sorted, at[~known], recent[~known])
            self._recent.clear()
        return self._sorted

    def __iter__(self) -> Iterator[int]:
        return iter(self.array().tolist())


def first_copies(ordinals: Sequence[int], sha256s: Sequence[str], may_repeat: np.ndarray | None, seen: ContentKeys
                 ) -> tuple[list[int], list[int]]:
    """The positions in a batch of the images whose content no earlier entry had, and their content keys (0 for
    an image that cannot repeat: ``may_repeat`` [entries] False at its ordinal; None: any may); ``seen`` takes
    the new keys. The one duplicate rule: a scan and a multimodality measurement skip the others."""
    kept, keys = [], []
    for position, (ordinal, sha256) in enumerate(zip(ordinals, sha256s)):
        key = 0
        if may_repeat is None or may_repeat[ordinal]:
            key = content_key(sha256)
            if key in seen:
                continue
            seen.add(key)
        kept.append(position)
        keys.append(key)
    return kept, keys


class ScanState:
    """Everything a scan carries between batches, and its checkpoint form.

    The Ray backend keeps one per shard on its workers and merges them
    (:meth:`merge`) on the driver.
    """

    def __init__(self, accumulators: dict[str, LayerAccumulator], may_repeat: np.ndarray | None = None) -> None:
        """``may_repeat`` [entries] bool: the entries that can be duplicates (:func:`size_twins`); only
        their content keys are kept. None: every entry's (a Ray shard, whose entries are few)."""
        self.accumulators = accumulators
        self.may_repeat = may_repeat
        self.next_ordinal = 0
        self.images = 0
        self.skipped = SkipCounts()  # by reason, with the first few files' names (entry names: no absolute path)
        self.seen = ContentKeys()  # of the entries that may repeat, for duplicates
        self.records: dict[int, ImageRecord] = {}  # ordinal -> image, for ordinals some unit still holds

    @classmethod
    def for_shapes(cls, shapes: dict[str, LayerGeometry], settings: ScanSettings,
                   device: str | torch.device = "cpu", may_repeat: np.ndarray | None = None) -> ScanState:
        """An empty state for layers of these geometries (:func:`~neuronscope.activations.layer_geometry`):
        each keeps ``units`` on its ``grid``, reading them as its ``layout`` says."""
        return cls({name: LayerAccumulator.for_geometry(geometry, settings, device)
                    for name, geometry in shapes.items()}, may_repeat)

    def merge(self, other: ScanState) -> None:
        """Fold in the state of a scan of other entries (same layers and settings): every statistic, the
        image records, counts and skip reasons. Order-free, like the statistics it merges.

        ``other`` holds no content keys: a Ray shard settles its duplicates before it scans and sends none back
        (:meth:`~neuronscope.mining.ray_backend.ShardScanner.scan_shard`), so there are none to merge."""
        if other.accumulators.keys() != self.accumulators.keys():
            raise ValueError(f"cannot merge a scan of {list(other.accumulators)} into {list(self.accumulators)}")
        if len(other.seen):
            raise ValueError("cannot merge a scan state that holds content keys: clear its `seen` first, as a Ray "
                             "shard does once its duplicates are settled")
        for name, accumulator in self.accumulators.items():
            accumulator.merge(other.accumulators[name])
        self.records.update(other.records)
        self.images += other.images
        self.skipped.merge(other.skipped)
        self.prune_records()

    def merge_batch(self, update: BatchUpdate) -> None:
        """Merge one batch into every layer, then keep its records (pruning those no unit holds any more)."""
        with _merge_stream(update):
            for name, accumulator in self.accumulators.items():
                accumulator.update(*update.reduced[name], update.ordinals, update.hashes)
        self.records.update(update.records)
        if len(self.records) > 4 * sum(a.units * (a.settings.top_k + a.settings.bottom_k)
                                       for a in self.accumulators.values()) + 4096:
            self.prune_records()

    def prune_records(self) -> None:
        """Forget images no unit holds any more (keeps memory bounded by units x k)."""
        live: set[int] = set()
        for accumulator in self.accumulators.values():
            live.update(int(o) for o in accumulator.live_ordinals())
        self.records = {ordinal: record for ordinal, record in self.records.items() if ordinal in live}

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        self.prune_records()
        arrays: dict[str, np.ndarray] = {}
        for index, accumulator in enumerate(self.accumulators.values()):
            arrays.update({f"L{index}.{name}": value for name, value in accumulator.state_dict().items()})
        ordinals = sorted(self.records)
        records = [self.records[o] for o in ordinals]
        arrays["records.ordinal"] = np.array(ordinals, np.int64)
        # UTF-8 bytes of one JSON list a record: a NumPy string array is UCS-4 (4 bytes a character), and
        # records grow with the scan (reservoir samples): 38 MB of a 44 MB checkpoint at 150k images.
        rows = [[r.id, r.source, r.name, r.sha256, r.width, r.height] for r in records]
        arrays["records.utf8"] = np.frombuffer(json.dumps(rows).encode(), np.uint8)
        arrays["seen"] = self.seen.array()
        meta = {"next_ordinal": self.next_ordinal, "images": self.images, "skipped": dict(self.skipped.counts),
                "skipped_examples": self.skipped.examples}
        return arrays, meta

    def fits(self, arrays: dict[str, np.ndarray]) -> bool:
        """Whether a checkpoint's arrays hold these layers' units (a layer read another way before, e.g. a
        channels-last one whose rows were taken for units, checkpointed another count)."""
        return all(arrays.get(f"L{index}.moments.mean", np.empty(0)).shape[:1] == (accumulator.units,)
                   for index, accumulator in enumerate(self.accumulators.values()))

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        for index, accumulator in enumerate(self.accumulators.values()):
            prefix = f"L{index}."
            accumulator.load_state_dict({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        records = [ImageRecord(*row) for row in json.loads(arrays["records.utf8"].tobytes())]
        self.records = dict(zip(arrays["records.ordinal"].tolist(), records))
        self.seen = ContentKeys(arrays["seen"])
        self.next_ordinal, self.images = int(meta["next_ordinal"]), int(meta["images"])
        # (a checkpoint of an earlier neuronscope kept no examples: those it counted stay unnamed)
        self.skipped = SkipCounts(Counter(meta["skipped"]), meta.get("skipped_examples", {}))


def repeat_mask(entries: Sequence[Entry]) -> np.ndarray:
    """[entries] bool: True for the entries that may be duplicates (their size is another's)."""
    mask = np.zeros(len(entries), bool)
    mask[size_twins(entries)] = True
    return mask


def scan_config(model: LoadedModel, layers: Sequence[str], source: ImageSource, settings: ScanSettings,
                max_pixels: int) -> tuple[dict, str]:
    """The options that change a scan's results, and their key (batch size and workers do not).

    Random weights have no file hash: their state dict's is the config's ``weights_sha256``, so a scan of
    another seed's init is another run, never resumed from this one's checkpoint.
    """
    config = {
        "model": model.key,
        "weights_sha256": model.weights_identity(),
        "layers": list(layers),
        "dataset": {"kind": source.kind, "name": source.name, "entries": len(source),
                    "fingerprint": source.fingerprint()},
        "settings": asdict(settings),
        "precision": model.precision.name,
        "max_pixels": max_pixels,
    }
    return config, config_digest(config, 20)


@dataclass(frozen=True)
class ScanPlan:
    """What both backends settle before a scan: the canonical ``layers`` and their ``aliases``, the run's
    ``config`` and its key, and every layer's geometry."""

    layers: list[str]
    aliases: dict[str, list[str]]
    config: dict
    config_key: str
    shapes: dict[str, LayerGeometry]


def prepare_scan(model: LoadedModel, source: ImageSource, layers: str | Sequence[str], settings: ScanSettings,
                 max_pixels: int) -> ScanPlan:
    """Resolve ``layers``, key the run's config and read each layer's geometry (one grey forward)."""
    refuse_edited(model)
    canonical = resolve_layers(model.module, layers, model.layer_aliases, model_key=model.key)
    config, config_key = scan_config(model, canonical, source, settings, max_pixels)
    geometry = layer_geometry(model, canonical)
    # In the order the layers were asked for, not fired: a checkpoint numbers its layers in this order.
    shapes = {name: geometry[name] for name in canonical}
    return ScanPlan(canonical, aliases_by_layer(model.layer_aliases), config, config_key, shapes)


@runs_in_eval
def scan(
    model: LoadedModel,
    source: ImageSource,
    atlas: Atlas,
    layers: str | Sequence[str],
    *,
    settings: ScanSettings = ScanSettings(),
    batch_size: int = 32,
    workers: int = 0,
    checkpoint_every: int = 2048,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    max_pixels: int = PILLOW_MAX_PIXELS,
    thumbnails: bool = True,
    command: str = "scan",
    on_batch: ScanProgressHook | None = None,
    on_thumbnails: ThumbnailProgressHook | None = None,
) -> ScanOutcome:
    """Scan ``source`` through ``model`` and store every unit of ``layers`` in ``atlas``.

    Args:
        layers: names, aliases or wildcards; all are recorded in one forward per batch.
        settings: top/bottom k, histogram bins, reservoir size, seed.
        batch_size: images per forward (results do not depend on it).
        workers: decoding processes (0: decode in this process).
        checkpoint_every: entries between checkpoints (state saved atomically in the atlas).
        checkpoint_seconds: seconds between checkpoints, whichever of the two comes first: a slow scan (a
            large model on a CPU) still checkpoints every few minutes.
        max_pixels: larger images (by their header) are skipped as ``too_many_pixels``.
        thumbnails: draw the top examples' thumbnails with the firing cell marked.
        command: recorded in the run (the CLI passes its command line).
        on_batch: called after every batch with a :class:`ScanProgress` (entries done of total, images,
            skipped, resumed from, seconds) for progress bars; tests raise in it to simulate a kill.
        on_thumbnails: called with ``(done, total)`` while the thumbnails are drawn after the last batch
            (``total``: those not reused from an earlier scan; ``(0, 0)`` when every one is), so a progress
            bar does not fall silent for that phase; not called with ``thumbnails=False``.

    Returns:
        A :class:`ScanOutcome`; the results are in ``atlas`` (``Atlas.unit``).

    Raises:
        NeuronscopeError: a Recorder's edits are attached to ``model`` (an atlas stores the model's own
            activations).
    """
    started = time.perf_counter()
    plan = prepare_scan(model, source, layers, settings, max_pixels)
    state = ScanState.for_shapes(plan.shapes, settings, model.device, may_repeat=repeat_mask(source.entries))
    run_id, _ = open_scan_run(atlas, plan, state, model, command, checkpoint_key=plan.config_key)
    resumed_from = state.next_ordinal

    def checkpoint() -> None:
        write_checkpoint(atlas, plan.config_key, state, run_id)

    def progress() -> None:
        if on_batch is not None:
            on_batch(ScanProgress.of(state, state.next_ordinal, len(source), resumed_from, started))

    with marked_interrupted(atlas, run_id):
        with Recorder(model, plan.layers, early_stop=True) as recorder:
            scan_range(model, recorder, source.name, source.entries[resumed_from:], state, settings.seed,
                       first=resumed_from, batch_size=batch_size, workers=workers, max_pixels=max_pixels,
                       schedule=CheckpointSchedule(checkpoint_every, checkpoint_seconds, done=resumed_from,
                                                   total=len(source)),
                       on_checkpoint=checkpoint, on_batch=progress)
        return finish_scan(model, source, atlas, state, run_id, plan, settings.seed, thumbnails=thumbnails,
                           max_pixels=max_pixels, workers=workers, started=started, resumed_from=resumed_from,
                           on_thumbnails=on_thumbnails)


def write_checkpoint(atlas: Atlas, checkpoint_key: str, state: ScanState, run_id: int, **extra: Any) -> None:
    """Save ``state`` (atomically) as the checkpoint of run ``run_id``; ``extra``: the backend's own meta."""
    arrays, meta = state.state_dict()
    atlas.save_checkpoint(checkpoint_key, arrays, {**meta, "format": CHECKPOINT_FORMAT, "run_id": run_id, **extra})


def finish_scan(model: LoadedModel, source: ImageSource, atlas: Atlas, state: ScanState, run_id: int,
                plan: ScanPlan, seed: int, *, thumbnails: bool, max_pixels: int, workers: int, started: float,
                resumed_from: int, on_thumbnails: ThumbnailProgressHook | None = None) -> ScanOutcome:
    """Turn a complete state into results: thumbnails (their progress to ``on_thumbnails``), one
    ``Atlas.write_scan`` transaction, checkpoints removed."""
    state.prune_records()
    layer_scans = [_layer_scan(model.key, name, plan.aliases.get(name, []), accumulator, state.records, seed)
                   for name, accumulator in state.accumulators.items()]
    thumbs = (_draw_thumbnails(model, source, atlas, layer_scans, state.records, max_pixels, workers, on_thumbnails)
              if thumbnails else {})
    image_records = {record.id: record for record in state.records.values()}
    skipped = state.skipped.as_dict()
    categories = {record.id: source.categories[record.name] for record in image_records.values()
                  if record.name in source.categories}
    atlas.write_scan(run_id, layer_scans, image_records, skipped, state.images, thumbs, categories,
                     skipped_files=state.skipped.files())
    drop_checkpoints(atlas, plan.config_key)
    return ScanOutcome(run_id=run_id, model=model.key, layers=layer_scans, images=state.images, skipped=skipped,
                       seconds=time.perf_counter() - started, resumed_from=resumed_from, image_records=image_records,
                       skip_counts=state.skipped)


def open_scan_run(atlas: Atlas, plan: ScanPlan, state: ScanState, model: LoadedModel, command: str, *,
                  checkpoint_key: str) -> tuple[int, dict | None]:
    """The run to write into (:func:`~neuronscope.atlas.runs.open_run`): a killed run of this config, with its
    checkpoint ``checkpoint_key`` (the backend's own: neither backend reads the other's) restored into
    ``state``, or a new one, once the runs of this scan over a source changed since are abandoned. Returns the
    run id and the restored checkpoint's meta (or None)."""
    def fits(arrays: dict[str, np.ndarray], meta: dict) -> bool:
        if meta.get("format") != CHECKPOINT_FORMAT:
            log.warning("run %d's checkpoint was written by an older neuronscope (checkpoint format %s, this one "
                        "reads %d): it starts over from the first file", meta["run_id"], meta.get("format", 1),
                        CHECKPOINT_FORMAT)
            return False
        if state.fits(arrays):
            return True
        log.warning("run %d's checkpoint holds another number of units than its layers have now (an older "
                    "neuronscope read a layer another way): it starts over", meta["run_id"])
        return False

    def start() -> int:
        abandon_changed_source_runs(atlas, plan.config, plan.config_key)
        return start_run(atlas, model, command=command, config=plan.config, config_key=plan.config_key,
                         layers=plan.layers, dataset=plan.config["dataset"])

    opened = open_run(atlas, plan.config_key, start, checkpoint_key=checkpoint_key, checkpoint_fits=fits)
    if opened.checkpoint is None:
        return opened.run_id, None
    state.load_state_dict(*opened.checkpoint)
    return opened.run_id, opened.checkpoint[1]


def abandon_changed_source_runs(atlas: Atlas, config: dict, config_key: str) -> None:
    """Mark abandoned the unfinished runs of this same scan (model, layers, settings, source name) whose source
    has been listed differently since, and drop their checkpoints (both backends')."""
    def without_listing(scan_config: dict) -> dict | None:
        dataset = scan_config.get("dataset")
        if not isinstance(dataset, dict):
            return None  # not a scan (a render job, ...)
        return {**scan_config, "dataset": {k: v for k, v in dataset.items() if k not in ("entries", "fingerprint")}}

    wanted = without_listing(json.loads(json.dumps(config)))  # as stored: tuples become lists
    for stale in abandon_stale_runs(atlas, config_key, lambda run: without_listing(run["config"]) == wanted):
        log.warning("the source changed since run %d was interrupted (%s entries then, %s now): it cannot "
                    "resume, so a new run starts; run %d is marked abandoned and its checkpoint dropped",
                    stale["id"], stale["config"]["dataset"]["entries"], config["dataset"]["entries"], stale["id"])


def scan_range(model: LoadedModel, recorder: Recorder, source_name: str, entries: Sequence[Entry],
               state: ScanState, seed: int, *, first: int, batch_size: int, workers: int, max_pixels: int,
               schedule: CheckpointSchedule | None = None, on_checkpoint: Callable[[], None] | None = None,
               on_batch: Callable[[], None] | None = None) -> None:
    """Scan consecutive ``entries`` (ordinals ``first..``) into ``state``, in batches counted from ``first``.

    Both backends' loop: the local scan over the whole source (from where it
    resumes), a Ray replica over one shard. ``on_checkpoint`` is called with
    every merge done whenever ``schedule`` says a checkpoint is due (counting
    entries by the next ordinal), and once more on a Ctrl-C, which is held
    until the batch at hand is in the state: checkpoints are minutes apart, and
    a Ctrl-C is a stop, not a crash. ``on_batch`` after every batch.
    """
    state.next_ordinal = first
    batches = iter_batches(entries, model.preprocess, batch_size=batch_size, workers=workers, first=first,
                           max_pixels=max_pixels)
    # The merges of batch i (NumPy, on the CPU) run in a thread while batch i + 1 is decoded and sent
    # through the model: on a GPU they would otherwise cost as much as the forward. Merges still run one
    # at a time and in order, so the results are those of a sequential scan.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan-merge") as merger:
        pending: Future | None = None
        try:
            for batch in batches:
                with ctrl_c_held():  # the state moves one whole batch at a time
                    update = forward_batch(model, recorder, source_name, state, batch, seed)
                    if pending is not None:
                        pending.result()
                    pending = merger.submit(state.merge_batch, update) if update is not None else None
                    state.next_ordinal = batch.last_ordinal + 1
                if on_checkpoint is not None and schedule is not None and schedule.due(state.next_ordinal):
                    if pending is not None:
                        pending.result()
                        pending = None
                    on_checkpoint()
                    schedule.saved(state.next_ordinal)
                if on_batch is not None:
                    on_batch()
        except KeyboardInterrupt:
            if pending is not None:
                pending.result()
                pending = None
            if on_checkpoint is not None and schedule is not None and state.next_ordinal > schedule.saved_items:
                on_checkpoint()  # what was scanned since the last checkpoint is kept
            raise
        if pending is not None:
            pending.result()


@dataclass
class BatchUpdate:
    """One batch's reduced activations, ready to merge: per layer ``(values, cells, map_means)`` on the
    model's device (see :func:`reduce_batch`), the kept images' ``ordinals`` [B] and reservoir ``hashes``
    [B], and their records. On a GPU, ``ready`` marks the end of the batch's forward on the model's stream."""

    reduced: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ordinals: np.ndarray
    hashes: np.ndarray
    records: dict[int, ImageRecord]
    ready: torch.cuda.Event | None = None


@functools.cache
def _side_stream(device: torch.device) -> torch.cuda.Stream:
    return torch.cuda.Stream(device)


@contextmanager
def _merge_stream(update: BatchUpdate) -> Iterator[None]:
    """Run a batch's merges on a CUDA stream of their own (a no-op on a CPU).

    The merges wait for their stream twice (the top-k finds the rows to re-sort, the maxima go to the
    host for the histograms). On the model's stream that wait would include the next batch's forward,
    which the main thread queues meanwhile: merge and forward would take turns instead of overlapping. The
    side stream waits only for this batch's forward (``update.ready``), and it is drained before the
    merge returns, so the next reader of the state (a checkpoint, the next merge) sees it complete.
    """
    if update.ready is None:
        yield
        return
    tensors = [tensor for reduced in update.reduced.values() for tensor in reduced]
    stream = _side_stream(tensors[0].device)
    stream.wait_event(update.ready)
    for tensor in tensors:
        tensor.record_stream(stream)  # made on the model's stream, read on this one: not freed early
    with torch.cuda.stream(stream):
        yield
    stream.synchronize()


def forward_batch(model: LoadedModel, recorder: Recorder, source_name: str, state: ScanState, batch: Batch,
                  seed: int) -> BatchUpdate | None:
    """Count the batch's skipped files, drop duplicates and run one forward; None when nothing is left."""
    for _ordinal, name, reason in batch.skipped:
        state.skipped.count(reason, name)
    keep, _ = first_copies(batch.ordinals, batch.sha256s, state.may_repeat, state.seen)
    for position in sorted(set(range(len(batch.ordinals))).difference(keep)):
        state.skipped.count("duplicate", batch.names[position])
    if not keep:
        return None
    ordinals = np.array([batch.ordinals[p] for p in keep], np.int64)
    hashes = np.array([sample_hash(batch.ids[p], seed) for p in keep], np.int64)
    # Indexing copies the whole batch (35 ms for 128 images at 288 px on one core, about a GPU forward's
    # time): only when a duplicate was dropped.
    pixels = batch.pixels if len(keep) == len(batch.ordinals) else batch.pixels[keep]
    pixels = pixels.to(model.device).float().div_(255.0)  # [B, 3, H, W] in [0, 1]
    with torch.no_grad():
        acts = recorder.run(model.preprocess.normalize(pixels))
    reduced = {name: accumulator.reduce(acts[name]) for name, accumulator in state.accumulators.items()}
    ready = None
    if pixels.is_cuda:
        ready = torch.cuda.Event()
        ready.record()
    records = {}
    for position, ordinal in zip(keep, ordinals):
        width, height = batch.sizes[position]
        records[int(ordinal)] = ImageRecord(batch.ids[position], source_name, batch.names[position],
                                            batch.sha256s[position], int(width), int(height))
    state.images += len(keep)
    return BatchUpdate(reduced, ordinals, hashes, records, ready)


def _ids(ordinals: np.ndarray, records: dict[int, ImageRecord]) -> np.ndarray:
    """Ordinals -> image ids (None for EMPTY slots), same shape, dtype object."""
    flat = [None if o == EMPTY else records[int(o)].id for o in ordinals.reshape(-1)]
    return np.array(flat, dtype=object).reshape(ordinals.shape)


def _layer_scan(model_key: str, layer: str, aliases: list[str], accumulator: LayerAccumulator,
                records: dict[int, ImageRecord], seed: int) -> LayerScan:
    moments, histogram = accumulator.moments, accumulator.histogram
    top_values, top_ordinals, top_cells = accumulator.top.arrays()
    bottom_values, bottom_ordinals, bottom_cells = accumulator.bottom.arrays()
    return LayerScan(
        model=model_key, layer=layer, aliases=aliases, units=accumulator.units, grid=accumulator.grid,
        count=moments.count.copy(), mean=moments.mean.copy(), std=moments.std, max=moments.max.copy(),
        min=moments.min.copy(), map_mean=moments.map_mean,
        top=Examples(_ids(top_ordinals, records), top_values, top_cells),
        bottom=Examples(_ids(bottom_ordinals, records), bottom_values, bottom_cells),
        histogram=HistogramArrays(histogram.exponent.copy(), histogram.first.copy(), histogram.counts.copy(),
                                  _ids(histogram.sample_ordinals, records), histogram.nonfinite.copy(), seed),
    )


def _draw_thumbnails(model: LoadedModel, source: ImageSource, atlas: Atlas, layer_scans: list[LayerScan],
                     records: dict[int, ImageRecord], max_pixels: int, workers: int,
                     on_drawn: ThumbnailProgressHook | None) -> dict[tuple, str]:
    """One marked PNG per (image, grid, cell) among the top examples; returns ``{(sha256, *cell): path}``.
    ``on_drawn`` counts only the PNGs drawn now, not those reused."""
    ordinal_of = {record.id: ordinal for ordinal, record in records.items()}
    wanted: dict[int, set[tuple[int, int, int, int]]] = {}
    for layer_scan in layer_scans:
        rows, cols = layer_scan.grid
        for unit_ids, unit_cells in zip(layer_scan.top.ids, layer_scan.top.cells):
            for image_id, (row, col) in zip(unit_ids, unit_cells):
                if image_id is not None:
                    wanted.setdefault(ordinal_of[image_id], set()).add((rows, cols, int(row), int(col)))
    thumbs: dict[tuple, str] = {}
    jobs = []
    for ordinal, cells in sorted(wanted.items()):
        sha256 = records[ordinal].sha256
        missing = []
        for cell in sorted(cells):
            drawn = atlas.reuse_thumbnail(thumbnail_name(sha256, cell[:2], cell[2:], model.preprocess))
            if drawn is not None:  # by an earlier (or killed) scan
                thumbs[(sha256, *cell)] = drawn
            else:
                missing.append(cell)
        if missing:
            jobs.append(ThumbnailJob(source.entries[ordinal], ordinal, sha256, tuple(missing)))
    for sha256, cell, name, png in render_thumbnails(jobs, model.preprocess, workers=workers, max_pixels=max_pixels,
                                                     on_drawn=on_drawn):
        thumbs[(sha256, *cell)] = atlas.save_thumbnail(name, png)
    return thumbs
