"""The scanner end to end on tiny-rn: brute-force equality, broken files, kill-and-resume, rescans, sources."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from PIL import Image
from typer.testing import CliRunner

import neuronscope
from neuronscope.activations import Recorder, record, spatial_max, zero_units
from neuronscope.atlas import THUMB_SIZE, Atlas
from neuronscope.atlas.thumbnails import MARK_COLOUR
from neuronscope.cli import app
from neuronscope.errors import NeuronscopeError
from neuronscope.imagefiles import file_sha256, open_image
from neuronscope.mining import open_source, scan
from neuronscope.mining.histogram import MIN_EXPONENT
from tests.helpers import (LAYERS, NEURONS, SETTINGS, broken_files, dump, make_images, noise, rng_states,
                           same_rng, training, unusual_files)


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    make_images(folder)
    return folder


def run_scan(model, source, atlas_dir, **options):
    options = {"settings": SETTINGS, "batch_size": 5, "thumbnails": False, **options}
    with Atlas(atlas_dir) as atlas:
        return scan(model, open_source(source), atlas, LAYERS, **options)


def near(x: float, y: float) -> bool:
    """Within fp32 forward noise: convolutions round differently at different batch sizes (~1e-7)."""
    return abs(x - y) <= 1e-6 * max(abs(x), abs(y)) + 1e-7


def assert_same_examples(a: list[dict], b: list[dict]) -> None:
    """Same ids and cells, except where values tie within forward noise (such ids may swap)."""
    values_a, values_b = [e["activation"] for e in a], [e["activation"] for e in b]
    np.testing.assert_allclose(values_a, values_b, rtol=1e-6, atol=1e-7)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if (x["image"], x["cell"]) == (y["image"], y["cell"]):
            continue
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(a)]
        tied = any(near(values_a[i], values_a[j]) or near(values_b[i], values_b[j]) for j in neighbours)
        assert tied or (i == len(a) - 1 and near(values_a[i], values_b[i])), (i, x, y)


def assert_same_units(left: list[dict], right: list[dict], *, exact: bool = True) -> None:
    """Identical per CONVENTIONS.md: same ids, cells, counts and samples; values within 1e-6 relative.

    ``exact=False`` for scans whose forwards ran at other batch sizes: near-tied
    examples may swap, and a value within noise of a bin edge may change bins.
    """
    for a, b in zip(left, right, strict=True):
        for kind in ("top", "bottom"):
            if exact:
                assert [(e["image"], e["cell"]) for e in a[kind]] == [(e["image"], e["cell"]) for e in b[kind]]
            assert_same_examples(a[kind], b[kind])
        if exact:
            assert a["histogram"]["counts"] == b["histogram"]["counts"]
            assert a["histogram"]["samples"] == b["histogram"]["samples"]
            assert a["histogram"]["edges"] == pytest.approx(b["histogram"]["edges"])
        else:
            assert sum(a["histogram"]["counts"]) == sum(b["histogram"]["counts"])
            moved = np.abs(np.subtract(a["histogram"]["counts"], b["histogram"]["counts"])).sum() \
                if len(a["histogram"]["counts"]) == len(b["histogram"]["counts"]) else 2
            assert moved <= 2
        assert a["stats"] == pytest.approx(b["stats"], rel=1e-6, abs=1e-7)


def test_scan_equals_brute_force_over_all_activations(tiny_rn, images, tmp_path):
    outcome = run_scan(tiny_rn, images, tmp_path / "atlas", thumbnails=True)
    assert outcome.images == 24 and sum(outcome.skipped.values()) == 0
    # A notebook shows the outcome in a few lines (its arrays once made it hundreds).
    assert len(repr(outcome)) < 600 and "LayerScan(tiny-rn@random visual.layer3.0" in repr(outcome), repr(outcome)

    paths = sorted(images.rglob("*.png"), key=lambda p: p.relative_to(images).as_posix())
    ids = [f"{p.relative_to(images).as_posix()}#{file_sha256(p)[:12]}" for p in paths]
    pixels = tiny_rn.preprocess.to_pixels([open_image(p) for p in paths])
    with torch.no_grad():
        maps = record(tiny_rn, tiny_rn.preprocess.normalize(pixels), [NEURONS])[NEURONS]  # [24, C, 2, 2]
    values, cells = spatial_max(maps)
    order = np.arange(len(ids))  # ids sort like their paths
    live_units = [u for u in range(values.shape[1]) if values[:, u].std() > 0][:40]
    assert len(live_units) >= 20
    records = dump(tmp_path / "atlas", "neurons", live_units)
    for unit, unit_record in zip(live_units, records):
        column = values[:, unit].numpy()
        best = np.lexsort((order, -column))[:SETTINGS.top_k]
        assert [e["image"] for e in unit_record["top"]] == [ids[i] for i in best]
        assert [e["cell"] for e in unit_record["top"]] == cells[best, unit].tolist()
        np.testing.assert_allclose([e["activation"] for e in unit_record["top"]], column[best], rtol=1e-6, atol=1e-6)
        worst = np.lexsort((order, column))[:SETTINGS.bottom_k]
        assert [e["image"] for e in unit_record["bottom"]] == [ids[i] for i in worst]
        stats = unit_record["stats"]
        assert stats["count"] == 24 and stats["max"] == pytest.approx(float(column.max()), rel=1e-6)
        assert stats["mean"] == pytest.approx(float(column.astype(np.float64).mean()), rel=1e-5, abs=1e-6)
        assert stats["std"] == pytest.approx(float(column.astype(np.float64).std()), rel=1e-5, abs=1e-6)
        histogram = unit_record["histogram"]
        assert sum(histogram["counts"]) == 24
        width = histogram["edges"][1] - histogram["edges"][0]
        assert np.log2(width) == int(np.log2(width)) >= MIN_EXPONENT  # dyadic bins
        assert histogram["edges"][0] <= column.min() and column.max() < histogram["edges"][-1]
        # Thumbnails: one per top example, the firing cell outlined in red.
        for example in unit_record["top"]:
            thumb = Image.open(tmp_path / "atlas" / example["thumb"]).convert("RGB")
            row, col = example["cell"]  # a 2x2 grid on a 64 px thumbnail (the input's size): cells of 32 px
            assert thumb.size == (64, 64) and THUMB_SIZE >= 64
            assert thumb.getpixel((col * 32, row * 32)) == MARK_COLOUR
            assert thumb.getpixel(((1 - col) * 32, (1 - row) * 32)) != MARK_COLOUR
    with Atlas(tmp_path / "atlas", create=False) as atlas:
        run = atlas.run(outcome.run_id)
    assert run["status"] == "finished" and run["images"] == 24 and run["precision"] == "fp32"
    assert set(run["versions"]) >= {"torch", "open_clip", "pillow", "neuronscope"}
    # from a checkout (an editable install: version 0.1.0 at every commit) the code is named by its commit
    package = Path(neuronscope.__file__).parent
    head = subprocess.run(["git", "-C", str(package), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode == 0:
        assert run["versions"]["neuronscope_source"].removesuffix("+modified") == head.stdout.strip()
    assert run["layers"][0] == {"layer": NEURONS, "aliases": ["neurons", "image_block_4/1/Add_6"]}
    assert "/" not in run["dataset"]["name"] and str(tmp_path) not in str(run)  # no absolute paths


def test_batch_size_and_workers_do_not_change_results(tiny_rn, images, tmp_path):
    """The streaming merge is exactly batch-independent (test_scan_stats); here the forward's own
    fp32 noise across batch sizes (~1e-7) is the only difference left."""
    run_scan(tiny_rn, images, tmp_path / "a", batch_size=24)
    run_scan(tiny_rn, images, tmp_path / "b", batch_size=4, workers=2)
    units = range(0, 512, 9)
    assert_same_units(dump(tmp_path / "a", "neurons", units), dump(tmp_path / "b", "neurons", units), exact=False)
    assert_same_units(dump(tmp_path / "a", "visual.layer3.0", range(0, 256, 7)),
                      dump(tmp_path / "b", "visual.layer3.0", range(0, 256, 7)), exact=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: merges run on a stream of their own there")
def test_merges_on_their_own_cuda_stream_give_the_results_of_the_models_stream(images, tmp_path, monkeypatch):
    """On a GPU each batch's merges run on a side stream that waits only for that batch's forward; the
    results are those of merging on the model's stream (the same kernels, in the same order per batch)."""
    import contextlib

    from neuronscope.mining import scanner
    from neuronscope.models import load_model

    model = load_model("mini-clip", device="cuda", precision="fp32")
    run_scan(model, images, tmp_path / "side", batch_size=8)
    monkeypatch.setattr(scanner, "_merge_stream", lambda update: contextlib.nullcontext())
    run_scan(model, images, tmp_path / "model", batch_size=8)
    units = range(0, 512, 5)
    assert_same_units(dump(tmp_path / "side", "neurons", units), dump(tmp_path / "model", "neurons", units))


class Killed(Exception):
    """Stands for SIGKILL: raised from the progress hook after some batches."""


def killed_with_checkpoint(model, images: Path, atlas_dir: Path, *, after: int, checkpoint_every: int):
    """Scan in batches of 4, killed once ``after`` images are done; the checkpoint left: (key, arrays, meta)."""
    def kill(progress) -> None:
        if progress.done >= after:
            raise Killed

    with pytest.raises(Killed):
        run_scan(model, images, atlas_dir, batch_size=4, checkpoint_every=checkpoint_every, on_batch=kill)
    with Atlas(atlas_dir) as atlas:
        (key,) = [path.stem for path in atlas.checkpoints_dir.glob("*.npz")]
        return (key, *atlas.load_checkpoint(key))


def test_killed_scan_resumes_and_ends_identical(tiny_rn, images, tmp_path):
    run_scan(tiny_rn, images, tmp_path / "whole", batch_size=4)

    def kill_after(batches: int):
        seen = []

        def hook(progress) -> None:
            seen.append(progress)
            if len(seen) == batches:
                raise Killed
        return hook

    with pytest.raises(Killed):
        run_scan(tiny_rn, images, tmp_path / "killed", batch_size=4, checkpoint_every=8, on_batch=kill_after(3))
    with Atlas(tmp_path / "killed") as atlas:
        assert atlas.runs()[0]["status"] == "interrupted"
        assert list((tmp_path / "killed" / "checkpoints").glob("*.npz"))
    outcome = run_scan(tiny_rn, images, tmp_path / "killed", batch_size=4)  # the same command again
    assert outcome.resumed_from == 8 and outcome.run_id == 1 and outcome.images == 24
    units = range(0, 512, 5)
    assert_same_units(dump(tmp_path / "whole", "neurons", units), dump(tmp_path / "killed", "neurons", units))
    with Atlas(tmp_path / "killed") as atlas:
        assert [run["status"] for run in atlas.runs()] == ["finished"]
    assert not list((tmp_path / "killed" / "checkpoints").glob("*.npz"))


def test_a_ctrl_c_keeps_every_batch_scanned_before_it(tiny_rn, images, tmp_path, monkeypatch, ctrl_c):
    """Checkpoints are minutes apart (every 2,048 files or 5 minutes): a Ctrl-C threw away what was scanned
    since the last one (a review's rerun started over at file 0 after a minute). The Ctrl-C is held until the
    batch at hand is in the state, the state is saved, and the same command goes on from there."""
    import signal

    from neuronscope.mining import scanner

    run_scan(tiny_rn, images, tmp_path / "whole", batch_size=4)
    forward, calls = scanner.forward_batch, []

    def interrupted_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # a Ctrl-C in the middle of the third batch
            ctrl_c()
        return forward(*args, **kwargs)

    monkeypatch.setattr(scanner, "forward_batch", interrupted_forward)
    with pytest.raises(KeyboardInterrupt):
        run_scan(tiny_rn, images, tmp_path / "stopped", batch_size=4, checkpoint_every=1000)
    monkeypatch.setattr(scanner, "forward_batch", forward)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    outcome = run_scan(tiny_rn, images, tmp_path / "stopped", batch_size=4)
    assert outcome.resumed_from == 12 and outcome.images == 24  # the third batch included
    units = range(0, 512, 5)
    assert_same_units(dump(tmp_path / "whole", "neurons", units), dump(tmp_path / "stopped", "neurons", units))


def test_a_checkpoint_of_another_unit_count_starts_the_run_over(tiny_rn, images, tmp_path, caplog):
    """A checkpoint from an older neuronscope that read a layer another way (a channels-last layer's rows as
    units) has the same config key but other shapes: the run starts over instead of failing on every rerun."""
    run_scan(tiny_rn, images, tmp_path / "whole", batch_size=4)
    key, arrays, meta = killed_with_checkpoint(tiny_rn, images, tmp_path / "atlas", after=8, checkpoint_every=8)
    arrays = {name: (value[:3] if name.startswith("L0.moments.") else value) for name, value in arrays.items()}
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.save_checkpoint(key, arrays, meta)
    with caplog.at_level("WARNING", logger="neuronscope.mining.scanner"):
        outcome = run_scan(tiny_rn, images, tmp_path / "atlas", batch_size=4)
    assert "starts over" in caplog.text and outcome.resumed_from == 0 and outcome.run_id == 1
    units = range(0, 512, 7)
    assert_same_units(dump(tmp_path / "whole", "neurons", units), dump(tmp_path / "atlas", "neurons", units))


def test_a_checkpoint_of_an_older_format_starts_the_run_over(tiny_rn, images, tmp_path, caplog):
    """A checkpoint says which format it is; one without (an older neuronscope's, whose layout the scanner no
    longer reads) is not read: the run starts over from the first file, and says why."""
    from neuronscope.mining.scanner import CHECKPOINT_FORMAT

    run_scan(tiny_rn, images, tmp_path / "whole", batch_size=4)
    key, arrays, meta = killed_with_checkpoint(tiny_rn, images, tmp_path / "atlas", after=8, checkpoint_every=8)
    assert meta["format"] == CHECKPOINT_FORMAT
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.save_checkpoint(key, arrays, {name: value for name, value in meta.items() if name != "format"})
    with caplog.at_level("WARNING", logger="neuronscope.mining.scanner"):
        outcome = run_scan(tiny_rn, images, tmp_path / "atlas", batch_size=4)
    assert "older neuronscope" in caplog.text and "starts over" in caplog.text
    assert outcome.resumed_from == 0 and outcome.run_id == 1
    units = range(0, 512, 7)
    assert_same_units(dump(tmp_path / "whole", "neurons", units), dump(tmp_path / "atlas", "neurons", units))


def test_duplicates_are_tracked_by_content_key_only_for_files_whose_size_repeats(tiny_rn, images, tmp_path):
    # The scan kept (and re-sorted into every checkpoint) the content key of every image it saw.
    from neuronscope.mining.sources import size_twins

    shutil.copy(images / "b" / "img01.png", images / "b" / "zz_copy.png")  # the last entry
    source = open_source(images)
    twins = set(size_twins(source.entries).tolist())
    assert {entry.name for ordinal, entry in enumerate(source.entries) if ordinal in twins} >= {"b/img01.png",
                                                                                                "b/zz_copy.png"}
    _, arrays, meta = killed_with_checkpoint(tiny_rn, images, tmp_path / "atlas", after=12, checkpoint_every=12)
    assert meta["next_ordinal"] == 12 and len(arrays["seen"]) == len([o for o in twins if o < 12]) < 12
    outcome = run_scan(tiny_rn, images, tmp_path / "atlas", batch_size=4)  # resumed: the copy is still a copy
    assert outcome.resumed_from == 12 and outcome.skipped["duplicate"] == 1 and outcome.images == 24


def test_a_source_changed_after_a_kill_starts_over_and_drops_the_stale_checkpoint(tiny_rn, images, tmp_path,
                                                                                    caplog):
    def kill_at_once(progress) -> None:
        raise Killed

    with pytest.raises(Killed):
        run_scan(tiny_rn, images, tmp_path / "atlas", batch_size=4, checkpoint_every=4, on_batch=kill_at_once)
    (checkpoint,) = (tmp_path / "atlas" / "checkpoints").glob("*.npz")
    shutil.copy(checkpoint, checkpoint.with_name(checkpoint.stem + "-ray.npz"))  # as if Ray had run it too
    (images / "a" / "img00.png").unlink()  # the listing changes: the old run's config key cannot come back
    with caplog.at_level("WARNING", logger="neuronscope.mining.scanner"):
        outcome = run_scan(tiny_rn, images, tmp_path / "atlas", batch_size=4)
    assert "source changed since run 1" in caplog.text and outcome.run_id == 2 and outcome.images == 23
    assert not list((tmp_path / "atlas" / "checkpoints").glob("*.npz"))
    with Atlas(tmp_path / "atlas") as atlas:
        assert [run["status"] for run in atlas.runs()] == ["abandoned", "finished"]


def test_rescan_duplicates_nothing(tiny_rn, images, tmp_path):
    def row_counts() -> dict[str, int]:
        with Atlas(tmp_path / "atlas") as atlas:
            return {table: atlas.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    for table in ("images", "units", "examples", "layers", "histograms")}

    run_scan(tiny_rn, images, tmp_path / "atlas", thumbnails=True)
    first, first_units = row_counts(), dump(tmp_path / "atlas", "neurons", range(0, 512, 11))
    thumbs = sorted(p.name for p in (tmp_path / "atlas" / "thumbs").iterdir())
    run_scan(tiny_rn, images, tmp_path / "atlas", thumbnails=True, batch_size=8)
    assert row_counts() == first
    assert sorted(p.name for p in (tmp_path / "atlas" / "thumbs").iterdir()) == thumbs
    assert len(list((tmp_path / "atlas" / "arrays").rglob("*.npz"))) == 2  # one per layer, old ones removed
    assert_same_units(first_units, dump(tmp_path / "atlas", "neurons", range(0, 512, 11)))
    with Atlas(tmp_path / "atlas") as atlas:
        assert [run["status"] for run in atlas.runs()] == ["finished", "finished"]


def test_salted_folder_counts_every_reason_and_scans_unusual_modes(tiny_rn, images, tmp_path):
    for name, data in unusual_files().items():
        (images / "unusual").mkdir(exist_ok=True)
        (images / "unusual" / name).write_bytes(data)
    for name, (data, _reason) in broken_files().items():
        (images / "broken").mkdir(exist_ok=True)
        (images / "broken" / name).write_bytes(data)
    (images / "broken" / "huge.png").write_bytes((images / "a" / "img00.png").read_bytes())
    big = noise(120, 120, seed=99)
    big.save(images / "broken" / "bomb.png")  # over the small pixel limit below
    (images / "broken" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    shutil.copy(images / "b" / "img01.png", images / "b" / "img01_copy.png")
    outcome = run_scan(tiny_rn, images, tmp_path / "atlas", max_pixels=120 * 120 - 1, workers=2)
    assert outcome.skipped == {"zero_byte": 1, "truncated": 1, "not_image": 1, "too_many_pixels": 1,
                               "unreadable": 1, "missing": 1, "duplicate": 2}  # img00 and img01 copies
    assert outcome.images == 24 + len(unusual_files())
    named = {"broken/empty.png": "zero_byte", "broken/half.png": "truncated", "broken/notes.png": "not_image",
             "broken/huge.png": "duplicate", "b/img01_copy.png": "duplicate", "broken/bomb.png": "too_many_pixels",
             "broken/garbled.tif": "unreadable", "broken/gone.jpg": "missing"}
    assert outcome.skip_counts.files() == named  # which files, not only how many (the run was nameless)
    with Atlas(tmp_path / "atlas") as atlas:
        assert atlas.run(outcome.run_id)["skipped"] == outcome.skipped
        assert atlas.run(outcome.run_id)["dataset"]["skipped_files"] == named
        assert atlas.unit(None, "neurons", 0)["stats"]["count"] == outcome.images


def test_tar_shard_and_path_list_sources(tiny_rn, images, tmp_path):
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        for path in sorted(images.rglob("*.png")):
            tar.add(path, arcname=path.relative_to(images).as_posix())
    listing = tmp_path / "list.txt"
    lines = [path.relative_to(tmp_path).as_posix() for path in sorted(images.rglob("*.png"))]
    listing.write_text("\n".join(["# my images", *lines, "images/missing.png"]) + "\n")
    from_folder = run_scan(tiny_rn, images, tmp_path / "folder")
    from_tar = run_scan(tiny_rn, shard, tmp_path / "tar")
    from_list = run_scan(tiny_rn, listing, tmp_path / "list")
    assert from_tar.images == from_list.images == 24 and from_list.skipped["missing"] == 1
    unit = next(u for u in range(512) if from_folder.layers[0].std[u] > 0)
    tops = [dump(tmp_path / name, "neurons", [unit])[0]["top"] for name in ("folder", "tar", "list")]
    assert tops[1][0]["image"].startswith("shard.tar::") and tops[2][0]["image"].startswith("images/")
    for top in tops[1:]:
        assert [e["image"].split("::")[-1].removeprefix("images/") for e in top] == [e["image"] for e in tops[0]]
        assert [e["activation"] for e in top] == [e["activation"] for e in tops[0]]


def test_a_tar_shard_cut_mid_member_lists_its_complete_members_and_counts_the_cut_one_truncated(tmp_path, caplog):
    """An interrupted download stopped the scan with 'not an uncompressed tar shard ... unpack it'."""
    from neuronscope.mining.loader import iter_decoded

    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        for index in range(3):
            data = io.BytesIO()
            noise(seed=index).save(data, "PNG")
            member = tarfile.TarInfo(f"img{index}.png")
            member.size = len(data.getvalue())
            tar.addfile(member, io.BytesIO(data.getvalue()))
    with tarfile.open(shard) as tar:
        cut = tar.getmember("img1.png").offset_data + 100  # inside the second member's bytes
    cut_shard = tmp_path / "cut.tar"
    cut_shard.write_bytes(shard.read_bytes()[:cut])
    outcomes = {name: getattr(item, "reason", "image") for name, item in iter_decoded([str(cut_shard)])}
    assert outcomes == {"cut.tar::img0.png": "image", "cut.tar::img1.png": "truncated"}
    assert "cut.tar ends inside member img1.png" in caplog.text and "re-fetch the shard" in caplog.text
    (tmp_path / "header.tar").write_bytes(shard.read_bytes()[:300])  # cut inside the first header
    with pytest.raises(NeuronscopeError, match="header.tar is cut short .*re-fetch it"):
        open_source(tmp_path / "header.tar")


def test_a_tar_shard_packed_from_dot_keeps_its_index_categories_and_plain_member_names(tmp_path):
    """``tar -C dir -cf x.tar .`` names its members ``./a.png``: the index (``a.png``) matched none of them,
    and every image's category was the folder ``.``."""
    from neuronscope.mining.sources import image_folder

    folder = tmp_path / "d"
    folder.mkdir()
    for index, name in enumerate(("a.png", "b.png")):
        noise(seed=index).save(folder / name)
    (folder / "index.json").write_text(json.dumps([{"file": "a.png", "category": "red"},
                                                   {"file": "b.png", "category": "blue"}]))
    shard = tmp_path / "dot.tar"
    with tarfile.open(shard, "w") as tar:
        tar.add(folder, arcname=".")
    source = open_source(shard)
    assert [entry.name for entry in source.entries] == ["dot.tar::a.png", "dot.tar::b.png"]
    assert source.categories == {"dot.tar::a.png": "red", "dot.tar::b.png": "blue"}
    assert image_folder(source.entries[0].name + "#0123") is None


def test_path_list_names_never_climb_out_of_or_spell_an_absolute_path(tmp_path):
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    (tmp_path / "lists").mkdir()
    for name in ("elsewhere/deep/a.png", "elsewhere/b.png"):
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "lists" / "outside.txt"
    listing.write_text(f"{tmp_path / 'elsewhere/deep/a.png'}\n../elsewhere/b.png\n")
    source = open_source(listing)
    assert [entry.name for entry in source.entries] == ["b.png", "deep/a.png"]  # was ../elsewhere/b.png, ...
    assert source.root == str(tmp_path / "elsewhere")
    alone = tmp_path / "lists" / "alone.txt"
    alone.write_text(f"{tmp_path / 'elsewhere/deep/a.png'}\n")
    assert [entry.name for entry in open_source(alone).entries] == ["a.png"]


def test_a_missing_path_in_a_list_decides_no_names_and_none_spells_an_absolute_path(tmp_path):
    """A stale line (a file gone, even outside the list's folder) named every image by its absolute path."""
    (tmp_path / "imgs").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/a.png\nimgs/b.png\nimgs/gone.png\n/nonexistent/abs.png\n")
    source = open_source(listing)
    assert [entry.name for entry in source.entries] == ["imgs/a.png", "imgs/b.png", "imgs/gone.png", "list.txt:4"]
    assert source.root == str(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "c.png").write_bytes(b"x")
    spread = tmp_path / "other" / "spread.txt"  # the files that exist share only "/": refused, not named by it
    spread.write_text(f"c.png\n{Path(shutil.__file__).resolve()}\n")
    with pytest.raises(NeuronscopeError, match="share no folder but /.*list images under one folder"):
        open_source(spread)


def test_a_path_list_that_is_not_utf8_is_refused_in_one_line_naming_it(tmp_path):
    listing = tmp_path / "binary.txt"
    listing.write_bytes(b"\xff\xfeimgs/a.png\n")
    with pytest.raises(NeuronscopeError, match=r"binary.txt: not UTF-8 text .*one path a line, UTF-8"):
        open_source(listing)


KILLED_SCAN = """
import sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from tests.helpers import LAYERS, SETTINGS, randomize_last_bn
from neuronscope.atlas import THUMB_SIZE, Atlas
from neuronscope.atlas.thumbnails import MARK_COLOUR
from neuronscope.cli import app
from neuronscope.mining import open_source, scan
from neuronscope.models import load_model
from neuronscope.runtime import seed_everything

seed_everything(0)
model = load_model("tiny-rn", weights="random")
randomize_last_bn(model.module)
with Atlas({atlas!r}) as atlas:
    scan(model, open_source({images!r}), atlas, LAYERS, settings=SETTINGS, batch_size=4, checkpoint_every=4,
         thumbnails=False, on_batch=lambda progress: time.sleep(0.3))  # slow enough to be killed mid-scan
"""


@pytest.mark.slow
def test_sigkilled_scan_resumes_identical(tiny_rn, images, tmp_path):
    """A real SIGKILL (no cleanup, no status update) in the middle of a scan, then the same scan again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = str(Path(__file__).resolve().parent.parent)
    script = KILLED_SCAN.format(root=root, atlas=str(tmp_path / "killed"), images=str(images))
    process = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not list((tmp_path / "killed" / "checkpoints").glob("*.npz")):
        assert process.poll() is None and time.monotonic() < deadline, "the scan ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with Atlas(tmp_path / "killed") as atlas:
        assert atlas.runs()[0]["status"] == "running"  # killed: nobody marked it
    outcome = run_scan(tiny_rn, images, tmp_path / "killed", batch_size=4, checkpoint_every=4)
    assert 0 < outcome.resumed_from < 24 and outcome.images == 24 and outcome.run_id == 1
    run_scan(tiny_rn, images, tmp_path / "whole", batch_size=4)
    units = range(0, 512, 5)
    assert_same_units(dump(tmp_path / "whole", "neurons", units), dump(tmp_path / "killed", "neurons", units))


def test_conditional_buckets_hold_the_smallest_hashes_of_their_images(tiny_rn, images, tmp_path):
    from neuronscope.mining import sample_hash

    run_scan(tiny_rn, images, tmp_path / "atlas")
    paths = sorted(images.rglob("*.png"), key=lambda p: p.relative_to(images).as_posix())
    ids = [f"{p.relative_to(images).as_posix()}#{file_sha256(p)[:12]}" for p in paths]
    pixels = tiny_rn.preprocess.to_pixels([open_image(p) for p in paths])
    with torch.no_grad():
        values = spatial_max(record(tiny_rn, tiny_rn.preprocess.normalize(pixels), [NEURONS])[NEURONS])[0]
    with Atlas(tmp_path / "atlas") as atlas:
        for unit in (1, 2, 3, 10):
            record_ = atlas.unit(None, "neurons", unit)
            buckets = atlas.conditional_buckets(None, "neurons", unit, n_buckets=4)
            assert sum(b["count"] for b in buckets) == 24
            edges, std = record_["histogram"]["edges"], record_["stats"]["std"]
            width = (edges[-1] - edges[0]) / std / 4
            for position, bucket in enumerate(buckets):
                assert bucket["from_sd"] == pytest.approx(edges[0] / std + position * width)
                members = []
                for image, value in zip(ids, values[:, unit].tolist()):
                    bin_index = max(i for i in range(len(edges) - 1) if edges[i] <= value)
                    centre = (bin_index + 0.5) / (len(edges) - 1) * 4  # in buckets; on an edge: the upper
                    if int(centre) == position:
                        members.append(image)
                assert len(members) == bucket["count"]
                assert bucket["samples"] == sorted(members, key=lambda i: sample_hash(i, 0))[:SETTINGS.reservoir]


def test_conditional_buckets_take_each_images_category_from_its_sources_index_json(tiny_rn, images, tmp_path):
    """A flat tar shard (the mini CLIP's split) has no folders for the conditional plot's categories: they came
    out ``{}`` for every bucket. Its ``index.json`` (``{"images": [{"file", "concept", ...}]}``) now gives them,
    and an image it lists without one is ``(none)``; a folder keeps its folders, and an ``index.json`` at its
    top wins over them."""
    paths = sorted(images.rglob("*.png"))
    concept = {f"{index:02d}.png": ("star" if index < 16 else "bug") for index in range(len(paths))}
    index = {"images": [{"file": name, "kind": "drawing", "concept": concept[name]} for name in concept][:-1]
             + [{"file": "23.png", "kind": "reading", "word": "zap"}]}
    shard = tmp_path / "flat.tar"
    with tarfile.open(shard, "w") as tar:
        for position, path in enumerate(paths):
            tar.add(path, arcname=f"{position:02d}.png")
        data = json.dumps(index).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    expected = {**{name: concept[name] for name in list(concept)[:-1]}, "23.png": "(none)"}

    def shares(atlas_dir: Path, unit: int) -> list[dict]:
        with Atlas(atlas_dir) as atlas:
            buckets = atlas.conditional_buckets(None, "neurons", unit, n_buckets=4)
        for bucket in buckets:  # every sample counted under its own category, the shares summing to one
            assert set(bucket["categories"]) >= {expected[image.split("::")[1].split("#")[0]]
                                                 for image in bucket["samples"]}
            if bucket["count"]:
                assert sum(bucket["categories"].values()) == pytest.approx(1.0)
        return [bucket["categories"] for bucket in buckets]

    run_scan(tiny_rn, shard, tmp_path / "tar")
    for unit in (1, 3, 10):
        categories = shares(tmp_path / "tar", unit)
        assert set().union(*categories) <= {"star", "bug", "(none)"} and any(categories)
    run_scan(tiny_rn, images, tmp_path / "folders")  # no index: the folders a and b
    with Atlas(tmp_path / "folders") as atlas:
        assert set().union(*(b["categories"] for b in atlas.conditional_buckets(None, "neurons", 1))) == {"a", "b"}
    (images / "index.json").write_text(json.dumps([{"file": p.relative_to(images).as_posix(), "category": "x"}
                                                   for p in paths]))
    run_scan(tiny_rn, images, tmp_path / "indexed")
    with Atlas(tmp_path / "indexed") as atlas:
        assert set().union(*(b["categories"] for b in atlas.conditional_buckets(None, "neurons", 1))) == {"x"}


def test_the_bundled_splits_source_gives_every_image_its_concept():
    """The demo scans the bundled split (a flat tar): its listing carries each image's concept from the split's
    index.json, which the scan stores for the conditional plot (a reading image has none: ``(none)``)."""
    from neuronscope.world.split import bundled_test_split_path, load_test_split

    source = open_source(bundled_test_split_path())
    split = load_test_split()
    assert len(source.categories) == len(source) == len(split.entries)
    assert {f"{source.name}::{entry['file']}": entry.get("concept", "(none)") for entry in split.entries} \
        == dict(source.categories)


def test_vit_tokens_and_pooled_vectors_scan(tiny_vit, images, tmp_path):
    with Atlas(tmp_path / "atlas") as atlas:
        outcome = scan(tiny_vit, open_source(images), atlas, ["neurons", "visual"], settings=SETTINGS, batch_size=8,
                       thumbnails=False)
        tokens, pooled = outcome.layers
        assert (tokens.units, tokens.grid) == (256, (4, 4)) and (pooled.units, pooled.grid) == (64, (1, 1))
        record_ = atlas.unit(None, "visual", 5)
        assert len(record_["top"]) == 5 and all(e["cell"] == [0, 0] for e in record_["top"])
        assert max(max(e["cell"]) for u in range(0, 256, 16)
                   for e in atlas.unit(None, "neurons", u)["top"]) <= 3


def test_a_folder_of_only_broken_files_gives_empty_units(tiny_rn, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for name, (data, _reason) in broken_files().items():
        (folder / name).write_bytes(data)
    outcome = run_scan(tiny_rn, folder, tmp_path / "atlas")
    assert outcome.images == 0 and sum(outcome.skipped.values()) == 4
    result = CliRunner().invoke(app, ["show", str(tmp_path / "atlas"), "--unit", "3", "--json"])
    assert result.exit_code == 0, result.output
    record_ = json.loads(result.stdout)  # valid JSON: no Infinity for the min/max of nothing
    assert record_["top"] == [] and record_["stats"]["count"] == 0 and record_["stats"]["max"] is None
    assert record_["histogram"]["counts"] == []
    text = CliRunner().invoke(app, ["show", str(tmp_path / "atlas"), "--unit", "3"])
    assert text.exit_code == 0 and "no images were scanned" in text.stdout


def test_an_unknown_layer_is_refused_before_the_atlas_is_created(images, tmp_path):
    """``scan --layers act4``: the error, and no empty atlas left behind for ``show`` to open."""
    out = tmp_path / "atlas"
    result = CliRunner().invoke(app, ["scan", "--model", "tiny-rn", "--weights", "random", "--layers", "act4",
                                      "--images", str(images), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 1 and "act4" in result.stderr
    assert not out.exists()


def test_scan_help_shows_the_ray_extra():
    """Rich markup swallowed ``[distributed]`` from ``pip install 'neuronscope[distributed]'``."""
    result = CliRunner().invoke(app, ["scan", "--help"])
    assert result.exit_code == 0 and "'neuronscope[distributed]'" in result.output


def test_a_channels_last_layer_scans_its_units_on_its_grid(images, tmp_path):
    """timm ConvNeXt runs its MLPs on [B, H, W, C]: the scan keeps C units on the (H, W) grid."""
    from tests.helpers import channels_last_model

    model = channels_last_model()
    with Atlas(tmp_path / "atlas") as atlas:
        outcome = scan(model, open_source(images), atlas, ["fc1"], settings=SETTINGS, batch_size=8, thumbnails=False)
        (fc1,) = outcome.layers
        assert (fc1.units, fc1.grid) == (12, (3, 4))
        assert max(max(e["cell"][0] for e in atlas.unit(None, "fc1", u)["top"]) for u in range(12)) <= 2


def test_a_scan_plan_takes_each_layers_geometry_from_layer_geometry_in_the_order_asked(images):
    """One grey forward answers units, grid and layout for the scan as for every other command; the plan keeps
    the order the layers were asked in (a checkpoint numbers them so), not the order they fire."""
    from neuronscope.activations import layer_geometry
    from neuronscope.imagefiles import PILLOW_MAX_PIXELS
    from neuronscope.mining.scanner import prepare_scan
    from tests.helpers import channels_last_model

    model = channels_last_model()
    plan = prepare_scan(model, open_source(images), ["out", "fc1"], SETTINGS, PILLOW_MAX_PIXELS)
    assert list(plan.shapes) == ["out", "fc1"]
    assert plan.shapes == layer_geometry(model, ["out", "fc1"])
    assert (plan.shapes["fc1"].units, plan.shapes["fc1"].layout) == (12, "channels_last")

def test_tokens_without_a_known_grid_store_the_grid_their_cells_lie_on(images, tmp_path):
    """A tower without ``grid_size`` (timm ViTs before the loader knew theirs): the grid stored is the one
    the cells are found on (a square of patch tokens), not (1, 1)."""
    from neuronscope.models import Preprocess, load_model

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patches = nn.Conv2d(3, 8, 4, stride=4)
            self.blocks = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            patches = self.patches(x).flatten(2).transpose(1, 2)  # [B, 9, 8]
            return self.blocks(torch.cat([patches.mean(1, keepdim=True), patches], dim=1))  # [B, 1 + 9, 8]

    torch.manual_seed(0)
    model = load_model(Tokens(), preprocess=Preprocess(image_size=12))
    assert model.token_grid is None
    with Atlas(tmp_path / "atlas") as atlas:
        (blocks,) = scan(model, open_source(images), atlas, ["blocks"], settings=SETTINGS, batch_size=8,
                         thumbnails=False).layers
        assert (blocks.units, blocks.grid) == (8, (3, 3))
        assert max(max(e["cell"]) for u in range(8) for e in atlas.unit(None, "blocks", u)["top"]) <= 2


def test_a_finished_scan_leaves_no_checkpoint_of_either_backend(tiny_rn, images, tmp_path):
    """A run killed under Ray and finished locally (or the other way round): both checkpoints go."""
    def kill_at_once(progress) -> None:
        raise Killed

    with pytest.raises(Killed):
        run_scan(tiny_rn, images, tmp_path / "atlas", batch_size=4, checkpoint_every=4, on_batch=kill_at_once)
    (checkpoint,) = (tmp_path / "atlas" / "checkpoints").glob("*.npz")
    shutil.copy(checkpoint, checkpoint.with_name(checkpoint.stem + "-ray.npz"))
    assert run_scan(tiny_rn, images, tmp_path / "atlas", batch_size=4).resumed_from == 4
    assert not list((tmp_path / "atlas" / "checkpoints").glob("*.npz"))


def test_a_failure_while_finishing_leaves_the_run_interrupted_and_resumable(tiny_rn, images, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs) -> None:
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(Atlas, "write_scan", disk_full)
        with pytest.raises(OSError, match="No space"):
            run_scan(tiny_rn, images, tmp_path / "atlas", batch_size=4)
    with Atlas(tmp_path / "atlas") as atlas:
        assert [run["status"] for run in atlas.runs()] == ["interrupted"]
    outcome = run_scan(tiny_rn, images, tmp_path / "atlas", batch_size=4)
    assert outcome.run_id == 1 and outcome.resumed_from == outcome.images + sum(outcome.skipped.values())


def _scan_cli(images: Path, atlas_dir: Path, *extra: str):
    return CliRunner().invoke(app, ["scan", "--model", "tiny-rn", "--weights", "random", "--layers", "neurons",
                                    "--images", str(images), "--out", str(atlas_dir), "--device", "cpu",
                                    "--no-thumbnails", "--workers", "0", *extra])


def test_a_rescan_says_whose_results_it_replaced(images, tmp_path):
    """`scan --top-k 8` into an atlas scanned at 48 dropped examples without a word."""
    assert _scan_cli(images, tmp_path / "atlas", "--top-k", "4").exit_code == 0
    again = _scan_cli(images, tmp_path / "atlas", "--top-k", "2")
    assert again.exit_code == 0, again.output
    assert again.stdout.strip().endswith("; replaced run 1's results for visual.layer4.1.act3:input"), again.stdout
    report = json.loads(_scan_cli(images, tmp_path / "atlas", "--top-k", "2", "--json").stdout)
    assert report["run_id"] == 3 and report["replaced"] == [2]
    first = json.loads(_scan_cli(images, tmp_path / "other", "--json").stdout)
    assert "replaced" not in first  # nothing to replace: the report's usual keys


def test_scan_names_a_few_skipped_files_per_reason_on_stderr_and_in_its_report(images, tmp_path):
    """`skipped: zero_byte 7` named no file: a researcher could neither fix nor re-fetch them."""
    for index in range(7):
        (images / f"empty{index}.png").write_bytes(b"")
    (images / "notes.png").write_bytes(b"not an image")
    text = _scan_cli(images, tmp_path / "atlas")
    assert text.exit_code == 0, text.output
    assert "skipped: zero_byte 7, not_image 1" in text.stdout
    lines = [line for line in text.stderr.splitlines() if line.startswith(("skipped ", "... "))]
    assert lines == [*(f"skipped empty{index}.png: zero_byte" for index in range(5)), "... and 2 more zero_byte",
                     "skipped notes.png: not_image"]
    report = json.loads(_scan_cli(images, tmp_path / "other", "--json").stdout)
    assert report["skipped_files"] == {**{f"empty{index}.png": "zero_byte" for index in range(5)},
                                       "notes.png": "not_image"}  # {file: reason}, as attack's


def test_a_checkpoint_keeps_the_skipped_files_names_and_parts_merge_them_in_any_order():
    from neuronscope.imagefiles import SkipCounts
    from neuronscope.mining.scanner import ScanState

    state = ScanState({})
    for name in ("c.png", "a.png"):
        state.skipped.count("truncated", name)
    restored = ScanState({})
    restored.load_state_dict(*state.state_dict())
    assert restored.skipped.files() == {"c.png": "truncated", "a.png": "truncated"}
    parts = [SkipCounts(), SkipCounts()]
    for index in range(12):
        parts[index % 2].count("missing", f"m{index:02d}.png")
    forward, backward = SkipCounts(), SkipCounts()
    for part in parts:
        forward.merge(part)
    for part in reversed(parts):
        backward.merge(part)
    assert forward.files() == backward.files() == {f"m{index:02d}.png": "missing" for index in range(5)}
    assert forward.as_dict()["missing"] == 12


def test_an_unfinished_scan_with_other_settings_is_pointed_out_by_the_one_that_finishes(tiny_rn, images, tmp_path):
    """Killed with one --top-k and finished with another, the first run stayed `running` with its checkpoint."""
    def kill(progress) -> None:
        if progress.done >= 8:
            raise Killed

    with pytest.raises(Killed), Atlas(tmp_path / "atlas") as atlas:
        scan(tiny_rn, open_source(images), atlas, ["neurons"], settings=SETTINGS, batch_size=4, checkpoint_every=4,
             thumbnails=False, on_batch=kill)
    (checkpoint,) = (tmp_path / "atlas" / "checkpoints").glob("*.npz")
    result = _scan_cli(images, tmp_path / "atlas", "--top-k", "2", "--json")
    assert result.exit_code == 0, result.output
    note = [line for line in result.stderr.splitlines() if line.startswith("note: run 1 ")]
    assert note and "with other settings, is unfinished" in note[0] and str(checkpoint) in note[0], result.stderr
    assert checkpoint.exists()  # said, not deleted
    assert "replaced" not in json.loads(result.stdout)  # the killed run wrote no results


def test_the_first_scan_of_a_layer_only_probed_before_replaces_nothing(images, tmp_path):
    """words / visualize / attribute / textvis register a layer with their run: the first scan of a layer only
    probed before said "replaced run 1's results" (a words run's) though no scan result was there."""
    with Atlas(tmp_path / "atlas") as atlas:
        words_run = atlas.start_run(command="neuronscope words", config={}, config_key="words", model="tiny-rn@random",
                                    weights_sha256=None, layers=[], dataset=None, precision="fp32")
        atlas.register_layer("tiny-rn@random", "visual.layer4.1.act3:input", aliases=["neurons"], units=64,
                             grid=(1, 1), run_id=words_run)
    result = _scan_cli(images, tmp_path / "atlas", "--top-k", "2")
    assert result.exit_code == 0, result.output
    assert "replaced" not in result.stdout, result.stdout
    report = json.loads(_scan_cli(images, tmp_path / "atlas", "--top-k", "2", "--json").stdout)
    assert report["replaced"] == [2]  # the scan's own results, not the words run's


def test_the_scan_key_tells_random_inits_apart_and_keeps_a_weight_files(images, tmp_path):
    """`tiny-rn@random` names every seed's init: the key takes the state dict's hash (a killed scan of one init
    is never resumed by another's); weights from a file keep their file hash, so their keys do not change."""
    from neuronscope.mining import scan_config
    from neuronscope.models import load_model

    source = open_source(images)
    inits = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        inits.append(load_model("tiny-rn", weights="random"))
    keys = [scan_config(model, LAYERS, source, SETTINGS, 10**8)[1] for model in inits]
    assert keys[0] != keys[1]
    torch.save(inits[0].module.state_dict(), tmp_path / "weights.pt")
    from_file = load_model("tiny-rn", weights=str(tmp_path / "weights.pt"))
    config, _ = scan_config(from_file, LAYERS, source, SETTINGS, 10**8)
    assert config["weights_sha256"] == from_file.weights_sha256 == file_sha256(tmp_path / "weights.pt")


def test_a_slow_scan_checkpoints_by_time_between_its_checkpoint_counts(tiny_rn, images, tmp_path):
    """A scan checkpoints every --checkpoint-every files or every `checkpoint_seconds`: on a CPU a large model
    could otherwise go hours without one. Here every batch is past the time (0 s) and none reaches the count."""
    def kill_after_two(progress) -> None:
        if progress.done == 8:
            raise Killed

    with pytest.raises(Killed):
        run_scan(tiny_rn, images, tmp_path / "atlas", batch_size=4, checkpoint_every=10**6, checkpoint_seconds=0.0,
                 on_batch=kill_after_two)
    assert run_scan(tiny_rn, images, tmp_path / "atlas", batch_size=4).resumed_from == 8


def test_the_scans_progress_hook_has_a_name_of_its_own_and_the_old_one_still_imports():
    """mining.scanner.ProgressHook (one ScanProgress a call) and probing.words.ProgressHook ((done, total))
    were two different things under one name: the scan's is ScanProgressHook, the old name an alias."""
    import typing

    from neuronscope.mining import ScanProgress, ScanProgressHook
    from neuronscope.mining.scanner import ProgressHook
    from neuronscope.probing.words import ProgressHook as WordsProgressHook

    assert ProgressHook is ScanProgressHook
    assert typing.get_args(ScanProgressHook) == ([ScanProgress], None)
    assert typing.get_args(WordsProgressHook) == ([int, int], None)
    assert typing.get_type_hints(scan)["on_batch"] == ScanProgressHook | None


def test_a_scan_reports_its_thumbnails_progress_and_a_rerun_that_reuses_them_has_none_to_draw(
        tiny_rn, images, tmp_path, capsys):
    """Drawing the thumbnails from the originals comes after the last batch (minutes for a large model): it
    reports its own progress, rather than a silence after ``scan (files): N/N, ETA 0 s``."""
    from neuronscope.commands.scan import ProgressReport

    def heard(report: ProgressReport, calls: list[tuple[int, int]]):
        def hook(done: int, total: int) -> None:
            calls.append((done, total))
            report.thumbnails(done, total)
        return hook

    first, report = [], ProgressReport(every_s=0.0)
    run_scan(tiny_rn, images, tmp_path / "atlas", thumbnails=True, on_batch=report,
             on_thumbnails=heard(report, first))
    drawn = len(list((tmp_path / "atlas" / "thumbs").iterdir()))
    assert drawn > 0 and first[0] == (0, drawn) and first[-1] == (drawn, drawn)
    assert all(total == drawn for _, total in first) and [done for done, _ in first] == sorted(d for d, _ in first)
    assert f"thumbnails: {drawn}/{drawn}" in capsys.readouterr().err

    again, report = [], ProgressReport(every_s=0.0)
    run_scan(tiny_rn, images, tmp_path / "atlas", thumbnails=True, on_thumbnails=heard(report, again))
    assert again == [(0, 0)]  # every thumbnail reused: none to draw, said once
    assert "thumbnails: 0/0" in capsys.readouterr().err

    without = []
    run_scan(tiny_rn, images, tmp_path / "none", thumbnails=False, on_thumbnails=heard(report, without))
    assert without == []


def test_a_scan_leaves_the_callers_rng(tiny_rn, images, tmp_path):
    before = rng_states()
    run_scan(tiny_rn, images, tmp_path / "a", thumbnails=True)
    assert same_rng(before)  # its DataLoaders (decoding, thumbnails) draw from their own generator


def test_a_scan_runs_a_training_model_in_eval_mode(tiny_rn, images, tmp_path):
    run_scan(tiny_rn, images, tmp_path / "eval")
    with training(tiny_rn.module):
        run_scan(tiny_rn, images, tmp_path / "train", batch_size=24)  # other batches: other batch statistics
    units = range(0, 64, 7)
    assert_same_units(dump(tmp_path / "eval", NEURONS, units), dump(tmp_path / "train", NEURONS, units))


def test_a_scan_under_a_recorders_edits_is_refused_naming_them(tiny_rn, images, tmp_path):
    with Recorder(tiny_rn, edits=[zero_units("neurons", "0-9")]):
        with pytest.raises(NeuronscopeError, match=r"edits \(neurons: zero\) are attached to tiny-rn.*outside"):
            run_scan(tiny_rn, images, tmp_path / "edited")
    run_scan(tiny_rn, images, tmp_path / "plain")  # the block closed: the model is its own again
