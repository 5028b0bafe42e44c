"""The streaming statistics equal brute force over all stored activations, whatever the batching and order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuronscope.activations import Recorder, spatial_max
from neuronscope.mining import LayerAccumulator, ScanSettings, reduce_batch, sample_hash
from neuronscope.mining.histogram import MIN_EXPONENT
from neuronscope.mining.topk import EMPTY

SETTINGS = ScanSettings(top_k=6, bottom_k=4, n_bins=16, reservoir=3, seed=5)


def accumulate(values, cells, map_means, *, batch_size: int, order: np.ndarray, grid=(3, 5)) -> LayerAccumulator:
    """Feed per-image values [N, C] in ``order``, ``batch_size`` at a time."""
    ordinals = np.arange(len(values), dtype=np.int64)
    hashes = np.array([sample_hash(f"img{i:03d}", SETTINGS.seed) for i in ordinals], np.int64)
    accumulator = LayerAccumulator(values.shape[1], grid, SETTINGS)
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        accumulator.update(values[chosen], cells[chosen], map_means[chosen], ordinals[chosen], hashes[chosen])
    return accumulator


def brute_histogram(column: np.ndarray, n_bins: int) -> tuple[int, int, np.ndarray]:
    """The smallest dyadic exponent whose grid holds the values in n_bins bins, its first bin, the counts."""
    exponent = MIN_EXPONENT
    while True:
        index = np.floor(column.astype(np.float64) * 2.0 ** -exponent).astype(np.int64)
        if index.max() - index.min() + 1 <= n_bins:
            return exponent, int(index.min()), np.bincount(index - index.min(), minlength=n_bins)
        exponent += 1


@pytest.fixture(scope="module")
def synthetic_maps():
    """Non-square maps [N, C, 3, 5] with units of very different scales, ties and a constant unit."""
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 30.0, 1e-3, 1.0, 1.0, 0.0]).view(1, 6, 1, 1)
    maps = torch.randn(60, 6, 3, 5, generator=generator) * scales
    maps[:, 3] = maps[:, 3].round()  # many ties
    maps[:, 4] = torch.relu(maps[:, 4]) - 0.5  # negative values
    return maps


def test_streaming_equals_brute_force_on_non_square_maps(synthetic_maps):
    values, cells, map_means = reduce_batch(synthetic_maps)
    accumulator = accumulate(values, cells, map_means, batch_size=7, order=np.arange(len(values)))
    ordinals = np.arange(len(values))
    hashes = np.array([sample_hash(f"img{i:03d}", SETTINGS.seed) for i in ordinals])
    flat = synthetic_maps.flatten(2)  # [N, C, 15]
    for unit in range(values.shape[1]):
        column = flat[:, unit].max(dim=1).values.numpy()
        best = np.lexsort((ordinals, -column))[:SETTINGS.top_k]  # ties by id (= ordinal)
        assert accumulator.top.ordinals[unit].tolist() == best.tolist()
        np.testing.assert_array_equal(accumulator.top.values[unit], column[best])
        argmax = flat[best, unit].argmax(dim=1).numpy()  # first max in row-major order
        np.testing.assert_array_equal(accumulator.top.cells[unit], np.stack([argmax // 5, argmax % 5], axis=1))
        worst = np.lexsort((ordinals, column))[:SETTINGS.bottom_k]
        assert accumulator.bottom.ordinals[unit].tolist() == worst.tolist()

        assert accumulator.moments.mean[unit] == pytest.approx(column.astype(np.float64).mean(), rel=1e-9, abs=1e-12)
        assert accumulator.moments.std[unit] == pytest.approx(column.astype(np.float64).std(), rel=1e-9, abs=1e-12)
        assert accumulator.moments.max[unit] == column.max() and accumulator.moments.min[unit] == column.min()
        assert accumulator.moments.map_mean[unit] == pytest.approx(synthetic_maps[:, unit].double().mean().item(),
                                                                   rel=1e-6, abs=1e-9)

        exponent, first, counts = brute_histogram(column, SETTINGS.n_bins)
        histogram = accumulator.histogram
        assert (histogram.exponent[unit], histogram.first[unit]) == (exponent, first)
        np.testing.assert_array_equal(histogram.counts[unit], counts)
        index = np.floor(column.astype(np.float64) * 2.0 ** -exponent).astype(np.int64) - first
        for bin_index in range(SETTINGS.n_bins):
            members = np.flatnonzero(index == bin_index)
            expected = members[np.lexsort((members, hashes[members]))][:SETTINGS.reservoir]
            kept = histogram.sample_ordinals[unit, bin_index]
            assert kept[kept != EMPTY].tolist() == expected.tolist()


@pytest.mark.parametrize(("batch_size", "seed"), [(1, 1), (13, 2), (60, 3)])
def test_batch_size_and_order_do_not_change_anything(synthetic_maps, batch_size, seed):
    values, cells, map_means = reduce_batch(synthetic_maps)
    reference = accumulate(values, cells, map_means, batch_size=7, order=np.arange(len(values))).state_dict()
    shuffled = np.random.default_rng(seed).permutation(len(values))
    other = accumulate(values, cells, map_means, batch_size=batch_size, order=shuffled).state_dict()
    assert reference.keys() == other.keys()
    for name, array in reference.items():
        if array.dtype.kind == "f":
            np.testing.assert_allclose(other[name], array, rtol=1e-12, atol=1e-15, err_msg=name)
        else:
            np.testing.assert_array_equal(other[name], array, err_msg=name)


def test_state_dict_round_trip_resumes_exactly(synthetic_maps):
    values, cells, map_means = reduce_batch(synthetic_maps)
    whole = accumulate(values, cells, map_means, batch_size=10, order=np.arange(60))
    first_half = accumulate(values, cells, map_means, batch_size=10, order=np.arange(30))
    resumed = LayerAccumulator(values.shape[1], (3, 5), SETTINGS)
    resumed.load_state_dict(first_half.state_dict())
    rest = np.arange(30, 60)
    hashes = np.array([sample_hash(f"img{i:03d}", SETTINGS.seed) for i in rest], np.int64)
    resumed.update(values[rest], cells[rest], map_means[rest], rest.astype(np.int64), hashes)
    for name, array in whole.state_dict().items():
        np.testing.assert_allclose(resumed.state_dict()[name], array, rtol=1e-12, err_msg=name)


def test_tiny_rn_non_square_input_cells_match_spatial_max(tiny_rn):
    """Non-square inputs reach layer4 of a ResNet: 64x96 pixels give 2x3 maps."""
    pixels = torch.randn(10, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with Recorder(tiny_rn, "neurons", early_stop=True) as recorder:
        maps = recorder.run(pixels)["visual.layer4.1.act3:input"]
    assert maps.shape[2:] == (2, 3)
    values, cells, map_means = reduce_batch(maps)
    expected_values, expected_cells = spatial_max(maps)
    np.testing.assert_array_equal(values, expected_values.numpy())
    np.testing.assert_array_equal(cells, expected_cells.numpy())
    accumulator = accumulate(values, cells, map_means, batch_size=3, order=np.arange(10)[::-1].copy(), grid=(2, 3))
    for unit in range(0, values.shape[1], 37):
        best = np.lexsort((np.arange(10), -values[:, unit]))[:SETTINGS.top_k]
        assert accumulator.top.ordinals[unit].tolist() == best.tolist()
        np.testing.assert_array_equal(accumulator.top.cells[unit], expected_cells[best, unit].numpy())


def test_vit_tokens_reduce_on_the_patch_grid(tiny_vit):
    with Recorder(tiny_vit, "neurons", early_stop=True) as recorder:
        tokens = next(iter(recorder.run(torch.randn(2, 3, 64, 64)).values()))  # [B, 17, D]
    values, cells, map_means = reduce_batch(tokens, tiny_vit.token_grid)
    patches = tokens[:, 1:, :]  # the class token is not a place
    np.testing.assert_allclose(values, patches.max(dim=1).values.numpy())
    flat = patches.argmax(dim=1).numpy()
    np.testing.assert_array_equal(cells[..., 0] * 4 + cells[..., 1], flat)


def test_non_finite_values_stay_out_of_moments_and_examples(synthetic_maps, tmp_path):
    # One broken forward (inf, NaN) used to turn a unit's mean, std and max into NaN (NULL in the atlas)
    # and put inf among its top examples: plots, the API (Infinity is not JSON) and `show` then failed.
    from neuronscope.atlas import Atlas
    from neuronscope.mining.results import ImageRecord
    from neuronscope.mining.scanner import _layer_scan

    values, cells, map_means = (t.clone() for t in reduce_batch(synthetic_maps))
    values[7, 0], values[9, 0], values[8, 4] = float("inf"), float("-inf"), float("nan")
    accumulator = accumulate(values, cells, map_means, batch_size=8, order=np.arange(60))
    finite = {0: np.setdiff1d(np.arange(60), [7, 9]), 4: np.setdiff1d(np.arange(60), [8])}
    for unit, kept in finite.items():
        column = values[kept, unit].double().numpy()
        assert accumulator.moments.count[unit] == len(kept)
        assert accumulator.moments.mean[unit] == pytest.approx(column.mean(), rel=1e-12)
        assert accumulator.moments.std[unit] == pytest.approx(column.std(), rel=1e-12)
        assert accumulator.moments.max[unit] == column.max() and accumulator.moments.min[unit] == column.min()
        for examples in (accumulator.top, accumulator.bottom):
            held = examples.arrays()[1][unit]
            assert np.isin(kept, held).sum() == examples.k and not np.isin([7, 8, 9], held).any()
    assert accumulator.histogram.nonfinite.tolist() == [2, 0, 0, 0, 1, 0]
    assert accumulator.moments.count[1] == 60

    records = {i: ImageRecord(f"img{i:03d}.png#{i:012d}", "src", f"img{i:03d}.png", f"{i:064d}", 5, 3)
               for i in range(60)}
    scan = _layer_scan("toy@random", "layer", ["neurons"], accumulator, records, SETTINGS.seed)
    with Atlas(tmp_path / "atlas") as atlas:
        run_id = atlas.start_run(command="test", config={}, config_key="k", model="toy@random",
                                 weights_sha256=None, layers=[], dataset=None, precision="fp32")
        atlas.write_scan(run_id, [scan], {r.id: r for r in records.values()}, {}, 60)
        record = atlas.unit(None, "layer", 0)
        buckets = atlas.conditional_buckets(None, "layer", 0)
    assert record["stats"]["count"] == 58 and None not in record["stats"].values()
    assert all(np.isfinite(example["activation"]) for example in record["top"] + record["bottom"])
    assert sum(bucket["count"] for bucket in buckets) == 58


@pytest.mark.parametrize("field, value", [("top_k", 0), ("bottom_k", 0), ("n_bins", 1), ("reservoir", 0),
                                          ("top_k", 2.5)])
def test_scan_settings_that_cannot_work_are_refused(field, value):
    from neuronscope.errors import NeuronscopeError

    with pytest.raises(NeuronscopeError, match=f"ScanSettings.{field} must be a whole number"):
        ScanSettings(**{field: value})


def test_histogram_of_huge_values_bins_every_value_in_any_order():
    # Grid indices of values beyond ~5.5e11 overflowed int64 at the finest exponent: wrong bins or errors.
    from neuronscope.mining import StreamingHistogram

    values = np.array([[1.0, 1e13, -3e38], [2e12, 1.5e13, 1e-7], [5e11, 1e13 + 2.0**20, 7.0]])
    ordinals = np.arange(3, dtype=np.int64)
    hashes = np.array([sample_hash(f"img{i}", 0) for i in ordinals], np.int64)
    histograms = []
    for order in (np.arange(3), np.array([2, 0, 1])):
        histogram = StreamingHistogram(3, n_bins=8, reservoir=2)
        for index in order:
            histogram.update(values[[index]], ordinals[[index]], hashes[[index]])
        histograms.append(histogram)
    first, second = histograms
    for name in ("exponent", "first", "counts", "sample_ordinals"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
    for unit in range(3):
        width = np.ldexp(1.0, int(first.exponent[unit]))
        expected = np.floor(values[:, unit] / width).astype(np.int64) - first.first[unit]
        assert np.bincount(expected, minlength=8).tolist() == first.counts[unit].tolist()


def test_reservoirs_break_equal_hashes_by_ordinal_in_any_order():
    # Equal hashes (one image listed twice, or a 63-bit collision) take the slower exact path: the merge
    # sorts by (hash, ordinal), and a candidate that ties its bin's largest kept hash must beat it on ordinal.
    from neuronscope.mining import StreamingHistogram

    values = np.zeros((12, 2))
    values[:, 1] = np.arange(12) % 3  # three bins of unit 1
    hashes = np.where(np.arange(12) % 2 == 0, 5, 9).astype(np.int64)
    kept = []
    for order in (np.arange(12), np.arange(12)[::-1], np.random.default_rng(0).permutation(12)):
        histogram = StreamingHistogram(2, n_bins=4, reservoir=3)
        for start in range(0, 12, 5):
            batch = order[start:start + 5]
            histogram.update(values[batch], batch.astype(np.int64), hashes[batch])
        kept.append(histogram.sample_ordinals.copy())
    for other in kept[1:]:
        np.testing.assert_array_equal(other, kept[0])
    assert sorted(kept[0][0][kept[0][0] != EMPTY].tolist()) == [0, 2, 4]  # hash 5 first, then ordinals
    for bin_value in range(3):
        members = np.flatnonzero(values[:, 1] == bin_value)
        expected = members[np.lexsort((members, hashes[members]))][:3]
        assert expected.tolist() in [row[row != EMPTY].tolist() for row in kept[0][1]]


def test_conditional_buckets_show_every_image_kept_when_bins_hold_fewer_than_the_reservoir():
    """Four bins of one image each, reservoir 4: a bucket of two bins shows both images, not one (the
    fullest bin's count is no measure of the reservoir)."""
    from neuronscope.mining import uniform_buckets

    buckets = uniform_buckets([0, 1, 2, 3, 4], [1, 1, 1, 1], [["a"], ["b"], ["c"], ["d"]], 0, std=1.0,
                              reservoir=4, n_buckets=2)
    assert [b["count"] for b in buckets] == [2, 2]
    assert [sorted(b["samples"]) for b in buckets] == [["a", "b"], ["c", "d"]]
    # The reservoir still caps a bucket: two images kept per bin, three bins -> two per bucket.
    (one,) = uniform_buckets([0, 1, 2, 3], [5, 5, 5], [["a", "b"], ["c", "d"], ["e", "f"]], 0, std=0.0,
                             reservoir=2)
    assert len(one["samples"]) == 2 and one["count"] == 15


def test_conditional_buckets_estimate_each_folders_share_weighing_samples_by_their_bins_count():
    """The paper's y axis, with folders for labels: a bin of 90 images keeps as many samples as a bin of 10, so
    each sample stands for its bin's count over its samples. Bucket 0: 90 images, samples half cats and half
    dogs, plus 10 images all birds -> cats 0.45, dogs 0.45, birds 0.1 (a plain sample count says 0.4/0.4/0.2)."""
    from neuronscope.mining import image_folder, uniform_buckets

    samples = [["cats/1.png#a", "dogs/2.png#b"], ["birds/3.png#c", "birds/4.png#d"], ["top.png#e"], []]
    buckets = uniform_buckets([0, 1, 2, 3, 4], [90, 10, 5, 0], samples, 0, std=1.0, reservoir=2, n_buckets=2)
    assert buckets[0]["categories"] == pytest.approx({"birds": 0.1, "cats": 0.45, "dogs": 0.45})
    assert buckets[1]["categories"] == {"(top)": 1.0}  # an image beside the folders is a category of its own
    flat = uniform_buckets([0, 1, 2], [3, 1], [["a.png#1"], ["b.png#2"]], 0, std=1.0, reservoir=2, n_buckets=2)
    assert [b["categories"] for b in flat] == [{}, {}]  # no folders: nothing to count
    assert image_folder("shard.tar::cats/x.png#abc") == "cats" and image_folder("a/b/c.png#1") == "a/b"
    assert image_folder("x.png#1") is None


def test_a_scan_state_checkpoints_its_records_as_utf8():
    """Records grow with a scan (reservoir samples): as a NumPy string they took 4 bytes a character (38 MB of
    a 44 MB checkpoint at 150k images). Now UTF-8 bytes, read back as written. (A checkpoint of an older
    format is not read at all: test_scan.py's older-format test.)"""
    from neuronscope.mining.results import ImageRecord
    from neuronscope.mining.scanner import ContentKeys, ScanState

    def state() -> ScanState:
        return ScanState({"layer": LayerAccumulator(3, (1, 1), SETTINGS)})

    written = state()
    written.records = {7: ImageRecord("a/é.png#0123456789ab", "src", "a/é.png", "0" * 64, 5, 3),
                       2: ImageRecord("b.png#ba9876543210", "src", "b.png", "f" * 64, 640, 480)}
    written.seen = ContentKeys([2**63 + 5, 11])
    written.prune_records = lambda: None  # no unit holds these made-up images: keep them for the test
    arrays, meta = written.state_dict()
    assert arrays["records.utf8"].dtype == np.uint8 and "records.json" not in arrays
    read = state()
    read.load_state_dict(arrays, meta)
    assert read.records == written.records and set(read.seen) == {2**63 + 5, 11}


def test_merging_a_scan_state_that_holds_content_keys_is_refused():
    """Ray shards send their state back without content keys (duplicates are settled before a shard scans):
    merge has no keys to fold in, and says so rather than dropping some."""
    from neuronscope.mining.scanner import ContentKeys, ScanState

    def state() -> ScanState:
        return ScanState({"layer": LayerAccumulator(3, (1, 1), SETTINGS)})

    merged, shard = state(), state()
    merged.merge(shard)  # no keys: merged
    shard.seen = ContentKeys([5])
    with pytest.raises(ValueError, match="holds content keys"):
        merged.merge(shard)


def test_content_keys_answer_like_a_set_across_checkpoints():
    """Keys of earlier checkpoints live in a sorted uint64 array (8 bytes a key, written as it is), those
    added since in a set: membership, length and a round trip through the array as a set would give."""
    from neuronscope.mining.scanner import ContentKeys

    first = ContentKeys()
    first.add(9)
    first.add(4)
    assert first.array().tolist() == [4, 9]  # into an empty array: every recent key
    keys = ContentKeys([2**64 - 1, 7])
    keys.add(3)
    keys.add(7)
    assert 3 in keys and 7 in keys and 2**64 - 1 in keys and 5 not in keys and 0 not in keys
    array = keys.array()
    assert array.dtype == np.uint64 and array.tolist() == [3, 7, 2**64 - 1] and len(keys) == 3
    keys.add(5)
    assert 5 in keys and set(keys) == {3, 5, 7, 2**64 - 1}
    assert set(ContentKeys(keys.array())) == {3, 5, 7, 2**64 - 1}  # through a checkpoint's array and back

