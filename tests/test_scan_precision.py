"""bf16 keeps the rankings of fp32 on the mini CLIP's held-out split (CONVENTIONS.md, Precision).

On the shipped weights and test split; ~55 s on two busy cores (bf16 is emulated there).
"""

from __future__ import annotations

import numpy as np

from neuronscope.atlas import Atlas
from neuronscope.mining import ScanSettings, open_source, scan
from neuronscope.models import load_model
from neuronscope.models.bundled import TEST_SPLIT_FILE, bundled_dir

TOP = 20


def top_overlaps(fp32_scan, other_scan) -> np.ndarray:
    """Share of each varying unit's fp32 top-20 ids that the other scan's top-20 keeps."""
    overlaps = []
    for unit in range(fp32_scan.units):
        if not fp32_scan.std[unit] > 0:
            continue  # a dead unit ties everywhere: its "top" is the id order, not a ranking
        reference = set(fp32_scan.top.ids[unit][:TOP]) - {None}
        kept = set(other_scan.top.ids[unit][:TOP]) & reference
        overlaps.append(len(kept) / len(reference))
    return np.array(overlaps)


def test_bf16_keeps_fp32_top20_on_the_mini_clip(tmp_path):
    source = open_source(bundled_dir() / TEST_SPLIT_FILE)
    settings = ScanSettings(top_k=TOP, bottom_k=1)
    scans = {}
    for precision in ("fp32", "bf16"):  # bf16 forced: the check holds wherever a user may pick it
        model = load_model("mini-clip", precision=precision, device="cpu")
        with Atlas(tmp_path / precision) as atlas:
            outcome = scan(model, source, atlas, ["neurons"], settings=settings, batch_size=128, thumbnails=False)
        scans[precision] = outcome.layers[0]
    overlaps = top_overlaps(scans["fp32"], scans["bf16"])
    assert len(overlaps) > 0
    print(f"bf16 vs fp32 top-{TOP}: median overlap {np.median(overlaps):.3f}, "
          f"{(overlaps >= 0.9).mean():.1%} of {len(overlaps)} varying units keep >= 90%")
    assert np.median(overlaps) >= 0.95
    assert (overlaps >= 0.9).mean() >= 0.95
