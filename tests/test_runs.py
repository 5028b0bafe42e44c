"""The run lifecycle every atlas writer shares (neuronscope.atlas.runs), on an atlas filled by hand: no model.

The commands' own kill-and-resume tests (test_scan, test_scan_ray, test_words, test_textside,
test_featurevis) cover it end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuronscope.atlas import Atlas
from neuronscope.atlas.runs import abandon_stale_runs, drop_checkpoints, marked_interrupted, open_run


def _start(atlas: Atlas, key: str, config: dict | None = None):
    def start() -> int:
        return atlas.start_run(command="test", config=config or {}, config_key=key, model="toy@random",
                               weights_sha256=None, layers=[], dataset=None, precision="fp32")
    return start


def test_the_lifecycle_imports_neither_torch_nor_the_scanner():
    """Words and the text side record runs without loading the streaming scanner (torch, Recorder, loader)."""
    code = ("import sys, neuronscope.atlas.runs; assert 'torch' not in sys.modules\n"
            "import neuronscope.probing.word_store, neuronscope.probing.text_store\n"
            "assert 'neuronscope.mining.scanner' not in sys.modules, 'the scanner was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_killed_run_resumes_with_its_own_checkpoint_and_a_stale_one_is_dropped(tmp_path: Path):
    with Atlas(tmp_path / "atlas") as atlas:
        first = open_run(atlas, "k", _start(atlas, "k"), checkpoint_key="k")
        assert first.checkpoint is None and atlas.run(first.run_id)["status"] == "running"
        atlas.save_checkpoint("k", {"x": np.arange(3)}, {"run_id": first.run_id})
        atlas.set_run_status(first.run_id, "interrupted")
        resumed = open_run(atlas, "k", _start(atlas, "k"), checkpoint_key="k")
        assert resumed.run_id == first.run_id and resumed.checkpoint[0]["x"].tolist() == [0, 1, 2]
        assert atlas.run(first.run_id)["status"] == "running"
        refused = open_run(atlas, "k", _start(atlas, "k"), checkpoint_key="k",
                           checkpoint_fits=lambda arrays, meta: len(arrays["x"]) == 4)
        assert refused.run_id == first.run_id and refused.checkpoint is None  # starts over in its run
        assert atlas.load_checkpoint("k") is None
        atlas.finish_run(first.run_id)
        atlas.save_checkpoint("k", {"x": np.arange(3)}, {"run_id": first.run_id})  # left by a failed clean-up
        again = open_run(atlas, "k", _start(atlas, "k"), checkpoint_key="k")
        assert again.run_id != first.run_id and again.checkpoint is None and atlas.load_checkpoint("k") is None


def test_a_finished_run_is_reopened_running_only_when_asked(tmp_path: Path):
    with Atlas(tmp_path / "atlas") as atlas:
        run_id = open_run(atlas, "k", _start(atlas, "k")).run_id
        atlas.finish_run(run_id)
        assert open_run(atlas, "k", _start(atlas, "k"), reopen_finished=True).run_id == run_id
        assert atlas.run(run_id)["status"] == "running"
        atlas.finish_run(run_id)
        assert open_run(atlas, "k", _start(atlas, "k")).run_id != run_id


def test_stale_runs_of_the_same_job_are_abandoned_with_every_checkpoint(tmp_path: Path):
    with Atlas(tmp_path / "atlas") as atlas:
        old = _start(atlas, "old", {"job": "a"})()
        other = _start(atlas, "other", {"job": "b"})()
        for key in ("old", "old-ray", "old-ray-hashes", "other"):
            atlas.save_checkpoint(key, {"x": np.zeros(1)}, {"run_id": old})
        stale = abandon_stale_runs(atlas, "new", lambda run: run["config"]["job"] == "a")
        assert [run["id"] for run in stale] == [old]
        assert [atlas.run(r)["status"] for r in (old, other)] == ["abandoned", "running"]
        assert sorted(path.stem for path in atlas.checkpoints_dir.glob("*.npz")) == ["other"]
        drop_checkpoints(atlas, "other")
        assert not list(atlas.checkpoints_dir.glob("*.npz"))


def test_a_failed_block_marks_its_run_interrupted_unless_it_finished(tmp_path: Path):
    with Atlas(tmp_path / "atlas") as atlas:
        failed, finished = _start(atlas, "a")(), _start(atlas, "b")()
        with pytest.raises(KeyboardInterrupt), marked_interrupted(atlas, failed):
            raise KeyboardInterrupt
        with pytest.raises(OSError), marked_interrupted(atlas, finished):
            atlas.finish_run(finished)
            raise OSError("the clean-up after failed")
        assert [atlas.run(r)["status"] for r in (failed, finished)] == ["interrupted", "finished"]


def test_a_checkpoint_is_due_by_count_by_time_or_at_the_end_whichever_comes_first(monkeypatch):
    from neuronscope.atlas import runs

    clock = [1000.0]
    monkeypatch.setattr(runs.time, "monotonic", lambda: clock[0])
    schedule = runs.CheckpointSchedule(10, 300.0, done=4, total=30)  # resumed from a checkpoint of 4 items
    assert not schedule.due(13) and schedule.due(14)
    schedule.saved(14)
    clock[0] += 299.0
    assert not schedule.due(15)
    clock[0] += 1.0
    assert schedule.due(15)  # few items, but 5 minutes since the last save
    schedule.saved(15)
    assert not schedule.due(24) and schedule.due(25)
    schedule.saved(25)
    assert not schedule.due(29) and schedule.due(30)  # the last item, 5 after the last save


_HOLD_RUN = """
import sys
from neuronscope.atlas import Atlas
from neuronscope.atlas.runs import open_run
with Atlas(sys.argv[1]) as atlas:
    run_id = open_run(atlas, "k", lambda: atlas.start_run(command="test", config={}, config_key="k",
                      model="toy@random", weights_sha256=None, layers=[], dataset=None, precision="fp32")).run_id
    print(run_id, flush=True)
    sys.stdin.read()  # works on the run until killed
"""


def test_a_run_another_live_process_works_on_is_refused_and_freed_when_that_process_dies(tmp_path: Path):
    """Two identical scans into one atlas at once both took the run and did the whole scan, the second saying it
    "resumed" from the first one's live checkpoint. The second is refused, naming who holds the run; once that
    process is killed (SIGKILL: nothing cleans up) the run resumes."""
    from neuronscope.atlas.runs import RunBusyError

    holder = subprocess.Popen([sys.executable, "-c", _HOLD_RUN, str(tmp_path / "atlas")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        run_id = int(holder.stdout.readline())
        with Atlas(tmp_path / "atlas") as atlas:
            with pytest.raises(RunBusyError, match=f"^run {run_id} is being written by process {holder.pid} on "
                                                   ".* since .*: wait for it to end, or stop it"):
                open_run(atlas, "k", _start(atlas, "k"))
            assert len(atlas.runs()) == 1
            assert open_run(atlas, "other", _start(atlas, "other")).run_id != run_id  # another job is free
    finally:
        holder.kill()
        holder.wait()
    with Atlas(tmp_path / "atlas") as atlas:
        assert open_run(atlas, "k", _start(atlas, "k")).run_id == run_id  # killed: resumed, no stale lock
        assert open_run(atlas, "k", _start(atlas, "k")).run_id == run_id  # this atlas holds it already


def test_closing_the_atlas_frees_its_runs_for_the_next_command_in_the_process(tmp_path: Path):
    with Atlas(tmp_path / "atlas") as atlas:
        run_id = open_run(atlas, "k", _start(atlas, "k")).run_id
    with Atlas(tmp_path / "atlas") as atlas:
        assert open_run(atlas, "k", _start(atlas, "k")).run_id == run_id


@pytest.mark.parametrize("stop", ["finished", "interrupted"])
def test_a_run_that_stopped_frees_its_lock_while_its_atlas_stays_open(tmp_path: Path, stop: str):
    """A run's lock was held until its Atlas closed: a notebook holding the atlas open after a finished (or
    failed) run kept a later CLI rerun of the same config out, with a message naming the dead run."""
    with Atlas(tmp_path / "atlas") as atlas:
        run_id = open_run(atlas, "k", _start(atlas, "k")).run_id
        if stop == "finished":
            atlas.finish_run(run_id)
        else:
            with pytest.raises(RuntimeError), marked_interrupted(atlas, run_id):
                raise RuntimeError("the work failed")
        with Atlas(tmp_path / "atlas") as other:  # another handle: its lock is another process's, to flock
            opened = open_run(other, "k", _start(other, "k")).run_id
        assert opened == (run_id if stop == "interrupted" else run_id + 1)


_WITHOUT_FCNTL = """
import subprocess, sys, types  # subprocess first: it takes a module named msvcrt for Windows
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` fails
held = set()
def locking(fd, mode, nbytes):  # msvcrt's semantics for one byte: a second non-blocking lock of it fails
    import os
    key = (os.fstat(fd).st_ino, os.lseek(fd, 0, os.SEEK_CUR))
    if key in held:
        raise OSError(36, "Resource deadlock avoided")
    held.add(key)
sys.modules["msvcrt"] = types.SimpleNamespace(locking=locking, LK_NBLCK=2)
from neuronscope.atlas import Atlas
from neuronscope.atlas.runs import RunBusyError, WINDOWS_LOCK_OFFSET, open_run
start = lambda atlas: lambda: atlas.start_run(command="test", config={}, config_key="k", model="toy@random",
                                              weights_sha256=None, layers=[], dataset=None, precision="fp32")
with Atlas(sys.argv[1]) as atlas, Atlas(sys.argv[1]) as other:
    run_id = open_run(atlas, "k", start(atlas)).run_id
    try:
        open_run(other, "k", start(other))
    except RunBusyError as refused:
        print(refused)
    assert [offset for _, offset in held] == [WINDOWS_LOCK_OFFSET]
"""


def test_runs_are_locked_where_the_system_has_no_fcntl(tmp_path: Path):
    """``fcntl`` does not exist on Windows: importing the atlas failed there, so no command could run. Without it
    a run's lock is ``msvcrt.locking`` of one byte past the owner record, which the refused process reads."""
    done = subprocess.run([sys.executable, "-c", _WITHOUT_FCNTL, str(tmp_path / "atlas")], capture_output=True,
                          text=True, check=True)
    assert re.match(r"run 1 is being written by process \d+ on .* since .*: wait for it to end", done.stdout), done
