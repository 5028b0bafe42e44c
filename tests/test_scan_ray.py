"""``--backend ray``: the same scan on a local Ray (started here, 2 CPUs) equals the local backend's.

Ray starts slowly on 2 cores (~10 s, then seconds per actor pool), so the
module shares one Ray session and runs three Ray scans in all.
"""

from __future__ import annotations

import ast
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import neuronscope
from neuronscope.atlas import Atlas
from neuronscope.cli import app
from neuronscope.errors import NeuronscopeError
from neuronscope.models import load_model
from neuronscope.mining import ScanOutcome, open_source, scan
from neuronscope.mining.ray_backend import hash_entries, import_ray, scan_ray, seen_before, shard_ranges, size_twins
from neuronscope.runtime import seed_everything
from tests.conftest import randomize_last_bn
from tests.test_scan import LAYERS, SETTINGS, dump, make_images
from tests.test_scan_imagefiles import broken_files

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


@pytest.fixture(scope="module")
def tiny_rn_module():
    """tiny-rn as the ``tiny_rn`` fixture builds it, once for the module (fp32, as the issue asks)."""
    seed_everything(0)
    model = load_model("tiny-rn", weights="random", precision="fp32")
    randomize_last_bn(model.module)
    return model


@pytest.fixture(scope="module")
def local_atlas(salted_images, tmp_path_factory, tiny_rn_module) -> tuple[Path, ScanOutcome]:
    """The local backend's scan of the salted folder, the reference for every Ray scan."""
    atlas_dir = tmp_path_factory.mktemp("local") / "atlas"
    with Atlas(atlas_dir) as atlas:
        outcome = scan(tiny_rn_module, open_source(salted_images), atlas, LAYERS, settings=SETTINGS, batch_size=4,
                       thumbnails=False)
    return atlas_dir, outcome


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


def test_ray_scan_equals_local_scan(ray_session, salted_images, local_atlas, tiny_rn_module, tmp_path):
    local_dir, local = local_atlas
    with Atlas(tmp_path / "ray") as atlas:
        outcome = scan_ray(tiny_rn_module, open_source(salted_images), atlas, LAYERS, settings=SETTINGS,
                           batch_size=4, workers=2, shard_size=8, thumbnails=False)
        assert atlas.run(outcome.run_id)["skipped"] == local.skipped
        assert [run["status"] for run in atlas.runs()] == ["finished"]
    assert outcome.images == local.images == 24
    assert local.skipped == {"zero_byte": 1, "truncated": 2, "not_image": 1, "too_many_pixels": 0,
                             "unreadable": 1, "missing": 0, "duplicate": 2}
    assert outcome.skipped == local.skipped
    assert_same_scan(local_dir, tmp_path / "ray")
    assert not list((tmp_path / "ray" / "checkpoints").glob("*.npz"))


class Killed(Exception):
    """Stands for a killed driver: raised from the progress hook after the first merged shard."""


def test_killed_ray_scan_resumes_on_other_workers_and_ends_identical(ray_session, salted_images, local_atlas,
                                                                      tiny_rn_module, tmp_path):
    def kill(progress) -> None:
        raise Killed

    options = {"settings": SETTINGS, "batch_size": 4, "thumbnails": False}
    with Atlas(tmp_path / "ray") as atlas, pytest.raises(Killed):
        scan_ray(tiny_rn_module, open_source(salted_images), atlas, LAYERS, workers=1, shard_size=12,
                 checkpoint_every=1, on_batch=kill, **options)
    with Atlas(tmp_path / "ray") as atlas:
        assert atlas.runs()[0]["status"] == "interrupted"
        assert len(list((tmp_path / "ray" / "checkpoints").glob("*-ray.npz"))) == 1
        # The same command again, on two workers and another shard layout: it continues and ends identical.
        outcome = scan_ray(tiny_rn_module, open_source(salted_images), atlas, LAYERS, workers=2, shard_size=8,
                           **options)
        assert [run["status"] for run in atlas.runs()] == ["finished"]
    assert outcome.run_id == 1 and outcome.resumed_from == 12
    assert outcome.skipped == local_atlas[1].skipped and outcome.images == local_atlas[1].images
    assert_same_scan(local_atlas[0], tmp_path / "ray")
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
