"""The scan on Ray: the local scanner's statistics, computed by model replicas on a Ray cluster and merged.

    outcome = scan_ray(model, open_source("photos/"), atlas, ["neurons"], workers=4)

How a Ray scan runs (the local scanner's steps, spread out):

1. The source is listed, the config hashed and the run started or resumed
   exactly as in :func:`neuronscope.mining.scan`: the config key is the same,
   because the results are.
2. The entries are cut into shards: ranges of consecutive ordinals made of
   whole batches (``batch_size``) counted from ordinal 0, so every forward sees
   the images a local scan with that batch size would batch together.
3. Duplicates: the local scanner skips a file whose content it already saw at
   a smaller ordinal; shards cannot see each other. So the files that could be
   duplicates (those whose size another file shares) are read and hashed
   first (no decoding; by Ray Data tasks when there are many), once per run
   (the keys are checkpointed beside the run's state, so a resume does not
   read them again), and each shard is told which of its contents occur at
   smaller ordinals.
4. Ray Data maps the shards through a pool of actors, each holding a model
   replica (one GPU each on a cluster with GPUs, one CPU each otherwise).
   An actor decodes its shard, runs the forwards and accumulates a
   :class:`~neuronscope.mining.scanner.ScanState` with the local code path,
   and returns it as one partial result.
5. The driver merges partial results as they arrive (:meth:`ScanState.merge`,
   associative and commutative: top/bottom-k, moments, dyadic histograms,
   k-smallest-hash reservoirs, image records, skip counts), checkpoints the
   merged state with the ordinal ranges done, and ends through the same
   :func:`~neuronscope.mining.scanner.finish_scan` as a local scan
   (thumbnails drawn on the driver, one ``Atlas.write_scan`` transaction).

A killed Ray scan (driver or cluster), started again with the same command,
restores the merged state and the ranges done, scans only the rest and ends
identical to an uninterrupted scan; the shards in flight when it died are
scanned again. Identical means the same top-k ids, cells, histogram counts
and reservoir ids as the local backend; activations agree within 1e-5
(replicas may run other kernels than the driver, e.g. on a GPU).

Ray is optional (``pip install 'neuronscope[distributed]'``) and imported
only when a Ray scan starts.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import pickle
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from neuronscope.activations.recorder import Recorder
from neuronscope.atlas.runs import CHECKPOINT_SECONDS, CheckpointSchedule, marked_interrupted
from neuronscope.atlas.store import Atlas
from neuronscope.errors import NeuronscopeError
from neuronscope.imagefiles import PILLOW_MAX_PIXELS
from neuronscope.mining.accumulator import ScanSettings
from neuronscope.mining.results import ScanOutcome
from neuronscope.mining.scanner import (
    ContentKeys,
    LayerGeometry,
    ScanPlan,
    ScanProgress,
    ScanProgressHook,
    ScanState,
    content_key,
    finish_scan,
    open_scan_run,
    prepare_scan,
    scan_range,
    write_checkpoint,
)
from neuronscope.mining.sources import Entry, ImageSource, content_sha256, size_twins
from neuronscope.mining.thumbnails import ThumbnailProgressHook
from neuronscope.models.loaded import LoadedModel

INSTALL_HINT = "pip install 'neuronscope[distributed]'"

#: This backend's checkpoint of a run is ``config_key + RAY_SUFFIX``: each backend reads only its own (both are
#: dropped when the run finishes, :func:`~neuronscope.atlas.runs.drop_checkpoints`).
RAY_SUFFIX = "-ray"
#: Beside it, ``+ HASHES_SUFFIX``: the content keys of the source's size twins, hashed once per run.
HASHES_SUFFIX = "-hashes"

#: Files hashed on the driver for duplicates, at most; more go to Ray Data tasks of HASH_CHUNK files each.
HASH_ON_DRIVER = 256
HASH_CHUNK = 256

#: At most this many entries per shard: bounds the work a killed scan redoes and the wait for a partial result.
MAX_SHARD_ENTRIES = 4096


def import_ray() -> Any:
    """``ray`` with Ray Data, or a clear error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the scan runs on Ray Data
    except ImportError as error:
        raise NeuronscopeError(f"--backend ray needs Ray with Ray Data ({error}); install it with: "
                               f"{INSTALL_HINT}") from None
    return ray


# ---------------------------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class Shard:
    """Consecutive entries ``start..start + len(entries) - 1`` of a source, scanned by one actor call.

    ``seen_before``: content keys of this shard's files that occur at smaller
    ordinals (in other shards); the actor skips them as ``duplicate``, as the
    local scanner would.
    """

    start: int
    entries: tuple[Entry, ...]
    seen_before: frozenset[int] = frozenset()

    @property
    def stop(self) -> int:
        return self.start + len(self.entries)


def shard_ranges(total: int, done: Sequence[tuple[int, int]], shard_size: int) -> list[tuple[int, int]]:
    """The ranges still to scan: ``[0, total)`` minus ``done``, cut at multiples of ``shard_size``.

    Cutting on one grid from ordinal 0 (not from where the gaps start) keeps
    batch boundaries where a local scan has them, on resume too.
    """
    ranges = []
    position = 0
    for done_start, done_stop in [*sorted(done), (total, total)]:
        while position < done_start:
            stop = min(done_start, (position // shard_size + 1) * shard_size)
            ranges.append((position, stop))
            position = stop
        position = max(position, done_stop)
    return ranges


def merge_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of ``[start, stop)`` ranges as sorted, disjoint, non-touching ranges."""
    merged: list[list[int]] = []
    for start, stop in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return [(start, stop) for start, stop in merged]


def default_shard_size(total: int, batch_size: int, replicas: int) -> int:
    """Whole batches; about four shards per replica (load balance), at most :data:`MAX_SHARD_ENTRIES`."""
    batches = math.ceil(total / (4 * replicas * batch_size))
    return batch_size * max(1, min(batches, MAX_SHARD_ENTRIES // batch_size))


# ---------------------------------------------------------------------------------------------- duplicates


def hash_entries(row: dict[str, Any]) -> dict[str, Any]:
    """Content keys of some entries: ``{"entries": pickled [(ordinal, Entry)]}`` ->
    ``{"keys": pickled (ordinals [n] int64, keys [n] uint64)}``, unreadable entries left out (a Ray Data task)."""
    ordinals, keys = [], []
    for ordinal, entry in pickle.loads(row["entries"]):
        try:
            keys.append(content_key(content_sha256(entry.read())))
        except OSError:  # missing or unreadable: the scan counts it, it has no content
            continue
        ordinals.append(ordinal)
    return {"keys": pickle.dumps((np.array(ordinals, np.int64), np.array(keys, np.uint64)))}


def content_keys(ray: Any, entries: Sequence[Entry], ordinals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ordinals, keys)`` of the readable entries among ``ordinals``: hashed here when they are few
    (a Ray Data job costs seconds to start), else by Ray Data tasks, :data:`HASH_CHUNK` entries each."""
    chunks = [[(int(o), entries[int(o)]) for o in ordinals[i:i + HASH_CHUNK]]
              for i in range(0, len(ordinals), HASH_CHUNK)]
    if len(ordinals) <= HASH_ON_DRIVER:
        rows = (hash_entries({"entries": pickle.dumps(chunk)}) for chunk in chunks)
    else:
        rows = ray.data.from_items([{"entries": pickle.dumps(chunk)} for chunk in chunks],
                                   override_num_blocks=len(chunks)).map(hash_entries, num_cpus=1).iter_rows()
    answers = [pickle.loads(row["keys"]) for row in rows]
    if not answers:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    return np.concatenate([a for a, _ in answers]), np.concatenate([k for _, k in answers])


def seen_before(ordinals: np.ndarray, keys: np.ndarray,
                ranges: Sequence[tuple[int, int]]) -> dict[int, frozenset[int]]:
    """For each range (by its start): the content keys of its entries that occur at a smaller ordinal.

    ``ordinals``/``keys`` [n]: content keys of every entry that may be a
    duplicate (:func:`size_twins`), scanned ranges included. Same content
    means same decoding outcome, so a key seen earlier marks exactly the files
    the local scanner skips as ``duplicate`` (the first copy of a broken file
    is broken too and never enters its set of seen keys).
    """
    first_ordinal: dict[int, int] = {}
    for ordinal, key in sorted(zip(ordinals.tolist(), keys.tolist())):
        first_ordinal.setdefault(key, ordinal)
    starts = np.array([start for start, _ in ranges], np.int64)
    earlier: dict[int, set[int]] = {start: set() for start, _ in ranges}
    for ordinal, key in zip(ordinals.tolist(), keys.tolist()):
        position = int(np.searchsorted(starts, ordinal, side="right")) - 1  # the range that may hold it
        if position < 0 or ordinal >= ranges[position][1]:
            continue  # in a range already scanned
        if first_ordinal[key] < ranges[position][0]:
            earlier[ranges[position][0]].add(key)
    return {start: frozenset(keys_) for start, keys_ in earlier.items()}


# ---------------------------------------------------------------------------------------------- the actor


class ShardScanner:
    """A Ray Data actor: one model replica that scans whole shards into partial :class:`ScanState` s.

    Args (``fn_constructor_kwargs``):
        model: the driver's model, on the CPU (moved here to this actor's GPU, if it has one).
        layers: canonical layer names; ``shapes``: their geometry (the driver's :func:`prepare_scan`).
        settings, batch_size, max_pixels: as the local scan.
        source_name: the source's name (image records carry it); the entries come with each shard.
    """

    def __init__(self, model: LoadedModel, layers: list[str], shapes: dict[str, LayerGeometry],
                 settings: ScanSettings, batch_size: int, max_pixels: int, source_name: str) -> None:
        import ray

        gpus = ray.get_gpu_ids()
        device = torch.device("cuda" if gpus and torch.cuda.is_available() else "cpu")
        if device.type == "cpu":
            # Ray gives an actor num_cpus cores; torch would otherwise start a thread per core of the node.
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
            torch.set_num_threads(max(1, int(cpus)))
        self.model = replace(model, module=model.module.to(device), device=device)
        self.layers = layers
        self.shapes = shapes
        self.settings = settings
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.source_name = source_name

    def scan_shard(self, shard: Shard) -> ScanState:
        """The partial state of one shard, computed with the local scanner's loop."""
        state = ScanState.for_shapes(self.shapes, self.settings, self.model.device)
        state.seen = ContentKeys(shard.seen_before)
        with Recorder(self.model, self.layers, early_stop=True) as recorder:
            scan_range(self.model, recorder, self.source_name, shard.entries, state, self.settings.seed,
                       first=shard.start, batch_size=self.batch_size, workers=0, max_pixels=self.max_pixels)
        state.seen = ContentKeys()  # the driver needs no keys: duplicates were settled before the scan
        state.prune_records()
        for accumulator in state.accumulators.values():
            accumulator.to("cpu")  # the driver may have no GPU
        return state

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        """Ray Data batch of pickled shards -> pickled ``(start, stop, ScanState)`` partial results."""
        partials = []
        for payload in batch["shard"]:
            shard: Shard = pickle.loads(payload)
            partials.append(pickle.dumps((shard.start, shard.stop, self.scan_shard(shard))))
        return {"partial": partials}


# ---------------------------------------------------------------------------------------------- the driver


def replica_plan(ray: Any, workers: int) -> tuple[int, int]:
    """``(replicas, gpus per replica)``: one per GPU on a cluster with GPUs, else one per CPU.

    ``workers`` > 0 asks for that many (at most one per GPU, or per CPU, of the cluster).
    """
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if gpus:
        return (min(workers, gpus) if workers else gpus), 1
    return (min(workers, cpus) if workers else cpus), 0


def scan_ray(
    model: LoadedModel,
    source: ImageSource,
    atlas: Atlas,
    layers: str | Sequence[str],
    *,
    settings: ScanSettings = ScanSettings(),
    batch_size: int = 32,
    workers: int = 0,
    shard_size: int | None = None,
    checkpoint_every: int = 2048,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    max_pixels: int = PILLOW_MAX_PIXELS,
    thumbnails: bool = True,
    command: str = "scan",
    address: str | None = None,
    on_batch: ScanProgressHook | None = None,
    on_thumbnails: ThumbnailProgressHook | None = None,
) -> ScanOutcome:
    """:func:`neuronscope.mining.scan` on Ray: same arguments, same results, same atlas writes.

    Args:
        workers: model replicas (Ray actors); 0: one per GPU of the cluster, or one per CPU without GPUs.
        shard_size: entries per shard, a multiple of ``batch_size`` (default: about four shards per replica).
        checkpoint_every, checkpoint_seconds: entries merged, or seconds, between checkpoints, whichever comes
            first (a checkpoint is written after a whole shard).
        address: the Ray cluster (``ray.init(address=...)``); None: ``RAY_ADDRESS`` if set, else a local
            Ray started here and shut down at the end. A Ray already initialised in this process is used as is.
        on_batch: called after every merged shard.
        on_thumbnails: the thumbnails drawn by the driver after the last shard, as ``scan``'s.

    Every worker node must have ``neuronscope`` installed and read the
    source's paths; the driver reads them too (hashing, thumbnails).
    """
    if shard_size is not None and (shard_size < 1 or shard_size % batch_size):
        # Before Ray starts and before the run is recorded: a bad option must leave nothing behind.
        raise NeuronscopeError(f"shard_size={shard_size} must be a positive multiple of the batch size "
                               f"{batch_size}; pass e.g. {batch_size * max(1, round(shard_size / batch_size))}")
    ray = import_ray()
    started = time.perf_counter()
    plan = prepare_scan(model, source, layers, settings, max_pixels)
    checkpoint_key = plan.config_key + RAY_SUFFIX
    state = ScanState.for_shapes(plan.shapes, settings)
    # Ray first: a cluster that cannot be joined (a bad --ray-address) must not leave a run in the atlas.
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, include_dashboard=False)
    try:
        run_id, meta = open_scan_run(atlas, plan, state, model, command, checkpoint_key=checkpoint_key)
        done = merge_ranges([tuple(r) for r in meta["done"]]) if meta else []
        resumed_from = sum(stop - start for start, stop in done)
        with marked_interrupted(atlas, run_id):
            replicas, gpus = replica_plan(ray, workers)
            size = shard_size or default_shard_size(len(source), batch_size, replicas)
            ranges = shard_ranges(len(source), done, size)
            # Replicas receive the model from the driver (no weights file needed on workers), as a CPU copy.
            shipped = model if model.device.type == "cpu" else replace(
                model, module=copy.deepcopy(model.module).cpu(), device=torch.device("cpu"))
            earlier = seen_before(*twin_content_keys(ray, atlas, source, checkpoint_key + HASHES_SUFFIX, run_id),
                                  ranges) if ranges else {}
            partials = _run_shards(ray, shipped, source, plan, settings, ranges, earlier, replicas=replicas,
                                   gpus=gpus, batch_size=batch_size, max_pixels=max_pixels)
            schedule = CheckpointSchedule(checkpoint_every, checkpoint_seconds, done=resumed_from, total=len(source))
            with contextlib.closing(partials):  # a kill or error stops the Ray pipeline before Ray is shut down
                for start, stop, partial in partials:
                    state.merge(partial)
                    done = merge_ranges([*done, (start, stop)])
                    finished = sum(b - a for a, b in done)
                    if schedule.due(finished):
                        write_checkpoint(atlas, checkpoint_key, state, run_id, backend="ray", done=done)
                        schedule.saved(finished)
                    if on_batch is not None:
                        on_batch(ScanProgress.of(state, finished, len(source), resumed_from, started))
            return finish_scan(model, source, atlas, state, run_id, plan, settings.seed, thumbnails=thumbnails,
                               max_pixels=max_pixels, workers=min(workers, os.cpu_count() or 1), started=started,
                               resumed_from=resumed_from, on_thumbnails=on_thumbnails)
    finally:
        if started_ray:
            ray.shutdown()


def twin_content_keys(ray: Any, atlas: Atlas, source: ImageSource, hashes_key: str,
                      run_id: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`content_keys` of the source's size twins, from the run's ``hashes_key`` checkpoint when it has
    one: hashed once per run, not again on every resume (reading every twin of a million files again)."""
    saved = atlas.load_checkpoint(hashes_key)
    if saved is not None and saved[1].get("run_id") == run_id:
        return saved[0]["ordinals"], saved[0]["keys"]
    ordinals, keys = content_keys(ray, source.entries, size_twins(source.entries))
    atlas.save_checkpoint(hashes_key, {"ordinals": ordinals, "keys": keys}, {"run_id": run_id})
    return ordinals, keys


def _run_shards(ray: Any, model: LoadedModel, source: ImageSource, plan: ScanPlan, settings: ScanSettings,
                ranges: list[tuple[int, int]], earlier: dict[int, frozenset[int]], *, replicas: int, gpus: int,
                batch_size: int, max_pixels: int) -> Iterator[tuple[int, int, ScanState]]:
    """The scan pass over ``ranges``; yields ``(start, stop, partial state)`` as they come.

    ``earlier``: per range (by its start), the content keys that occur at smaller ordinals (:func:`seen_before`):
    duplicates are settled over the whole source, ranges already scanned included.
    """
    if not ranges:
        return
    shards = [{"shard": pickle.dumps(Shard(start, source.entries[start:stop], earlier[start]))}
              for start, stop in ranges]
    dataset = ray.data.from_items(shards, override_num_blocks=len(shards)).map_batches(
        ShardScanner, batch_size=1, compute=ray.data.ActorPoolStrategy(size=replicas),
        num_gpus=gpus, num_cpus=1,  # a CPU decodes for each replica, on GPU nodes too
        fn_constructor_kwargs={"model": model, "layers": plan.layers, "shapes": plan.shapes, "settings": settings,
                               "batch_size": batch_size, "max_pixels": max_pixels, "source_name": source.name})
    # The scan reports its own progress. The setting is the process's: a Ray already running here (scan_ray
    # reuses it) goes on with the user's own after the scan.
    context = ray.data.DataContext.get_current()
    shown, context.enable_progress_bars = context.enable_progress_bars, False
    try:
        rows = iter(dataset.iter_rows())
        try:
            for row in rows:
                yield pickle.loads(row["partial"])
        finally:
            rows.close()  # on an early exit, stop the pipeline and free its actors now, not at garbage collection
    finally:
        context.enable_progress_bars = shown
