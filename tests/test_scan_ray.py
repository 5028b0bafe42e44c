"""``--backend ray``: the same scan on a local Ray (started here, 2 CPUs) equals the local backend's.

Ray starts slowly on 2 cores (~10 s, then ~15 s per pool of actors), so the
module shares one Ray session and runs two Ray scans in all: one killed
after its first shard, and the same command again.
"""

from __future__ import annotations

import ast
import json
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import Result
from typer.testing import CliRunner

import neuronscope
from neuronscope.atlas import Atlas
from neuronscope.cli import app
from neuronscope.commands.scan import ProgressReport
from neuronscope.errors import NeuronscopeError
from neuronscope.models import load_model
from neuronscope.mining import ScanProgress, open_source
from neuronscope.mining import ray_backend
from neuronscope.mining.ray_backend import hash_entries, import_ray, seen_before, shard_ranges, size_twins
from neuronscope.runtime import seed_everything
from tests.helpers import LAYERS, broken_files, dump, make_images, randomize_last_bn

UNITS = range(0, 512, 3)  # tiny-rn's neurons: 512 units
RAY_TOLERANCE = 1e-5  # CONVENTIONS.md: values across Ray workers within 1e-5


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (2 CPUs, no dashboard), shut down after."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'neuronscope[distributed]'")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'neuronscope[distributed]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def salted_images(tmp_path_factory) -> Path:
    """24 images, broken files, and duplicates within a shard, across shards, and of a broken file."""
    folder = tmp_path_factory.mktemp("ray") / "images"
    make_images(folder)
    for name, (data, _reason) in broken_files().items():
        (folder / "broken").mkdir(exist_ok=True)
        (folder / "broken" / name).write_bytes(data)
    shutil.copy(folder / "b" / "img01.png", folder / "b" / "img01_copy.png")  # next to its original
    (folder / "z").mkdir()
    shutil.copy(folder / "a" / "img00.png", folder / "z" / "img00_copy.png")  # the last shard; original in the first
    shutil.copy(folder / "broken" / "half.png", folder / "z" / "half_copy.png")  # a copy of a truncated file
    return folder


def assert_identical(left: list[dict], right: list[dict]) -> None:
    """CONVENTIONS.md: the same top/bottom ids and cells, histogram counts and reservoir ids; values within 1e-5."""
    for a, b in zip(left, right, strict=True):
        for kind in ("top", "bottom"):
            assert [(e["image"], e["cell"]) for e in a[kind]] == [(e["image"], e["cell"]) for e in b[kind]]
            np.testing.assert_allclose([e["activation"] for e in a[kind]], [e["activation"] for e in b[kind]],
                                       rtol=RAY_TOLERANCE, atol=RAY_TOLERANCE)
        assert a["histogram"]["counts"] == b["histogram"]["counts"]
        assert a["histogram"]["samples"] == b["histogram"]["samples"]
        assert a["histogram"]["edges"] == pytest.approx(b["histogram"]["edges"])
        assert a["stats"] == pytest.approx(b["stats"], rel=RAY_TOLERANCE, abs=RAY_TOLERANCE)


def assert_same_scan(local_dir: Path, ray_dir: Path) -> None:
    for layer in LAYERS:
        units = UNITS if layer == "neurons" else range(0, 256, 7)
        assert_identical(dump(local_dir, layer, units), dump(ray_dir, layer, units))


class Killed(Exception):
    """Stands for a killed scan: raised from the progress report after the first merged shard."""


def test_scan_command_on_ray_resumes_and_equals_the_local_backend(ray_session, salted_images, tmp_path,
                                                                  monkeypatch):
    """``neuronscope scan --backend ray`` on the module's Ray against ``--backend local``, fp32.

    The Ray scan is killed after its first shard (1 replica, shards of 2 batches), then the same command runs
    again on 2 replicas (shards of 1 batch): it resumes, and ends with the local backend's skip counts, top and
    bottom ids and cells, histogram counts and reservoir ids, values within 1e-5, and thumbnails.
    """
    seed_everything(0)
    model = load_model("tiny-rn", weights="random")
    randomize_last_bn(model.module)  # residual sums that go negative: bottom-k and histograms have work to do
    torch.save(model.module.state_dict(), tmp_path / "tiny-rn.pt")

    def run(backend: str, workers: int) -> Result:
        return CliRunner().invoke(app, [
            "scan", "--model", "tiny-rn", "--weights", str(tmp_path / "tiny-rn.pt"), "--layers", ",".join(LAYERS),
            "--images", str(salted_images), "--out", str(tmp_path / backend), "--top-k", "5", "--batch-size", "4",
            "--workers", str(workers), "--precision", "fp32", "--device", "cpu", "--checkpoint-every", "1",
            "--backend", backend, "--json"])

    local = run("local", 2)
    assert local.exit_code == 0, local.output
    def kill(report: ProgressReport, progress: ScanProgress) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(ProgressReport, "__call__", kill)
        killed = run("ray", 1)
    assert killed.exit_code == 1 and "Killed" in killed.stderr, killed.output
    with Atlas(tmp_path / "ray") as atlas:
        assert [record["status"] for record in atlas.runs()] == ["interrupted"]
    assert len(list((tmp_path / "ray" / "checkpoints").glob("*-ray.npz"))) == 1
    assert len(list((tmp_path / "ray" / "checkpoints").glob("*-ray-hashes.npz"))) == 1

    def rehash(*args: object) -> None:
        raise AssertionError("a resumed Ray scan read its size twins again (the first run hashed them)")

    reports: list[ScanProgress] = []
    thumbnails: list[tuple[int, int]] = []
    with monkeypatch.context() as patch:
        patch.setattr(ProgressReport, "__call__", lambda report, progress: reports.append(progress))
        patch.setattr(ProgressReport, "thumbnails", lambda report, done, total: thumbnails.append((done, total)))
        patch.setattr(ray_backend, "content_keys", rehash)
        resumed = run("ray", 2)
    assert resumed.exit_code == 0, resumed.output
    assert 0 < reports[0].resumed_from < reports[0].total  # it continued from the first shard's checkpoint
    local_json, ray_json = json.loads(local.stdout), json.loads(resumed.stdout)

    # Duplicates: the copies of img00 (in another shard) and img01 (next to it); half.png's copy is truncated.
    assert local_json["skipped"] == {"zero_byte": 1, "truncated": 2, "not_image": 1, "too_many_pixels": 0,
                                     "unreadable": 1, "missing": 0, "duplicate": 2}
    assert ray_json["skipped"] == local_json["skipped"]
    assert {key: ray_json[key] for key in ("model", "layers", "units", "run_id")} == \
        {key: local_json[key] for key in ("model", "layers", "units", "run_id")}
    assert_same_scan(tmp_path / "local", tmp_path / "ray")
    assert sorted(path.name for path in (tmp_path / "ray" / "thumbs").iterdir()) == \
        sorted(path.name for path in (tmp_path / "local" / "thumbs").iterdir())
    drawn = len(list((tmp_path / "ray" / "thumbs").iterdir()))  # the driver's thumbnail phase reports too
    assert thumbnails[0] == (0, drawn) and thumbnails[-1] == (drawn, drawn) and drawn > 0
    with Atlas(tmp_path / "ray") as atlas:
        assert [record["status"] for record in atlas.runs()] == ["finished"]  # the killed run, completed
        assert atlas.runs()[0]["skipped"] == local_json["skipped"]
        assert min(atlas.unit(None, "neurons", unit)["stats"]["min"] for unit in UNITS) < 0
    assert not list((tmp_path / "ray" / "checkpoints").glob("*.npz"))


def test_shards_are_whole_batches_on_one_grid_around_what_is_done():
    assert shard_ranges(30, [], 8) == [(0, 8), (8, 16), (16, 24), (24, 30)]
    assert shard_ranges(30, [(0, 8), (16, 24)], 8) == [(8, 16), (24, 30)]
    # Done ranges from another layout: the rest is still cut on the grid (batch boundaries stay put).
    assert shard_ranges(30, [(0, 12)], 8) == [(12, 16), (16, 24), (24, 30)]
    assert shard_ranges(30, [(0, 30)], 8) == []


def test_duplicates_are_settled_across_shards(salted_images):
    """Without Ray: the keys a shard must treat as seen are those whose first copy lies in an earlier shard."""
    source = open_source(salted_images)
    names = [entry.name for entry in source.entries]
    twins = size_twins(source.entries)
    assert {names[o] for o in twins} >= {"a/img00.png", "z/img00_copy.png", "b/img01.png", "b/img01_copy.png",
                                         "broken/half.png", "z/half_copy.png"}
    ordinals, keys = pickle.loads(hash_entries({"entries": pickle.dumps([(int(o), source.entries[o])
                                                                         for o in twins])})["keys"])
    ranges = shard_ranges(len(source), [], 4)  # half.png ends a shard, its copy is in the last
    earlier = seen_before(ordinals, keys, ranges)
    last = ranges[-1][0]
    key_of = dict(zip(ordinals.tolist(), keys.tolist()))
    assert earlier[last] == {key_of[names.index("a/img00.png")], key_of[names.index("broken/half.png")]}
    within = next(start for start, stop in ranges if start <= names.index("b/img01_copy.png") < stop)
    assert key_of[names.index("b/img01.png")] not in earlier[within]  # within a shard: the actor's own set
    assert all(not keys_ for start, keys_ in earlier.items() if start != last)


def test_missing_ray_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(NeuronscopeError, match=r"pip install 'neuronscope\[distributed\]'"):
        import_ray()
    make_images(tmp_path / "images", count=2)
    result = CliRunner().invoke(app, ["scan", "--model", "tiny-rn", "--weights", "random", "--images",
                                      str(tmp_path / "images"), "--out", str(tmp_path / "atlas"), "--backend", "ray"])
    assert result.exit_code == 1 and "pip install 'neuronscope[distributed]'" in result.stderr


def test_a_ray_cluster_that_cannot_be_joined_leaves_no_run_in_the_atlas(monkeypatch, tmp_path):
    """ray.init comes before the run is recorded: a bad --ray-address is an error, not a 'running' run that
    never started."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'neuronscope[distributed]'")

    def unreachable(*args, **kwargs):
        raise ConnectionError("could not connect to the Ray cluster at 10.0.0.1:6379")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", unreachable)
    make_images(tmp_path / "images", count=2)
    result = CliRunner().invoke(app, ["scan", "--model", "tiny-rn", "--weights", "random", "--images",
                                      str(tmp_path / "images"), "--out", str(tmp_path / "atlas"), "--backend", "ray",
                                      "--ray-address", "10.0.0.1:6379"])
    assert result.exit_code == 1 and "could not connect" in result.stderr, result.output
    with Atlas(tmp_path / "atlas", create=False) as atlas:
        assert atlas.runs() == []


def test_a_bad_shard_size_is_refused_before_ray_starts_or_a_run_is_recorded(monkeypatch, tmp_path):
    from neuronscope.mining import ray_backend

    def no_ray():
        raise AssertionError("Ray must not start for a bad shard size")

    monkeypatch.setattr(ray_backend, "import_ray", no_ray)
    make_images(tmp_path / "images", count=4)
    with Atlas(tmp_path / "atlas") as atlas:
        with pytest.raises(NeuronscopeError, match="multiple of the batch size 2"):
            ray_backend.scan_ray(load_model("tiny-rn", weights="random"), open_source(tmp_path / "images"), atlas,
                                 LAYERS, batch_size=2, shard_size=3)
        assert atlas.runs() == []


def imports_at_load_time(tree: ast.AST) -> list[str]:
    """Modules a file imports when it is loaded: every import outside function bodies (class bodies, ``if`` and
    ``try`` blocks included)."""
    names = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
        names += imports_at_load_time(node)
    return names


def test_ray_is_imported_only_inside_functions():
    """The local backend works without Ray: no module of the package imports it when loaded."""
    package = Path(neuronscope.__file__).parent
    assert "import ray" in (package / "mining" / "ray_backend.py").read_text()  # the check below sees imports
    for path in package.rglob("*.py"):
        loaded = imports_at_load_time(ast.parse(path.read_text()))
        assert not [name for name in loaded if name == "ray" or name.startswith("ray.")], path


def test_a_ray_scan_gives_ray_datas_progress_bars_back_as_it_found_them():
    """The shards run without Ray Data's bars (the scan reports its own progress), and the process's setting is
    the user's again after the scan, run to the end or stopped early: their own Ray Data jobs keep their bars."""
    from types import SimpleNamespace

    context = SimpleNamespace(enable_progress_bars=True)
    during = []

    class Dataset:
        def map_batches(self, *args, **kwargs):
            return self

        def iter_rows(self):
            during.append(context.enable_progress_bars)
            yield from ({"partial": pickle.dumps(n)} for n in range(2))

    ray = SimpleNamespace(data=SimpleNamespace(DataContext=SimpleNamespace(get_current=lambda: context),
                                               from_items=lambda *args, **kwargs: Dataset(),
                                               ActorPoolStrategy=lambda size: None))
    source = SimpleNamespace(entries=list(range(8)), name="images")
    plan = SimpleNamespace(layers=[], shapes={})

    def shards():
        return ray_backend._run_shards(ray, None, source, plan, None, [(0, 4), (4, 8)], {0: frozenset(), 4: frozenset()},
                                       replicas=1, gpus=0, batch_size=4, max_pixels=1)

    assert list(shards()) == [0, 1] and during == [False] and context.enable_progress_bars is True
    stopped = shards()
    assert next(stopped) == 0 and context.enable_progress_bars is False
    stopped.close()
    assert during == [False, False] and context.enable_progress_bars is True
