"""Partial results merged in any order and grouping equal one pass (what the Ray backend relies on); no Ray needed."""

from __future__ import annotations

import numpy as np
import pytest

from neuronscope.mining import LayerAccumulator, ScanSettings, sample_hash

# Unit 4 holds an inf and a NaN: its moments are NaN in one pass and merged alike, and NumPy warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

SETTINGS = ScanSettings(top_k=5, bottom_k=4, n_bins=8, reservoir=3, seed=11)
UNITS, GRID, IMAGES = 7, (3, 4), 90


@pytest.fixture(scope="module")
def per_image():
    """Per-image values [N, C] at very different scales (so partial windows re-bin differently), ties,
    negative values, an all-zero unit and a few non-finite values; cells [N, C, 2]; map means [N, C]."""
    generator = np.random.default_rng(3)
    scales = np.array([1.0, 40.0, 1e-3, 1.0, 1.0, 0.0, 5.0], np.float32)
    values = (generator.standard_normal((IMAGES, UNITS)) * scales).astype(np.float32)
    values[:, 3] = np.round(values[:, 3])  # many ties, broken by ordinal
    values[:, 6] = np.where(np.arange(IMAGES) < 60, 0.25, 900.0)  # the range jumps late: coarse re-binning
    values[7, 4], values[50, 4] = np.inf, np.nan
    cells = generator.integers(0, [GRID[0], GRID[1]], size=(IMAGES, UNITS, 2)).astype(np.int16)
    map_means = (values / 3).astype(np.float32)
    hashes = np.array([sample_hash(f"img{i:03d}.png", SETTINGS.seed) for i in range(IMAGES)], np.int64)
    return values, cells, map_means, hashes


def accumulate(per_image, ordinals: np.ndarray, batch_size: int) -> LayerAccumulator:
    values, cells, map_means, hashes = per_image
    accumulator = LayerAccumulator(UNITS, GRID, SETTINGS)
    for start in range(0, len(ordinals), batch_size):
        chosen = ordinals[start:start + batch_size]
        accumulator.update(values[chosen], cells[chosen], map_means[chosen], chosen, hashes[chosen])
    return accumulator


def assert_same(merged: LayerAccumulator, one_pass: LayerAccumulator) -> None:
    """Identical top/bottom ids, cells and values, histogram windows, counts and reservoirs; moments to rounding."""
    merged_state, reference = merged.state_dict(), one_pass.state_dict()
    assert merged_state.keys() == reference.keys()
    for name, expected in reference.items():
        if name.startswith("moments.") and name != "moments.count":
            np.testing.assert_allclose(merged_state[name], expected, rtol=1e-12, atol=1e-12, err_msg=name)
        else:
            np.testing.assert_array_equal(merged_state[name], expected, err_msg=name)


@pytest.mark.parametrize("draw", range(4))
def test_partials_merged_in_any_order_and_grouping_equal_one_pass(per_image, draw):
    generator = np.random.default_rng(100 + draw)
    one_pass = accumulate(per_image, np.arange(IMAGES), batch_size=8)
    # A random partition of the images (not contiguous; one part may be empty), each part scanned in its own
    # order and batch size, then the parts merged pairwise in a random tree.
    n_parts = int(generator.integers(2, 7))
    labels = generator.integers(0, n_parts, size=IMAGES)
    partials = []
    for part in range(n_parts + 1):  # the last part is always empty
        ordinals = generator.permutation(np.flatnonzero(labels == part)).astype(np.int64)
        partials.append(accumulate(per_image, ordinals, batch_size=int(generator.integers(1, 12))))
    while len(partials) > 1:
        left = partials.pop(int(generator.integers(len(partials))))
        right = partials.pop(int(generator.integers(len(partials))))
        left.merge(right)
        partials.append(left)
    assert_same(partials[0], one_pass)
    assert one_pass.histogram.exponent[6] > one_pass.histogram.exponent[0]  # the late jump did re-bin


def test_merging_an_empty_partial_changes_nothing(per_image):
    one_pass = accumulate(per_image, np.arange(IMAGES), batch_size=16)
    empty_first = LayerAccumulator(UNITS, GRID, SETTINGS)
    empty_first.merge(one_pass)
    one_pass_again = accumulate(per_image, np.arange(IMAGES), batch_size=16)
    one_pass_again.merge(LayerAccumulator(UNITS, GRID, SETTINGS))
    assert_same(empty_first, one_pass)
    assert_same(one_pass_again, one_pass)


def test_merge_refuses_other_settings():
    accumulator = LayerAccumulator(UNITS, GRID, SETTINGS)
    with pytest.raises(ValueError, match="cannot merge"):
        accumulator.merge(LayerAccumulator(UNITS, GRID, ScanSettings(top_k=6, bottom_k=4, n_bins=8, reservoir=3)))
    with pytest.raises(ValueError, match="cannot merge"):
        accumulator.merge(LayerAccumulator(UNITS + 1, GRID, SETTINGS))
