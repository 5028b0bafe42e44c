"""What a scan produces, as plain objects (the atlas stores them; nothing here touches disk)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neuronscope.imagefiles import SkipCounts


@dataclass(frozen=True)
class ImageRecord:
    """An image some unit keeps: its id (``relpath#sha12``), where it came from, its size."""

    id: str
    source: str
    name: str
    sha256: str
    width: int
    height: int


@dataclass
class Examples:
    """Ranked examples of every unit (rank 0 first): ``ids`` [C, k] (None where fewer images),
    ``values`` [C, k] float32, ``cells`` [C, k, 2] (row, col)."""

    ids: np.ndarray
    values: np.ndarray
    cells: np.ndarray


@dataclass
class HistogramArrays:
    """Per-unit dyadic histograms (see :mod:`neuronscope.mining.histogram`).

    ``exponent`` [C], ``first`` [C]: bin ``i`` of unit ``c`` covers
    ``[(first + i) * 2**exponent, (first + i + 1) * 2**exponent)``;
    ``counts`` [C, n_bins]; ``samples`` [C, n_bins, r] image ids (None where empty),
    smallest ``hash(id, seed)`` first.
    """

    exponent: np.ndarray
    first: np.ndarray
    counts: np.ndarray
    samples: np.ndarray
    nonfinite: np.ndarray
    seed: int


@dataclass
class LayerScan:
    """One layer's scan result: what ``Atlas.write_scan`` stores."""

    model: str
    layer: str
    aliases: list[str]
    units: int
    grid: tuple[int, int]
    count: np.ndarray  # [C] int64: images whose value is finite (the moments' images; see StreamingMoments)
    mean: np.ndarray  # [C] float64, of the max-over-space value per image
    std: np.ndarray
    max: np.ndarray
    min: np.ndarray
    map_mean: np.ndarray  # [C] mean over images and positions
    top: Examples
    bottom: Examples
    histogram: HistogramArrays

    def __repr__(self) -> str:  # the arrays (units x k ids, histograms) would fill a notebook
        return f"LayerScan({self.model} {self.layer}, {self.units} units on {self.grid[0]}x{self.grid[1]})"


@dataclass
class ScanOutcome:
    """What ``scan`` returns: where it went, what it saw, how long it took."""

    run_id: int
    model: str
    layers: list[LayerScan]
    images: int
    skipped: dict[str, int]
    seconds: float
    resumed_from: int = 0
    image_records: dict[str, ImageRecord] = field(default_factory=dict, repr=False)
    #: the counts of ``skipped`` with the first few files' names per reason (``.files()``, ``.lines()``)
    skip_counts: SkipCounts = field(default_factory=SkipCounts, repr=False)
