"""The histogram file of a scanned layer (``arrays/<model>/<layer>.run<N>.npz``): written once by a scan, read
back by the microscope, the exports and the atlas's clean-up of image rows.

Arrays: ``exponent``, ``first`` [C], ``counts`` [C, n_bins], ``nonfinite`` [C], ``seed`` (a scalar),
``sample_ids`` [n] (the image ids the reservoirs name) and ``samples`` [C, n_bins, r] int32 (indices into
``sample_ids``, -1 where a reservoir is not full). Image ids are stored once, not once per bin they sit in.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neuronscope.atlas.files import atomic_write_npz

if TYPE_CHECKING:  # numpy only at run time: the atlas never imports the scanner
    from neuronscope.mining.results import HistogramArrays


def write_histogram_file(path: Path, histogram: HistogramArrays) -> None:
    """Store ``histogram`` at ``path`` (atomically and durably), its reservoirs' image ids as indices."""
    sample_ids = sorted({i for i in histogram.samples.reshape(-1) if i is not None})
    index = {image: position for position, image in enumerate(sample_ids)}
    samples = np.vectorize(lambda i: -1 if i is None else index[i], otypes=[np.int32])(histogram.samples) \
        if histogram.samples.size else np.zeros(histogram.samples.shape, np.int32)
    atomic_write_npz(path, {
        "exponent": histogram.exponent, "first": histogram.first, "counts": histogram.counts,
        "samples": samples, "sample_ids": np.array(sample_ids, dtype=str), "nonfinite": histogram.nonfinite,
        "seed": np.array(histogram.seed)})


def read_histogram_file(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of the histogram file at ``path``, or None when it is missing or unreadable (a rescan removes
    the previous file after its commit; a partly copied atlas)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def histogram_sample_ids(path: Path) -> list[str]:
    """The image ids the reservoirs of the histogram file at ``path`` name; raises OSError, KeyError or
    ValueError when it cannot be read."""
    with np.load(path) as data:
        return data["sample_ids"].tolist()


def trimmed_histogram(arrays: dict[str, np.ndarray], unit: int) -> dict[str, Any]:
    """Unit ``unit``'s histogram from a file's ``arrays``, trimmed to its occupied bins, ready to plot:
    ``{"edges", "counts", "samples", "seed", "reservoir"}`` (``edges`` one longer than ``counts``)."""
    counts = arrays["counts"][unit]
    occupied = np.flatnonzero(counts)
    reservoir = int(arrays["samples"].shape[-1])
    if occupied.size == 0:
        return {"edges": [], "counts": [], "samples": [], "seed": int(arrays["seed"]), "reservoir": reservoir}
    low, high = int(occupied[0]), int(occupied[-1]) + 1
    width = float(np.ldexp(1.0, int(arrays["exponent"][unit])))
    first = int(arrays["first"][unit])
    sample_ids = arrays["sample_ids"]
    samples = [[str(sample_ids[i]) for i in bin_samples if i >= 0] for bin_samples in arrays["samples"][unit][low:high]]
    return {"edges": [(first + i) * width for i in range(low, high + 1)],
            "counts": [int(c) for c in counts[low:high]], "samples": samples, "seed": int(arrays["seed"]),
            "reservoir": reservoir}
