"""The life of a run in an atlas, shared by every command that writes one (scan, words, the text side,
visualize).

    config_key = "words-" + config_digest(config, 20)
    opened = open_run(atlas, config_key, start, checkpoint_key=config_key, checkpoint_fits=fits)
    with marked_interrupted(atlas, opened.run_id):
        ...                                  # the work, checkpointed as it goes
    drop_checkpoints(atlas, config_key)

A run is recorded ``running`` before its work starts, keyed by a digest of
what decides its results (its config key; each caller keeps its own recipe:
a key must never change, or a killed run could not resume). If its command
fails or is killed, the run is marked ``interrupted``; a SIGKILL leaves it
``running``, and either way the same command started again finds it by its
key and continues it from its checkpoint. A run whose key can never come back
(its input changed since) is marked ``abandoned`` and its checkpoints dropped.
While a process works on a run it holds the run's lock (:func:`claim_run`), until
the run stops (finished, interrupted, abandoned): the same command started
meanwhile is refused instead of doing the work twice.

Pure catalogue and JSON: no torch here.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any

from neuronscope.atlas.files import path_slug
from neuronscope.errors import NeuronscopeError

try:
    import fcntl
except ImportError:  # Windows: its own byte-range locks, which the system also drops when the process dies
    fcntl = None
    import msvcrt

if TYPE_CHECKING:
    import numpy as np

    from neuronscope.atlas.store import Atlas
    from neuronscope.models.loaded import LoadedModel

#: A checkpoint as the atlas stores it: arrays, and a JSON meta holding the ``run_id`` that wrote it.
Checkpoint = tuple[dict[str, "np.ndarray"], dict[str, Any]]

#: The statuses of a run that may still resume.
UNFINISHED = ("running", "interrupted")

#: A long job checkpoints at least this often, whatever its item count (:class:`CheckpointSchedule`).
CHECKPOINT_SECONDS = 300.0


def config_digest(value: Any, length: int) -> str:
    """The first ``length`` hex digits of the sha256 of ``value`` as canonical JSON (keys sorted): the part of a
    config key that names what decides a run's results."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def model_identity(model: LoadedModel) -> str:
    """What tells a model's results apart in a key: its key (``RN50x4@openai`` names its weights), plus the
    state dict's sha256 when the key does not name them (``NAME@random`` is every seed's init)."""
    return model.key if model.weights_sha256 is not None else f"{model.key}#{model.weights_identity()}"


@dataclass(frozen=True)
class OpenedRun:
    """The run a job writes into (:func:`open_run`), and the checkpoint it continues from (None: from the start)."""

    run_id: int
    checkpoint: Checkpoint | None = None


def open_run(atlas: Atlas, config_key: str, start: Callable[[], int], *, checkpoint_key: str | None = None,
             checkpoint_fits: Callable[[dict[str, np.ndarray], dict[str, Any]], bool] = lambda arrays, meta: True,
             reopen_finished: bool = False) -> OpenedRun:
    """The run of ``config_key`` to write into, marked ``running``: the latest unfinished one (a killed job),
    else with ``reopen_finished`` the latest finished one (a job whose units are all stored, asked for more),
    else a new one recorded by ``start()`` (which returns its id).

    ``checkpoint_key``: the job's checkpoint, restored when it was written by the run resumed and
    ``checkpoint_fits`` takes it; any other checkpoint there is stale (of a run that finished, was never
    recorded, or holds another shape of state) and is dropped: the run starts over.
    """
    claim_run(atlas, config_key)
    run_id = atlas.unfinished_run(config_key)
    if run_id is None and reopen_finished:
        run_id = atlas.finished_run(config_key)
    checkpoint = None
    if checkpoint_key is not None:
        checkpoint = _checkpoint_of(atlas, checkpoint_key, run_id, checkpoint_fits)
    if run_id is None:
        run_id = start()
    else:
        atlas.set_run_status(run_id, "running")
    _record_owner(atlas.run_locks[config_key], run_id)
    return OpenedRun(run_id, checkpoint)


class RunBusyError(NeuronscopeError):
    """A run another live process is working on (:func:`claim_run`)."""


def claim_run(atlas: Atlas, config_key: str) -> None:
    """Hold the lock of ``config_key``'s runs (``ATLAS/runs/KEY.lock``) until the run stops
    (:meth:`~neuronscope.atlas.store.Atlas.release_run_lock`) or the atlas is closed, or refuse.

    Two processes running the same command into one atlas would otherwise both take the same run (the second
    "resuming" the first one's live checkpoint) and do the whole work twice. The lock is an ``flock``, which
    the system drops when its process dies (a SIGKILL, a lost machine), so a killed run never stays locked;
    the file says who holds it. A lock held by this very atlas object (a job reopening its run) is kept.
    """
    if config_key in atlas.run_locks:
        return
    path = atlas.path / "runs" / f"{path_slug(config_key)}.lock"  # a text run's key holds its model's name
    path.parent.mkdir(exist_ok=True)
    lock = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open until the run stops
    if not _try_lock(lock):
        lock.seek(0)
        owner = lock.read().strip()
        lock.close()
        raise RunBusyError(f"{_owner_words(owner)} into {atlas.path}: wait for it to end, or stop it, then run "
                           "this command again") from None
    atlas.run_locks[config_key] = lock


#: Where a run lock's one locked byte lies on Windows: past anything written, since a byte locked there cannot
#: be read by another process, which must read the owner record at the start of the file.
WINDOWS_LOCK_OFFSET = 1 << 20


def _try_lock(lock: IO[str]) -> bool:
    """Take ``lock``'s exclusive lock without waiting: False when another process (or another open handle)
    holds it. An ``flock`` on POSIX; on Windows, which has no ``fcntl``, ``msvcrt.locking`` of one byte."""
    if fcntl is not None:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    os.lseek(lock.fileno(), WINDOWS_LOCK_OFFSET, os.SEEK_SET)  # msvcrt locks from the descriptor's position
    try:
        msvcrt.locking(lock.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _record_owner(lock: IO[str], run_id: int) -> None:
    """Write into a held run lock who holds it: the run, process, host and since when (for :func:`claim_run`'s
    refusal)."""
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps({"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                           "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
    lock.flush()


def _owner_words(owner: str) -> str:
    """"run 3 is being written by process 123 on HOST since TIME" from a lock's owner record (which a process
    that has just taken the lock may not have written yet)."""
    try:
        record = json.loads(owner)
        return (f"run {record['run_id']} is being written by process {record['pid']} on {record['host']} "
                f"since {record['since']}")
    except (ValueError, KeyError, TypeError):
        return "this run is being written by another process"


def _checkpoint_of(atlas: Atlas, checkpoint_key: str, run_id: int | None,
                   fits: Callable[[dict[str, np.ndarray], dict[str, Any]], bool]) -> Checkpoint | None:
    """The checkpoint under ``checkpoint_key`` if run ``run_id`` wrote it and it ``fits``; else None, dropped."""
    checkpoint = atlas.load_checkpoint(checkpoint_key)
    if run_id is not None and checkpoint is not None and checkpoint[1].get("run_id") == run_id and fits(*checkpoint):
        return checkpoint
    atlas.drop_checkpoint(checkpoint_key)
    return None


def abandon_stale_runs(atlas: Atlas, config_key: str, same_job: Callable[[dict[str, Any]], bool]) -> list[dict]:
    """Mark ``abandoned`` the unfinished runs of other keys that ``same_job`` takes for this job over an input
    changed since (a source relisted, a vocabulary edited): their keys can never come back, so neither can
    their checkpoints, which are dropped. Returns their records, for the caller to say why."""
    stale = [run for run in atlas.runs()
             if run["status"] in UNFINISHED and run["config_key"] != config_key and same_job(run)]
    for run in stale:
        drop_checkpoints(atlas, run["config_key"])
        atlas.set_run_status(run["id"], "abandoned")
    return stale


def drop_checkpoints(atlas: Atlas, config_key: str) -> None:
    """Remove a run's checkpoints: its key's own and those a backend keeps beside it as ``KEY-SUFFIX`` (the Ray
    scan's), whichever backend wrote them: a job killed on one backend may finish on the other."""
    atlas.checkpoints.drop(config_key)
    for path in atlas.checkpoints.files(f"{config_key}-"):
        atlas.checkpoints.drop(path.stem)


class CheckpointSchedule:
    """When a long job saves its checkpoint: once ``every_items`` more items (files, words) are done since the
    last save, or ``every_seconds`` have passed, whichever comes first, and after the last of ``total`` items.

    A count alone can leave hours between checkpoints when items are slow (a large model on a CPU); a clock
    alone would write a scan's state (tens of MB) every few seconds on a GPU.
    """

    def __init__(self, every_items: int, every_seconds: float = CHECKPOINT_SECONDS, *, done: int = 0,
                 total: int | None = None) -> None:
        """``done``: the items already in the checkpoint the job resumed from (0 for a fresh job)."""
        self.every_items, self.every_seconds, self.total = every_items, every_seconds, total
        self.saved(done)

    def due(self, done: int) -> bool:
        """Whether a job with ``done`` items done should save its checkpoint now."""
        return (done == self.total or done - self.saved_items >= self.every_items
                or time.monotonic() - self.saved_at >= self.every_seconds)

    def saved(self, done: int) -> None:
        """Count from a checkpoint of ``done`` items, just written."""
        self.saved_items, self.saved_at = done, time.monotonic()


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives in the block until the block is done, then raise it.

    Python raises KeyboardInterrupt between any two bytecodes: a Ctrl-C during the backward (in C++) is
    raised as soon as it returns (a real one hit inside the optimizer's per-parameter loop of `world train`). Only on
    the main thread, and only while SIGINT raises KeyboardInterrupt (the default): elsewhere the block runs
    as it is.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


@contextmanager
def marked_interrupted(atlas: Atlas, run_id: int) -> Iterator[None]:
    """Mark run ``run_id`` ``interrupted`` (resumable) if the block fails or is killed (Ctrl-C), instead of
    leaving it ``running`` for good; a run the block got to finish (its results written, only the clean-up
    after failed) stays ``finished``."""
    try:
        yield
    except BaseException:
        if atlas.run(run_id)["status"] != "finished":
            atlas.set_run_status(run_id, "interrupted")
        raise


def refuse_edited(model: LoadedModel) -> None:
    """Raise while a Recorder's edits are attached to ``model``: an atlas holds the model's own activations,
    and a run's config could not tell edited ones apart (a later plain run would resume or replace them as
    its own). Every run starter (scan, words, visualize, the text side) asks first, new run or resumed."""
    from neuronscope.activations.recorder import attached_edits  # torch: only once a model is in hand

    edits = attached_edits(model.module)
    if edits:
        named = ", ".join(f"{edit.layer}: {edit.mode}" for edit in edits)
        raise NeuronscopeError(f"edits ({named}) are attached to {model.key} by an open Recorder; an atlas stores "
                               f"the model's own activations: run this outside that `with` block")


def start_run(atlas: Atlas, model: LoadedModel, *, command: str, config: Mapping[str, Any], config_key: str,
              layers: list[str], dataset: Mapping[str, Any] | None) -> int:
    """Record a new run of ``model`` over canonical ``layers`` (status ``running``); returns its id."""
    records = [{"layer": name, "aliases": model.aliases_of(name)} for name in layers]
    return atlas.start_run(command=command, config=config, config_key=config_key, model=model.key,
                           weights_sha256=model.weights_sha256, layers=records, dataset=dataset,
                           precision=model.precision.name)
