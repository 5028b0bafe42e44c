"""The atlas store: schema and migrations, transactions, labels, and the scan / show / label commands."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from typer.testing import CliRunner

from neuronscope.atlas import SCHEMA_VERSION, Atlas, AtlasError, ensure_schema, schema_version
from neuronscope.cli import app
from neuronscope.errors import NeuronscopeError
from neuronscope.mining import ScanSettings, open_source, scan
from tests.helpers import make_images

runner = CliRunner()


@pytest.fixture
def scanned(tiny_rn, tmp_path):
    """A small atlas: tiny-rn's `neurons` over 12 images, k = 4."""
    make_images(tmp_path / "images", count=12)
    with Atlas(tmp_path / "atlas") as atlas:
        scan(tiny_rn, open_source(tmp_path / "images"), atlas, ["neurons"],
             settings=ScanSettings(top_k=4, bottom_k=4), batch_size=6, thumbnails=False)
    return tmp_path / "atlas"


def test_new_atlas_has_schema_version_wal_and_every_table(tmp_path):
    with Atlas(tmp_path / "atlas") as atlas:
        assert schema_version(atlas.db) == SCHEMA_VERSION
        assert atlas.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in atlas.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables >= {"meta", "runs", "images", "layers", "units", "examples", "histograms", "labels", "words",
                      "texts", "featurevis", "families"}


def test_an_existing_file_is_refused_as_an_atlas_folder(tmp_path):
    """--out naming a file: one AtlasError that says what to give (was FileExistsError from mkdir)."""
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(AtlasError, match="is a file, not an atlas folder"):
        Atlas(path)
    assert path.read_text() == "mine"


def test_migrations_run_in_order_and_newer_atlases_are_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "atlas.sqlite", isolation_level=None)
    assert ensure_schema(db, target=1) == 0
    steps = []

    def add_scores(connection):
        steps.append(1)
        connection.execute("ALTER TABLE units ADD COLUMN multimodality REAL")

    assert ensure_schema(db, migrations={1: add_scores}, target=2) == 1
    assert steps == [1] and schema_version(db) == 2
    assert "multimodality" in [row[1] for row in db.execute("PRAGMA table_info(units)")]
    with pytest.raises(NeuronscopeError, match="upgrade neuronscope"):
        ensure_schema(db, target=1)  # version 2 > a neuronscope that knows 1

    def broken(connection):
        connection.execute("ALTER TABLE units ADD COLUMN half_done REAL")
        raise RuntimeError("migration failed")

    with pytest.raises(RuntimeError):
        ensure_schema(db, migrations={2: broken}, target=3)
    assert schema_version(db) == 2  # rolled back, column included
    assert "half_done" not in [row[1] for row in db.execute("PRAGMA table_info(units)")]


def test_transaction_rolls_back_on_error(tmp_path):
    with Atlas(tmp_path / "atlas") as atlas:
        with pytest.raises(ValueError), atlas.transaction() as db:
            db.execute("INSERT INTO labels VALUES ('m', 'l', 0, 'x', 'user', 'now')")
            raise ValueError
        assert atlas.db.execute("SELECT count(*) FROM labels").fetchone()[0] == 0


def test_unit_record_shape_label_and_errors(scanned):
    with Atlas(scanned, create=False) as atlas:
        atlas.set_label("tiny-rn", "neurons", 3, "a blob, top left", source="test")  # resolved to key, canonical
        record = atlas.unit("tiny-rn", "image_block_4~1~Add_6", 3)  # bare model name, alias with ~
        assert record["layer"] == "visual.layer4.1.act3:input" and record["label"] == "a blob, top left"
        assert set(record) >= {"model", "layer", "unit", "top", "bottom", "stats", "histogram", "label",
                               "featurevis", "words", "texts"}
        assert record["featurevis"] == record["words"] == record["texts"] == []
        with pytest.raises(AtlasError, match="has 512 units"):
            atlas.unit(None, "neurons", 512)
        with pytest.raises(AtlasError, match="scanned layers: visual.layer4.1.act3:input"):
            atlas.unit(None, "visual.layer3.0", 0)
        with pytest.raises(AtlasError, match="holds tiny-rn@random"):
            atlas.unit("RN50", "neurons", 0)
    with pytest.raises(AtlasError, match="not an atlas"):
        Atlas(scanned.parent / "nowhere", create=False)


def test_show_json_shape_sorted_best_first(scanned):
    result = runner.invoke(app, ["show", str(scanned), "--layer", "neurons", "--unit", "7", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["model"] == "tiny-rn@random" and record["layer"] == "visual.layer4.1.act3:input"
    assert record["unit"] == 7 and len(record["top"]) == 4 and record["label"] is None
    for example in record["top"]:
        assert set(example) >= {"image", "activation", "cell"} and len(example["cell"]) == 2
    keys = [(-e["activation"], e["image"]) for e in record["top"]]
    assert keys == sorted(keys)
    assert set(record["stats"]) >= {"mean", "std", "max", "min", "count"} and record["stats"]["count"] == 12
    assert sum(record["histogram"]["counts"]) == 12
    assert len(record["histogram"]["edges"]) == len(record["histogram"]["counts"]) + 1
    assert record["words"] == [] and record["featurevis"] == [] and record["texts"] == []
    several = json.loads(runner.invoke(app, ["show", str(scanned), "--unit", "0-2", "--json"]).stdout)
    assert [r["unit"] for r in several] == [0, 1, 2]


def test_label_command_then_show(scanned):
    result = runner.invoke(app, ["label", str(scanned), "--layer", "visual.layer4.1.act3:input", "--unit", "5",
                                 "stripes"])
    assert result.exit_code == 0, result.output
    record = json.loads(runner.invoke(app, ["show", str(scanned), "--unit", "5", "--json"]).stdout)
    assert record["label"] == "stripes"
    text = runner.invoke(app, ["show", str(scanned), "--unit", "5"]).stdout
    assert '"stripes"' in text and "unit 5" in text


def test_label_needs_unit(scanned):
    """Without --unit, label refuses (it silently relabelled unit 0)."""
    result = runner.invoke(app, ["label", str(scanned), "stripes"])
    assert result.exit_code == 2 and "--unit" in result.output
    record = json.loads(runner.invoke(app, ["show", str(scanned), "--unit", "0", "--json"]).stdout)
    assert record["label"] is None


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_missing_or_broken_histogram_file_reads_as_no_histogram(scanned, tmp_path, damage):
    # A rescan removes the previous run's file after its commit; a reader in between, or a partly
    # copied atlas, finds it gone or cut short: the unit reads without it, show and export go on.
    with Atlas(scanned, create=False) as atlas:
        path = scanned / atlas.db.execute("SELECT path FROM histograms").fetchone()["path"]
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:100])
    with Atlas(scanned, create=False) as atlas:
        record = atlas.unit(None, "neurons", 3)
        assert record["histogram"] is None and record["stats"]["count"] == 12
        assert atlas.conditional_buckets(None, "neurons", 3) == []
    shown = runner.invoke(app, ["show", str(scanned), "--unit", "3", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["histogram"] is None
    exported = runner.invoke(app, ["show", str(scanned), "--export", str(tmp_path / "n.npz")])
    assert exported.exit_code == 0, exported.output
    assert "histogram_counts" not in np.load(tmp_path / "n.npz").files


def test_show_reads_an_atlas_whose_scan_kept_non_finite_values(scanned):
    # Scans before non-finite values were kept out stored NULL stats and inf activations.
    with Atlas(scanned, create=False) as atlas, atlas.transaction() as db:
        db.execute("UPDATE units SET mean = NULL, std = NULL, max = NULL WHERE unit = 3")
        db.execute("UPDATE examples SET activation = ? WHERE unit = 3 AND rank = 0", (float("inf"),))
    text = runner.invoke(app, ["show", str(scanned), "--unit", "3"])
    assert text.exit_code == 0, text.output
    assert "mean n/a" in text.stdout and "n/a  cell" in text.stdout
    shown = runner.invoke(app, ["show", str(scanned), "--unit", "3", "--json"])
    record = json.loads(shown.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert record["top"][0]["activation"] is None and record["stats"]["std"] is None
    with Atlas(scanned, create=False) as atlas:
        assert atlas.conditional_buckets(None, "neurons", 3) == []


@pytest.mark.parametrize(("args", "message"), [
    (["show", "{atlas}", "--unit", "9999"], "out of range"),
    (["show", "{atlas}", "--layer", "visual.layer2"], "not in"),
    (["show", "{atlas}/../missing"], "not an atlas"),
    (["label", "{atlas}", "--unit", "600", "x"], "out of range"),
])
def test_show_errors_are_one_line(scanned, args, message):
    result = runner.invoke(app, [arg.format(atlas=scanned) for arg in args])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def _old_atlas(folder):
    """An atlas of schema version 1 (no scan: milliseconds)."""
    from neuronscope.atlas.schema import SCHEMA_V1

    folder.mkdir()
    db = sqlite3.connect(folder / "atlas.sqlite")
    db.executescript(SCHEMA_V1 + "INSERT INTO meta VALUES ('schema_version', '1');")
    db.close()
    return folder


_INVOKE_ALL = """
import json, sys
from typer.testing import CliRunner
from neuronscope.cli import app
results = [CliRunner().invoke(app, args) for args in json.loads(sys.argv[1])]
print(json.dumps([[result.exit_code, result.output] for result in results]))
"""


def _on_read_only_mounts(folders, *commands):
    """Run neuronscope ``commands`` where ``folders`` are read-only bind mounts (a lab's read-only export), in a
    user and mount namespace of their own (root writes through mode bits); ``[(exit code, output)]``. Skips
    where such namespaces are not allowed."""
    import shutil
    import subprocess
    import sys

    mounts = " && ".join(f'mount --bind "{f}" "{f}" && mount -o remount,ro,bind "{f}"' for f in folders)
    script = f'{mounts} && exec "$0" -c "$1" "$2"'
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "sh", "-c", f"{mounts} && true"],
                                                         capture_output=True).returncode != 0:
        pytest.skip("no user and mount namespaces here to make a read-only mount in")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script, sys.executable, _INVOKE_ALL,
                           json.dumps([[str(arg) for arg in command] for command in commands])],
                          capture_output=True, text=True, check=True)
    return [tuple(result) for result in json.loads(done.stdout)]


def test_show_reads_an_atlas_on_a_read_only_mount_and_writers_say_to_copy_it(scanned, tmp_path):
    """On a read-only mount show (a reader) and label failed with "OperationalError: unable to open database
    file", and an older atlas with "attempt to write a readonly database". show now opens read-only; a writer
    says in one line that the atlas cannot be written and to copy it; an older atlas, that the copy migrates."""
    old = _old_atlas(tmp_path / "old")
    shown, labelled, old_shown, old_labelled = _on_read_only_mounts(
        [scanned, old], ["show", scanned, "--unit", "3", "--json"], ["label", scanned, "x", "--unit", "3"],
        ["show", old], ["label", old, "x", "--unit", "3"])
    assert shown[0] == 0 and json.loads(shown[1])["unit"] == 3, shown
    assert labelled == (1, f"error: {scanned} cannot be written (a read-only mount, or another user's atlas): "
                           "copy the atlas to a folder you can write and run the command on the copy\n")
    assert old_shown == (1, f"error: {old} has atlas schema version 1, this neuronscope reads {SCHEMA_VERSION}: "
                            "copy it to a folder you can write and open the copy once with `neuronscope show` to "
                            "migrate it\n")
    assert old_labelled[0] == 1 and "cannot be written" in old_labelled[1], old_labelled


def test_show_migrates_an_older_atlas_it_can_write(tmp_path):
    """show opens read-only, but stays the migration the read-only error names."""
    old = _old_atlas(tmp_path / "old")
    assert "holds no scanned layers" in runner.invoke(app, ["show", str(old)]).stderr
    with Atlas(old, create=False, read_only=True) as atlas:
        assert schema_version(atlas.db) == SCHEMA_VERSION


@pytest.mark.parametrize("args", [["show", "{atlas}"], ["label", "{atlas}", "x", "--unit", "3"],
                                  ["export", "{atlas}", "--site", "{atlas}/../site"]])
def test_a_damaged_catalogue_names_its_file_and_how_to_recover_it(scanned, args):
    """A truncated atlas.sqlite gave "error: DatabaseError: database disk image is malformed (run with --debug
    ...)": neither the file nor what to do."""
    database = scanned / "atlas.sqlite"
    with Atlas(scanned, create=False):
        pass  # the WAL checkpointed into the file
    database.write_bytes(database.read_bytes()[:database.stat().st_size // 2])
    result = runner.invoke(app, [arg.format(atlas=scanned) for arg in args])
    assert result.exit_code == 1
    assert result.stderr == (f"error: {database} is damaged (database disk image is malformed): restore the atlas "
                             f"from a copy, or recover what it holds with `sqlite3 {database} .recover > dump.sql`"
                             "\n"), result.stderr


def test_scan_command_json(tmp_path):
    import torch

    make_images(tmp_path / "images", count=8)
    args = ["scan", "--model", "tiny-rn", "--weights", "random", "--layers", "neurons,visual.layer3.0",
            "--images", str(tmp_path / "images"), "--out", str(tmp_path / "atlas"), "--top-k", "3",
            "--batch-size", "4", "--workers", "0", "--precision", "fp32", "--device", "cpu", "--no-thumbnails",
            "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"atlas", "run_id", "model", "layers", "units", "seconds", "skipped"}
    assert payload["model"] == "tiny-rn@random" and payload["run_id"] == 1
    assert payload["layers"] == ["visual.layer4.1.act3:input", "visual.layer3.0"] and payload["units"] == 512 + 256
    assert payload["skipped"]["zero_byte"] == 0
    text = runner.invoke(app, args[:-1])  # again, plain output: a second run, plain progress lines on stderr
    assert text.exit_code == 0 and "scanned 8 images" in text.stdout and "scan (files): 8/8" in text.stderr
    with Atlas(tmp_path / "atlas") as atlas:
        # the batch size and the CPU thread count are recorded: another one rounds the forward differently
        threads = str(torch.get_num_threads())
        assert [run["command"].split()[:4] for run in atlas.runs()] == [["neuronscope", "--threads", threads,
                                                                          "scan"]] * 2
        assert all("--batch-size 4" in run["command"] for run in atlas.runs())
    missing = runner.invoke(app, ["scan", "--model", "tiny-rn", "--images", str(tmp_path / "nope"), "--out", "x"])
    assert missing.exit_code == 1 and "no such folder" in missing.stderr
    unknown = runner.invoke(app, [*args[:-1], "--backend", "spark"])  # --backend ray: tests/test_scan_ray.py
    assert unknown.exit_code == 1 and "choose local or ray" in unknown.stderr


def test_numpy_export_matches_show(scanned, tmp_path):
    result = runner.invoke(app, ["show", str(scanned), "--layer", "neurons", "--export", str(tmp_path / "n.npz")])
    assert result.exit_code == 0, result.output
    data = np.load(tmp_path / "n.npz")
    assert data["top_ids"].shape == (512, 4) and data["top_cells"].shape == (512, 4, 2)
    assert data["histogram_counts"].shape[0] == 512 and (data["count"] == 12).all()
    with Atlas(scanned, create=False) as atlas:
        record = atlas.unit(None, "neurons", 9)
    assert data["top_ids"][9].tolist() == [e["image"] for e in record["top"]]
    np.testing.assert_allclose(data["top_values"][9], [e["activation"] for e in record["top"]], rtol=1e-6)
    assert data["mean"][9] == pytest.approx(record["stats"]["mean"])
    assert data["label"].tolist() == [""] * 512 and "multimodality" not in data.files  # none written, none measured


def test_the_export_carries_labels_families_and_multimodality(scanned, tmp_path):
    with Atlas(scanned) as atlas:
        model = atlas.resolve_model(None)
        layer = atlas.resolve_layer(model, "neurons")["layer"]
        atlas.set_label(model, layer, 3, "star")
        atlas.write_families(model, layer, {3: {"family": "colour", "score": 0.9}, 4: {"family": "lexical"}},
                             source="auto:words", about={"lexical": {"4": "-ing"}})
        atlas.write_multimodality(None, model, layer, {
            "layer": layer, "concepts": ["star", "hat"], "threshold": 0.9, "concept": [0] * 256 + [1] * 256,
            "word_concept": [0] * 512, "auroc_images": [0.95] * 512, "auroc_words": [0.92] * 511 + [0.5]})
    result = runner.invoke(app, ["show", str(scanned), "--layer", "neurons", "--export", str(tmp_path / "n.npz")])
    assert result.exit_code == 0, result.output
    data = np.load(tmp_path / "n.npz")
    assert data["label"][3] == "star" and data["family"][3] == "colour" and data["family_score"][3] == 0.9
    assert data["family"][4] == "lexical -ing" and np.isnan(data["family_score"][4]) and data["family"][5] == ""
    shown = runner.invoke(app, ["show", str(scanned), "--layer", "neurons", "--unit", "4"])
    assert "  family: lexical -ing (auto:words)" in shown.output, shown.output  # the affix, as the export says it
    record = json.loads(runner.invoke(app, ["show", str(scanned), "--layer", "neurons", "--unit", "4", "--json"]).output)
    assert record["family"] == {"family": "lexical", "score": None, "source": "auto:words", "affix": "-ing"}
    assert data["concept"][0] == "star" and data["concept"][300] == "hat" and data["word_concept"][300] == "star"
    assert data["multimodality"][0] == 0.92 and data["multimodality"][511] == 0.5
    assert data["multimodal"][0] and not data["multimodal"][300] and not data["multimodal"][511]


def test_parquet_export_has_one_row_per_unit_equal_to_the_npz(scanned, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    for name in ("n.npz", "n.parquet"):
        result = runner.invoke(app, ["show", str(scanned), "--layer", "neurons", "--export", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    arrays, table = np.load(tmp_path / "n.npz"), pq.read_table(tmp_path / "n.parquet").to_pydict()
    assert len(table["units"]) == 512 and set(table) == set(arrays.files)
    for name in arrays.files:
        np.testing.assert_array_equal(np.asarray(table[name]), arrays[name], err_msg=name)
    wrong = runner.invoke(app, ["show", str(scanned), "--export", str(tmp_path / "n.csv")])
    assert wrong.exit_code == 2 and ".parquet" in wrong.output and not (tmp_path / "n.csv").exists()


def test_renders_words_and_artifacts_are_stored_for_a_layer_never_scanned(tmp_path):
    with Atlas(tmp_path / "atlas") as atlas:
        run_id = atlas.start_run(command="visualize", config={}, config_key="k", model="tiny-rn@random",
                                 weights_sha256=None, layers=[], dataset=None, precision="fp32")
        atlas.register_layer("tiny-rn@random", "visual.layer4.1.act3:input", aliases=["neurons"], units=4,
                             grid=(2, 2), run_id=run_id)
        paths = atlas.write_featurevis(run_id, "tiny-rn@random", "visual.layer4.1.act3:input", [
            {"unit": 1, "kind": "plain", "png": b"png-1", "objective": 2.5, "description": "Channel [neurons, 1]"},
            {"unit": 1, "kind": "diverse", "index": 3, "png": b"png-2", "objective": float("nan")}])
        atlas.write_unit_texts("words", run_id, "tiny-rn@random", "visual.layer4.1.act3:input",
                               {1: [("cat", 0.5), ("dog", 0.9)]})
        atlas.write_unit_texts("words", run_id, "tiny-rn@random", "visual.layer4.1.act3:input", {1: [("owl", 0.1)]})
        atlas.save_artifact("tiny-rn@random", "visual.layer4.1.act3:input", "emotions", "codes",
                            data={"happy": [1]}, file_bytes=b"plot", suffix=".png", run_id=run_id)
        atlas.finish_run(run_id)
        record = atlas.unit("tiny-rn", "neurons", 1)
        artifact = atlas.artifact("tiny-rn@random", "visual.layer4.1.act3:input", "emotions", "codes")
        assert atlas.run(run_id)["status"] == "finished"
    # plain first, as every page lists renders (Atlas.unit listed them alphabetically)
    assert [(r["kind"], r["objective"]) for r in record["featurevis"]] == [("plain", 2.5), ("diverse", None)]
    assert (tmp_path / "atlas" / paths[0]).read_bytes() == b"png-1"
    assert record["words"] == [{"word": "owl", "score": 0.1}]  # a rewrite replaces the unit's words
    assert record["top"] == [] and record["histogram"] is None
    assert artifact["data"] == {"happy": [1]} and (tmp_path / "atlas" / artifact["path"]).read_bytes() == b"plot"


def test_a_new_set_of_renders_replaces_the_units_whole_set_of_that_kind(tmp_path):
    layer = "visual.layer4.1.act3:input"
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.register_layer("tiny-rn@random", layer, aliases=["neurons"], units=4, grid=(2, 2))

        def renders(unit: int, kind: str, count: int) -> list[dict]:
            return [{"unit": unit, "kind": kind, "index": i, "png": b"png", "objective": 1.0} for i in range(count)]

        atlas.write_featurevis(None, "tiny-rn@random", layer, renders(1, "plain", 1) + renders(1, "diverse", 4)
                               + renders(2, "diverse", 4))
        old = atlas.unit(None, "neurons", 1)["featurevis"]
        kept = atlas.write_featurevis(None, "tiny-rn@random", layer, renders(1, "diverse", 2))
        record = atlas.unit(None, "neurons", 1)
        other = atlas.unit(None, "neurons", 2)
    assert sorted(r["path"] for r in record["featurevis"] if r["kind"] == "diverse") == sorted(kept)
    assert [r["kind"] for r in record["featurevis"]].count("plain") == 1 and len(other["featurevis"]) == 4
    stale = {r["path"] for r in old} - {r["path"] for r in record["featurevis"]}
    assert len(stale) == 2 and not any((tmp_path / "atlas" / path).exists() for path in stale)
    assert all((tmp_path / "atlas" / r["path"]).is_file() for r in record["featurevis"] + other["featurevis"])


def test_a_version_1_atlas_is_migrated_to_hold_artifacts(tmp_path):
    import sqlite3

    from neuronscope.atlas.schema import SCHEMA_V1

    path = tmp_path / "old" / "atlas.sqlite"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V1 + "INSERT INTO meta VALUES ('schema_version', '1');")
    db.close()
    with Atlas(path.parent) as atlas:
        assert schema_version(atlas.db) == SCHEMA_VERSION == 3
        assert atlas.artifacts("m", "l") == []
        assert "category" in [row[1] for row in atlas.db.execute("PRAGMA table_info(images)")]  # v3


def test_models_that_crop_differently_keep_their_own_thumbnails(tiny_rn, tmp_path):
    """A centre-cropping and a squashing model over the same wide images: each unit's thumbnail shows what its
    own model saw (the file name left out the input contract, so the second model showed the first one's crop)."""
    import dataclasses

    from PIL import Image

    from neuronscope.atlas import marked_thumbnail

    make_images(tmp_path / "images", count=4)
    squash = dataclasses.replace(tiny_rn, spec=dataclasses.replace(
        tiny_rn.spec, name="tiny-rn-squash", preprocess=dataclasses.replace(tiny_rn.preprocess, resize_mode="squash")))
    with Atlas(tmp_path / "atlas") as atlas:
        for model in (tiny_rn, squash):
            scan(model, open_source(tmp_path / "images"), atlas, ["neurons"],
                 settings=ScanSettings(top_k=2, bottom_k=1), batch_size=4, thumbnails=True)
        records = {model.key: atlas.unit(model.key, "neurons", 0) for model in (tiny_rn, squash)}
        grid = atlas.resolve_layer(squash.key, "neurons")
    thumbs = {key: {example["thumb"] for example in record["top"]} for key, record in records.items()}
    assert not thumbs[tiny_rn.key] & thumbs[squash.key]
    example = records[squash.key]["top"][0]
    source = next((tmp_path / "images").rglob(example["image"].split("#")[0].split("/")[-1]))
    seen = np.asarray(squash.preprocess.resize(Image.open(source).convert("RGB")), dtype=np.uint8)
    expected = np.asarray(marked_thumbnail(seen, tuple(example["cell"]), (grid["grid_rows"], grid["grid_cols"])))
    stored = np.asarray(Image.open(tmp_path / "atlas" / example["thumb"]).convert("RGB"))
    assert np.array_equal(stored, expected)


def test_a_rescan_removes_thumbnails_named_the_old_way_that_nothing_shows(tiny_rn, tmp_path):
    """Thumbnail names gained the input contract; a rescan of an older atlas draws new files, and the old-named
    ones no example shows any more go (one an example still shows stays)."""
    make_images(tmp_path / "images", count=4)
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.thumbs_dir.mkdir(parents=True, exist_ok=True)
        orphan, shown = (atlas.thumbs_dir / f"{'ab' * 8}_g2x2_r{row}c0.png" for row in (0, 1))
        for path in (orphan, shown):
            path.write_bytes(b"png")
        atlas.register_layer("old@x", "l", aliases=[], units=1, grid=(2, 2))
        atlas.db.execute("INSERT INTO images (id, source, name, sha256, width, height) "
                         "VALUES ('i', 's', 'i', 'ab', 1, 1)")
        atlas.db.execute("INSERT INTO examples (model, layer, unit, kind, rank, image_id, activation, cell_row, "
                         "cell_col, thumb) VALUES ('old@x', 'l', 0, 'top', 0, 'i', 1.0, 1, 0, ?)",
                         (atlas.thumbnail_relpath(shown.name),))
        atlas.db.commit()
        scan(tiny_rn, open_source(tmp_path / "images"), atlas, ["neurons"],
             settings=ScanSettings(top_k=2, bottom_k=1), batch_size=4, thumbnails=True)
        names = {path.name for path in atlas.thumbs_dir.iterdir()}
    assert not orphan.exists() and shown.exists() and len(names) > 1


def test_a_rescan_on_other_images_drops_what_only_the_replaced_scan_used(tiny_rn, tmp_path):
    """A rescan of a layer on other images kept the first scan's image rows and thumbnails for good: both doubled.
    Now they go, except what another layer still shows or names, and a thumbnail touched since the run began
    (a scan beside this one may be about to show it)."""
    import os
    import time

    from PIL import Image, ImageOps

    make_images(tmp_path / "first", count=6)
    for path in make_images(tmp_path / "second", count=5):  # other pixels: other ids and thumbnails
        ImageOps.invert(Image.open(path).convert("RGB")).save(path)
    settings = ScanSettings(top_k=2, bottom_k=1)

    def shown(layer: str = "%") -> set[str]:
        return {row["thumb"] for row in atlas.db.execute(
            "SELECT thumb FROM examples WHERE layer LIKE ? AND thumb IS NOT NULL", (layer,))}

    with Atlas(tmp_path / "atlas") as atlas:
        scan(tiny_rn, open_source(tmp_path / "first"), atlas, ["neurons", "visual.layer3"], settings=settings,
             batch_size=4, thumbnails=True)
        first_images = {row["id"] for row in atlas.db.execute("SELECT id FROM images")}
        kept_by_layer3 = shown("visual.layer3")
        for path in atlas.thumbs_dir.iterdir():  # drawn an hour ago ...
            os.utime(path, (path.stat().st_mtime - 3600,) * 2)
        touched = atlas.path / sorted(shown("visual.layer4%") - kept_by_layer3)[0]
        # ... except one a scan beside this one reuses while this one runs (a time after the run's start:
        # touched now, it would pass only when the touch and the start fell in the same second)
        os.utime(touched, (time.time() + 60,) * 2)
        scan(tiny_rn, open_source(tmp_path / "second"), atlas, ["neurons"], settings=settings, batch_size=4,
             thumbnails=True)
        on_disk = {atlas.thumbnail_relpath(p.name) for p in atlas.thumbs_dir.iterdir()}
        image_rows = {row["id"] for row in atlas.db.execute("SELECT id FROM images")}
        named = {row["image_id"] for row in atlas.db.execute("SELECT image_id FROM examples")}
        for layer in ("visual.layer4.1.act3:input", "visual.layer3"):
            named.update(atlas.histogram_arrays(tiny_rn.key, layer)["sample_ids"].tolist())
        assert on_disk == shown() | {atlas.thumbnail_relpath(touched.name)}
        assert kept_by_layer3 <= on_disk
        assert image_rows == named and first_images & image_rows  # layer3 still names some of the first images
        scan(tiny_rn, open_source(tmp_path / "second"), atlas, ["visual.layer3"], settings=settings, batch_size=4)
        assert not first_images & {row["id"] for row in atlas.db.execute("SELECT id FROM images")}


def test_a_bare_name_of_two_models_is_refused_when_labelling_as_when_reading(tmp_path):
    """set_label had its own copy of model resolution: a bare name held by two keys was stored as the bare name,
    which then showed as a third model and made every later read without --model fail."""
    with Atlas(tmp_path / "atlas") as atlas:
        for weights in ("bundled", "random"):
            atlas.register_layer(f"mini-clip@{weights}", "visual.layer4", aliases=["neurons"], units=8, grid=(2, 2))
        for write in (lambda: atlas.set_label("mini-clip", "neurons", 3, "cat"),
                      lambda: atlas.resolve_model("mini-clip")):
            with pytest.raises(AtlasError, match="names several models .*mini-clip@bundled, mini-clip@random"):
                write()
        assert atlas.models() == ["mini-clip@bundled", "mini-clip@random"]
        atlas.set_label("mini-clip@random", "neurons", 3, "cat")
        assert atlas.unit("mini-clip@random", "neurons", 3)["label"] == "cat"
        assert atlas.unit("mini-clip@bundled", "neurons", 3)["label"] is None


def test_every_method_takes_the_names_a_user_types_and_writers_leave_no_orphan_rows(tmp_path):
    """unit() and set_label() resolved a bare model name and a layer alias, the other readers took names as
    given and answered empty (label("m", "neurons", 0) was None after set_label("m", "neurons", 0) stored it),
    and the writers stored rows under ("m", "neurons") that no reader found."""
    layer = "visual.layer4"
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.register_layer("m@x", layer, aliases=["neurons", "block/4"], units=4, grid=(1, 1))
        atlas.register_layer("m", "neurons", aliases=[], units=9, grid=(3, 3))  # the same layer: kept as it was
        atlas.write_unit_texts("texts", None, "m", "neurons", {0: [("a cat", 1.0)]})
        atlas.write_unit_texts("words", None, "m", "block~4", {0: [("cat", 0.5)]})
        atlas.set_label("m", "neurons", 0, "cat unit")
        atlas.save_artifact("m", "neurons", "emotions", "codes", data={"happy": [1]}, file_bytes=b"p", suffix=".png")
        atlas.write_featurevis(None, "m", "neurons", [{"unit": 0, "kind": "plain", "png": b"x", "objective": 1.0}])
        rows = {table: {(row["model"], row["layer"]) for row in atlas.db.execute(f"SELECT model, layer FROM {table}")}
                for table in ("layers", "texts", "words", "labels", "artifacts", "featurevis")}
        assert all(found == {("m@x", layer)} for found in rows.values()), rows
        assert atlas.unit_texts("m", "neurons", 0) == [{"text": "a cat", "score": 1.0}]
        assert atlas.label("m", "block~4", 0) == "cat unit"
        assert [entry["layer"] for entry in atlas.layers("m")] == [layer] and atlas.scan_runs("m") == {}
        assert atlas.artifact("m", "neurons", "emotions", "codes")["data"] == {"happy": [1]}
        assert [a["name"] for a in atlas.artifacts("m", "neurons")] == ["codes"]
        assert atlas.rendered_units("m", "neurons", "plain") == {0}
        assert atlas.featurevis_relpath("m", "neurons", 0, "plain") == atlas.unit("m@x", layer, 0)["featurevis"][0]["path"]
        assert atlas.histogram_arrays("m", "neurons") is None and atlas.histogram("m", "neurons", 0) is None
        assert atlas.resolve_layer("m", "neurons")["layer"] == layer
        record = atlas.unit("m@x", layer, 0)
        assert (record["texts"], record["words"], record["label"]) == ([{"text": "a cat", "score": 1.0}],
                                                                     [{"word": "cat", "score": 0.5}], "cat unit")
        # A layer no scan has registered yet is stored as given (world eval labels before any scan), and found so.
        atlas.set_label("m", "visual.layer3", 1, "dog")
        assert atlas.label("m@x", "visual.layer3", 1) == atlas.label("m", "visual.layer3", 1) == "dog"


def test_name_resolution_sees_what_another_connection_commits(tmp_path):
    """Resolution reads the catalogue once per state: a layer another process registers is resolved at once."""
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.register_layer("m@x", "l1", aliases=["first"], units=2, grid=(1, 1))
        with Atlas(tmp_path / "atlas", read_only=True) as reader:
            assert reader.resolve_layer("m", "first")["layer"] == "l1" and reader.label("m", "second", 0) is None
            atlas.register_layer("m@x", "l2", aliases=["second"], units=2, grid=(1, 1))
            atlas.set_label("m", "second", 0, "cat")
            assert reader.label("m", "second", 0) == "cat" and reader.models() == ["m@x"]
            atlas.register_layer("m@y", "l1", aliases=["first"], units=2, grid=(1, 1))
            with pytest.raises(AtlasError, match="names several models"):
                reader.label("m", "first", 0)


def test_a_stale_version_read_never_recreates_or_remigrates_an_atlas(tmp_path, monkeypatch):
    """Two processes opening a new atlas: one read version 0, the other created, migrated and wrote a render;
    the first then re-ran the schema script and the 1 -> 2 migration, which drops featurevis."""
    import neuronscope.atlas.schema as schema

    with Atlas(tmp_path / "atlas") as atlas:
        atlas.register_layer("m@x", "l", aliases=[], units=2, grid=(1, 1))
        atlas.write_featurevis(None, "m@x", "l", [{"unit": 0, "kind": "plain", "png": b"x", "objective": 1.0}])
    real, reads = schema.schema_version, []

    def stale_then_real(connection: sqlite3.Connection) -> int:  # the first read happened before the other's writes
        reads.append(connection)
        return 0 if len(reads) == 1 else real(connection)

    monkeypatch.setattr(schema, "schema_version", stale_then_real)
    late = sqlite3.connect(tmp_path / "atlas" / "atlas.sqlite", isolation_level=None)
    assert ensure_schema(late) == SCHEMA_VERSION
    assert late.execute("SELECT count(*) FROM featurevis").fetchone()[0] == 1 and real(late) == SCHEMA_VERSION
    late.close()


def test_schema_scripts_split_only_where_sqlite_ends_a_statement():
    from neuronscope.atlas.schema import _statements

    script = "CREATE TABLE a (x TEXT DEFAULT ';');\n-- one; two\nCREATE TABLE b (y);\n"
    assert [statement.strip() for statement in _statements(script)] == \
        ["CREATE TABLE a (x TEXT DEFAULT ';');", "-- one; two\nCREATE TABLE b (y);"]


def test_a_replaced_artifact_leaves_no_file_behind(tmp_path):
    """An artifact replaced with another suffix, or with data only, left its old file on disk for good."""
    with Atlas(tmp_path / "atlas") as atlas:
        first = atlas.save_artifact("m@x", "l", "emotions", "plot", file_bytes=b"png", suffix=".png")
        second = atlas.save_artifact("m@x", "l", "emotions", "plot", file_bytes=b"<svg/>", suffix=".svg")
        assert not (tmp_path / "atlas" / first["path"]).exists()
        assert (tmp_path / "atlas" / second["path"]).read_bytes() == b"<svg/>"
        third = atlas.save_artifact("m@x", "l", "emotions", "plot", data={"codes": 3})
        assert third["path"] is None and not (tmp_path / "atlas" / second["path"]).exists()
    assert not list((tmp_path / "atlas" / "artifacts").rglob("*.*"))


def test_the_atlas_never_imports_the_microscope():
    """The store sits below the web layer (DESIGN.md): Atlas.unit_view imported neuronscope.web (a cycle, and a
    jinja2 ImportError at call time without the web extra). Notebook cards are neuronscope.web.unit_view."""
    from pathlib import Path

    import neuronscope.atlas

    for module in Path(neuronscope.atlas.__file__).parent.glob("*.py"):
        assert "neuronscope.web" not in module.read_text(), module.name


def test_conditional_buckets_are_a_function_of_the_unit_record(scanned):
    """Atlas.conditional_buckets(model, layer, unit, record=...) ignored model, layer and unit when given a
    record; the record's buckets are now a function of the record alone."""
    from neuronscope.atlas.store import conditional_buckets

    with Atlas(scanned, create=False, read_only=True) as atlas:
        for unit in (3, 4):
            buckets = conditional_buckets(atlas.unit(None, "neurons", unit), n_buckets=4)
            assert buckets and buckets == atlas.conditional_buckets(None, "neurons", unit, n_buckets=4)
            assert sum(bucket["count"] for bucket in buckets) == 12


@pytest.mark.parametrize("grid", [(144, 144), (224, 224), (288, 200)])
def test_a_grid_finer_than_the_thumbnail_marks_the_pixel_its_cell_falls_in(grid):
    """Input-size layers (visual.conv1:input, RN50x4's stem at 144x144) have cells under a pixel of a 128 px
    thumbnail: every cell is still marked, at its place (the box used to end before it began)."""
    from neuronscope.atlas import marked_thumbnail
    from neuronscope.atlas.thumbnails import MARK_COLOUR

    pixels = np.full((256, 256, 3), 200, np.uint8)
    for cell in [(0, 0), (0, 4), (grid[0] // 2, grid[1] - 1), (grid[0] - 1, grid[1] - 1)]:
        marked = np.asarray(marked_thumbnail(pixels, cell, grid, size=128))
        red = np.argwhere((marked == MARK_COLOUR).all(axis=2))
        assert len(red), cell
        centre = ((cell[0] + 0.5) * 128 / grid[0], (cell[1] + 0.5) * 128 / grid[1])
        assert np.abs(red.mean(axis=0) - centre).max() <= 2, (cell, red.mean(axis=0), centre)



def _labelled_atlas(path):
    """An atlas with one registered layer and a label (no scan: milliseconds)."""
    with Atlas(path) as atlas:
        atlas.register_layer("tiny-rn@random", "visual.layer4", aliases=["neurons"], units=4, grid=(1, 1))
        atlas.set_label("tiny-rn@random", "visual.layer4", 1, "cat")
    return path


def test_a_read_only_open_of_a_folder_it_cannot_write_creates_nothing_there(tmp_path, monkeypatch):
    """mode=ro on a WAL catalogue still creates -shm: an atlas in a folder the reader could not write (another
    user's, a read-only mount) failed with 'attempt to write a readonly database'. It now opens immutable."""
    import os

    folder = _labelled_atlas(tmp_path / "atlas")
    access = os.access
    # root writes anywhere whatever the mode bits: say what a non-owner would find
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if mode & os.W_OK and str(path) == str(folder)
                        else access(path, mode, **kw))
    folder.chmod(0o555)
    try:
        with Atlas(folder, create=False, read_only=True) as atlas:
            assert atlas.unit(None, "neurons", 1)["label"] == "cat"
        assert sorted(entry.name for entry in folder.iterdir()) == ["atlas.sqlite"]
    finally:
        folder.chmod(0o755)


def test_an_unreadable_catalogue_is_a_one_line_atlas_error(tmp_path):
    (tmp_path / "atlas").mkdir()
    (tmp_path / "atlas" / "atlas.sqlite").write_bytes(b"not a database, " * 100)
    with pytest.raises(AtlasError, match="atlas.sqlite is damaged .file is not a database.: restore the atlas"):
        Atlas(tmp_path / "atlas", create=False, read_only=True)


def test_atlas_files_are_written_with_the_users_umask_not_0600(tmp_path):
    """atomic_write_bytes went through tempfile.mkstemp (mode 0600): renders, artifacts, arrays and exports
    were unreadable to any other user, and a copy served by one answered 500 for every image."""
    import os

    from neuronscope.atlas.files import atomic_write_bytes

    old_umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a" / "file.png", b"png")
        with Atlas(tmp_path / "atlas") as atlas:
            atlas.save_artifact("tiny-rn@random", "visual.layer4", "emotions", "codes", data={}, file_bytes=b"x",
                                suffix=".png")
            artifact = atlas.path / atlas.artifacts("tiny-rn@random", "visual.layer4")[0]["path"]
    finally:
        os.umask(old_umask)
    assert (tmp_path / "a" / "file.png").stat().st_mode & 0o777 == 0o644
    assert artifact.stat().st_mode & 0o777 == 0o644
    assert [entry.name for entry in (tmp_path / "a").iterdir()] == ["file.png"]  # no temporary left behind


def test_a_rescan_of_thumbnails_another_user_drew_reuses_them_and_keeps_what_it_cannot_delete(
        tiny_rn, tmp_path, monkeypatch):
    """Only a file's owner may set its time: a rescan of an atlas whose thumbnails another user drew failed at
    its very end with PermissionError from os.utime, and every rerun the same. It now reuses them untouched, and
    a replaced thumbnail it may not delete stays."""
    import os
    from pathlib import Path

    from PIL import Image, ImageOps

    make_images(tmp_path / "first", count=4)
    for path in make_images(tmp_path / "second", count=4)[:2]:  # two new images: some thumbnails are replaced
        ImageOps.invert(Image.open(path).convert("RGB")).save(path)
    settings = ScanSettings(top_k=2, bottom_k=1)
    with Atlas(tmp_path / "atlas") as atlas:
        scan(tiny_rn, open_source(tmp_path / "first"), atlas, ["neurons"], settings=settings, batch_size=4,
             thumbnails=True)
        drawn = set(atlas.thumbs_dir.iterdir())
        for path in drawn:  # drawn an hour ago, so a rescan that no longer shows one drops it
            os.utime(path, (path.stat().st_mtime - 3600,) * 2)
        utime, unlink = os.utime, Path.unlink

        def not_owner(path, *args, **kwargs):
            if Path(path) in drawn:
                raise PermissionError(1, "Operation not permitted", str(path))
            return utime(path, *args, **kwargs)

        def sticky(path, *args, **kwargs):
            if path in drawn:
                raise PermissionError(1, "Operation not permitted", str(path))
            return unlink(path, *args, **kwargs)

        monkeypatch.setattr(os, "utime", not_owner)
        monkeypatch.setattr(Path, "unlink", sticky)
        scan(tiny_rn, open_source(tmp_path / "second"), atlas, ["neurons"], settings=settings, batch_size=4,
             thumbnails=True)
        shown = {row["thumb"] for row in atlas.db.execute("SELECT thumb FROM examples WHERE thumb IS NOT NULL")}
        status = atlas.db.execute("SELECT status FROM runs ORDER BY id DESC").fetchone()["status"]
    assert status == "finished"
    drawn_paths = {atlas.thumbnail_relpath(path.name) for path in drawn}
    assert drawn_paths & shown and drawn_paths - shown  # some reused untouched, some replaced
    assert all(path.exists() for path in drawn)  # the replaced ones it may not delete stay


def test_checkpoints_are_saved_loaded_listed_by_key_prefix_and_dropped(tmp_path):
    """The checkpoint files moved into CheckpointStore keep their layout (``KEY.npz``, the meta as the JSON
    array ``__meta__``), and a backend's ``KEY-SUFFIX`` files are found by the key's prefix."""
    from neuronscope.atlas import CheckpointStore

    with Atlas(tmp_path / "atlas") as atlas:
        assert isinstance(atlas.checkpoints, CheckpointStore) and atlas.checkpoints_dir == atlas.checkpoints.folder
        atlas.save_checkpoint("k1", {"x": np.arange(3)}, {"run_id": 4})
        atlas.checkpoints.save("k1-ray", {"y": np.zeros(2)}, {})
        atlas.checkpoints.save("k2", {}, {})
        with np.load(atlas.checkpoints_dir / "k1.npz") as data:
            assert sorted(data.files) == ["__meta__", "x"] and json.loads(str(data["__meta__"])) == {"run_id": 4}
        arrays, meta = atlas.load_checkpoint("k1")
        assert arrays["x"].tolist() == [0, 1, 2] and meta == {"run_id": 4}
        assert [path.name for path in atlas.checkpoints.files("k1")] == ["k1-ray.npz", "k1.npz"]
        assert [path.name for path in atlas.checkpoints.files("k1-")] == ["k1-ray.npz"]
        atlas.drop_checkpoint("k1")
        assert atlas.load_checkpoint("k1") is None and len(atlas.checkpoints.files()) == 2


def test_a_histogram_file_reads_back_trimmed_to_its_occupied_bins(tmp_path):
    """The histogram codec: image ids stored once as indices, -1 for an empty reservoir slot, and read back
    as plot-ready edges (2**exponent wide from ``first``) over the occupied bins only."""
    from neuronscope.atlas.histograms import read_histogram_file, trimmed_histogram, write_histogram_file
    from neuronscope.mining.results import HistogramArrays

    samples = np.full((2, 4, 2), None, dtype=object)
    samples[0, 1] = ["b", None]
    samples[0, 2] = ["a", "b"]
    histogram = HistogramArrays(exponent=np.array([-1, 0]), first=np.array([2, 0]),
                                counts=np.array([[0, 3, 5, 0], [0, 0, 0, 0]]), samples=samples,
                                nonfinite=np.zeros(2, np.int64), seed=7)
    write_histogram_file(tmp_path / "h.npz", histogram)
    arrays = read_histogram_file(tmp_path / "h.npz")
    assert arrays["sample_ids"].tolist() == ["a", "b"] and arrays["samples"][0, 1].tolist() == [1, -1]
    assert trimmed_histogram(arrays, 0) == {"edges": [1.5, 2.0, 2.5], "counts": [3, 5],
                                            "samples": [["b"], ["a", "b"]], "seed": 7, "reservoir": 2}
    assert trimmed_histogram(arrays, 1)["edges"] == [] and read_histogram_file(tmp_path / "missing.npz") is None


def test_a_rolled_back_write_leaves_no_layer_behind_in_what_the_atlas_reads(tmp_path):
    """The catalogue read inside a transaction was cached past its rollback: the layer it undid was still
    listed, and set_label by an alias wrote under it."""
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.register_layer("m@x", "visual.layer4", aliases=["neurons"], units=2, grid=(1, 1))
        with pytest.raises(RuntimeError):
            with atlas.transaction():
                atlas.db.execute("INSERT INTO layers (model, layer, aliases, units, grid_rows, grid_cols) "
                                 "VALUES ('m@x', 'visual.layer3', '[\"mid\"]', 2, 1, 1)")
                assert [entry["layer"] for entry in atlas.layers("m@x")] == ["visual.layer3", "visual.layer4"]
                raise RuntimeError("the write fails")
        assert [entry["layer"] for entry in atlas.layers("m@x")] == ["visual.layer4"]


@pytest.mark.parametrize("register", ["scan", "register_layer"])
def test_a_label_under_a_bare_name_and_an_alias_before_the_layer_is_registered_is_found_after(
        tiny_rn, tmp_path, register):
    """A label written as ("tiny-rn", "neurons") before any scan stayed under those names: once a scan (or a
    render or word probe, through register_layer) registered tiny-rn@random's canonical layer, every read
    resolved to it and found no label, and `show` said the atlas held two models (tiny-rn, tiny-rn@random)."""
    layer = "visual.layer4.1.act3:input"
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.set_label("tiny-rn", "neurons", 5, "my star unit")
        atlas.set_label("tiny-rn", "visual.layer3.0", 1, "a layer not registered yet")
        if register == "scan":
            make_images(tmp_path / "images", count=4)
            scan(tiny_rn, open_source(tmp_path / "images"), atlas, ["neurons"], settings=ScanSettings(top_k=2),
                 batch_size=4, thumbnails=False)
        else:
            atlas.register_layer(tiny_rn.key, layer, aliases=tiny_rn.aliases_of(layer), units=512, grid=(2, 2))
        assert atlas.models() == [tiny_rn.key]
        assert atlas.unit(tiny_rn.key, "neurons", 5)["label"] == "my star unit"
        assert atlas.label(tiny_rn.key, "visual.layer3.0", 1) == "a layer not registered yet"
        assert {tuple(row) for row in atlas.db.execute("SELECT model, layer FROM labels")} == {
            (tiny_rn.key, layer), (tiny_rn.key, "visual.layer3.0")}
    result = runner.invoke(app, ["show", str(tmp_path / "atlas"), "--layer", "neurons", "--unit", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["label"] == "my star unit"


def test_renders_labels_and_words_under_an_alias_are_rekeyed_when_the_layer_is_registered(tmp_path):
    """A render and a label written as (key, "neurons") before the layer was registered stayed under the alias:
    after save_word_probe registered it, Atlas.unit and `show` listed the words but no render and no label.
    Where both names hold a unit's label (or its renders of one kind), the newest write is kept."""
    key, layer = "tiny-rn@random", "visual.layer4.1.act3:input"
    path = tmp_path / "atlas"
    with Atlas(path) as atlas:
        render = {"unit": 3, "kind": "plain", "png": b"under the alias", "objective": 1.0}
        (alias_render,) = atlas.write_featurevis(None, key, "neurons", [render])
        (old_render,) = atlas.write_featurevis(None, key, "neurons", [{**render, "unit": 2}])
        (new_render,) = atlas.write_featurevis(None, key, layer, [{**render, "unit": 2, "png": b"newer"}])
        atlas.set_label(key, "neurons", 3, "star")
        atlas.set_label(key, layer, 2, "older, canonical")
        atlas.set_label(key, "image_block_4~1~Add_6", 2, "newer, by alias")
        atlas.register_layer(key, layer, aliases=["neurons", "image_block_4/1/Add_6"], units=8, grid=(2, 2))
        atlas.write_unit_texts("words", None, key, layer, {3: [("dug", 0.5)]})
        record, two = atlas.unit(key, "neurons", 3), atlas.unit("tiny-rn", layer, 2)
        assert {tuple(row) for table in ("labels", "featurevis", "layers") for row in atlas.db.execute(
            f"SELECT model, layer FROM {table}")} == {(key, layer)}
    assert record["label"] == "star" and record["words"] == [{"word": "dug", "score": 0.5}]
    # the render keeps its file (its path names the alias); the older render of unit 2 goes with its file
    assert [r["path"] for r in record["featurevis"]] == [alias_render]
    assert (path / alias_render).read_bytes() == b"under the alias"
    assert two["label"] == "newer, by alias" and [r["path"] for r in two["featurevis"]] == [new_render]
    assert not (path / old_render).exists() and (path / new_render).read_bytes() == b"newer"
    result = runner.invoke(app, ["show", str(path), "--layer", "neurons", "--unit", "3", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["label"], [r["path"] for r in shown["featurevis"]]) == ("star", [alias_render])


def test_writers_refuse_a_unit_outside_a_registered_layer_as_unit_does(tmp_path):
    """set_label(key, "neurons", 600, ...) was stored on a 4-unit layer that unit() then refused to show."""
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.register_layer("m@x", "visual.layer4", aliases=["neurons"], units=4, grid=(1, 1))
        writes = [lambda: atlas.set_label("m", "neurons", 4, "z"),
                  lambda: atlas.write_featurevis(None, "m", "neurons", [
                      {"unit": 4, "kind": "plain", "png": b"x", "objective": 1.0}]),
                  lambda: atlas.write_unit_texts("words", None, "m", "neurons", {4: [("cat", 1.0)]}),
                  lambda: atlas.unit("m", "neurons", 4)]
        for write in writes:
            with pytest.raises(AtlasError, match=r"unit 4 is out of range: visual.layer4 of m@x has 4 units \(0-3\)"):
                write()
        assert [atlas.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("labels", "featurevis", "words")] == [0, 0, 0]
        assert not (tmp_path / "atlas" / "featurevis").exists()
        atlas.set_label("m", "visual.layer3", 600, "a layer not registered yet takes any unit")
        assert atlas.label("m", "visual.layer3", 600) == "a layer not registered yet takes any unit"


def test_unit_readers_take_numpy_and_torch_integers_and_answer_plain_ints(scanned):
    """atlas.unit(..., np.int64(7)) returned a dict json.dumps refused (the int64 unit); a torch scalar failed
    binding the SQL parameter; a float was truncated. Readers read the unit as parse_units does."""
    import torch

    from neuronscope.errors import UnitsError

    with Atlas(scanned, create=False) as atlas:
        atlas.set_label("tiny-rn", "neurons", 7, "seven", source="test")
        for unit in (np.int64(7), torch.tensor(7), "7"):
            record = atlas.unit(None, "neurons", unit)
            assert type(record["unit"]) is int and json.loads(json.dumps(record))["label"] == "seven"
            assert atlas.label("tiny-rn", "neurons", unit) == "seven"
            assert atlas.histogram("tiny-rn", "neurons", unit) == record["histogram"]
            assert atlas.unit_texts("tiny-rn", "neurons", unit) == []
        with pytest.raises(UnitsError, match="7.0 is not an integer unit index"):
            atlas.unit(None, "neurons", 7.0)


def test_set_label_refuses_a_float_unit_rather_than_truncating_it(tmp_path):
    from neuronscope.errors import UnitsError

    with Atlas(tmp_path / "atlas") as atlas:
        with pytest.raises(UnitsError):
            atlas.set_label("m@x", "layer", 7.9, "star")
        atlas.set_label("m@x", "layer", np.int64(7), "star")
        assert atlas.label("m@x", "layer", 7) == "star"


def test_render_and_word_writers_refuse_a_float_unit_and_store_plain_ints(tmp_path):
    """write_featurevis and write_unit_texts read units with int(): unit 2.7 was stored as unit 2, where
    set_label and every reader refuse it. They read units as parse_unit does, as set_label does."""
    import torch

    from neuronscope.errors import UnitsError

    render = {"kind": "plain", "png": b"x", "objective": 1.0}
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.register_layer("m@x", "visual.layer4", aliases=["neurons"], units=4, grid=(1, 1))
        for layer in ("neurons", "visual.layer3"):  # registered or not yet: the float is refused either way
            with pytest.raises(UnitsError, match="2.7 is not an integer unit index"):
                atlas.write_featurevis(None, "m@x", layer, [{**render, "unit": 2.7}])
            with pytest.raises(UnitsError, match="2.7 is not an integer unit index"):
                atlas.write_unit_texts("words", None, "m@x", layer, {2.7: [("cat", 1.0)]})
        assert [atlas.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("featurevis", "words")] == [0, 0]
        atlas.write_featurevis(None, "m@x", "neurons", [{**render, "unit": np.int64(2)}])
        atlas.write_unit_texts("words", None, "m@x", "neurons", {torch.tensor(2): [("cat", 1.0)]})
        stored = [row[0] for table in ("featurevis", "words")
                  for row in atlas.db.execute(f"SELECT unit FROM {table}")]
        assert stored == [2, 2] and all(type(unit) is int for unit in stored)
        assert atlas.unit("m@x", "neurons", 2)["words"] == [{"word": "cat", "score": 1.0}]
