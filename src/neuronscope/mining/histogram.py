"""Streaming histograms whose range is not known in advance, with per-bin reservoir samples.

Why this design: a scan must give the same histogram whatever the order and
batching of its images (and on however many workers), without a second pass.
So bins live on a fixed dyadic grid: bin ``J`` at exponent ``e`` covers
``[J * 2**e, (J + 1) * 2**e)``. Each unit keeps ``n_bins`` consecutive bins
starting at ``first = floor(min / 2**e)``. When a value falls outside, the
exponent grows by exact doublings (bin ``J`` becomes ``J >> 1``: two bins
merge, no count is split or guessed) until the whole range fits. The final
exponent is the smallest ``e >= MIN_EXPONENT`` whose grid holds the data's
range in ``n_bins`` bins (and whose grid indices fit in int64): a function of
the set of values only, so the counts are identical for any arrival order.

Each bin also keeps a reservoir: the ``reservoir`` images with the smallest
``hash(id, seed)`` among those that fell in it. "The r smallest hashes of a
set" is order-free and merges exactly when two bins merge, so reservoir ids
are identical too. The same holds when partial histograms of other images
are merged (:meth:`StreamingHistogram.merge`, for the Ray backend). Uniform
buckets for conditional-probability plots (the paper's "SDs from zero") are
unions of these bins, with the r smallest hashes of the union as their sample.

Memory: units x n_bins x (1 + 2 x reservoir) int64.
"""

from __future__ import annotations

import numpy as np

from neuronscope.mining.topk import EMPTY

#: Finest bin width is 2**MIN_EXPONENT (~6e-8): a constant unit keeps one bin there.
MIN_EXPONENT = -24
#: Grid indices stay below 2**INDEX_BITS in magnitude, so they and their differences fit in int64.
INDEX_BITS = 61


def _cell_hash_order(cells: np.ndarray, hashes: np.ndarray, ordinals: np.ndarray) -> np.ndarray:
    """The order that sorts entries by ``(cell, hash, ordinal)``: ``np.lexsort((ordinals, hashes, cells))``.

    Two sorts of one key instead of lexsort's three: entries are ranked by hash (by hash and ordinal when
    two hashes are equal, which takes the same image twice or a 63-bit collision), then sorted once by
    ``cell * n + rank``, a unique int64 key (cells and ranks are below 2**31 here). A third of the time of a
    scan's reservoir merge, which runs once a batch.
    """
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    if (sorted_hashes[1:] == sorted_hashes[:-1]).any():
        order = np.lexsort((ordinals, hashes))
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    return np.argsort(cells.astype(np.int64) * order.size + rank)


def _smallest_per_cell(cells: np.ndarray, hashes: np.ndarray, ordinals: np.ndarray, n_cells: int,
                       keep: int) -> tuple[np.ndarray, np.ndarray]:
    """For entries ``(cell, hash, ordinal)``, the ``keep`` smallest (hash, ordinal) of each cell.

    Returns ``hashes`` and ``ordinals`` [n_cells, keep], padded with EMPTY.
    """
    out_hash = np.full((n_cells, keep), EMPTY, np.int64)
    out_ord = np.full((n_cells, keep), EMPTY, np.int64)
    real = hashes != EMPTY
    cells, hashes, ordinals = cells[real], hashes[real], ordinals[real]
    if cells.size == 0:
        return out_hash, out_ord
    order = _cell_hash_order(cells, hashes, ordinals)
    cells, hashes, ordinals = cells[order], hashes[order], ordinals[order]
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    rank = np.arange(cells.size) - np.repeat(starts, np.diff(np.r_[starts, cells.size]))
    kept = rank < keep
    out_hash[cells[kept], rank[kept]] = hashes[kept]
    out_ord[cells[kept], rank[kept]] = ordinals[kept]
    return out_hash, out_ord


class StreamingHistogram:
    """Per-unit dyadic histograms with per-bin reservoirs (see the module docstring).

    Arrays: ``exponent`` [C] int64, ``first`` [C] int64 (grid index of bin 0),
    ``counts`` [C, n_bins] int64, ``sample_hashes`` / ``sample_ordinals``
    [C, n_bins, reservoir] int64 (EMPTY where a bin holds fewer images),
    ``lo`` / ``hi`` [C] float64 (finite range seen), ``nonfinite`` [C] int64.
    """

    def __init__(self, units: int, n_bins: int = 128, reservoir: int = 4) -> None:
        if n_bins < 2 or reservoir < 1:  # one bin never fits a range that straddles a bin edge at every scale
            raise ValueError(f"a histogram needs n_bins >= 2 and reservoir >= 1, not {n_bins} and {reservoir}")
        self.n_bins = n_bins
        self.reservoir = reservoir
        self.exponent = np.full(units, MIN_EXPONENT, np.int64)
        self.first = np.zeros(units, np.int64)
        self.counts = np.zeros((units, n_bins), np.int64)
        self.sample_hashes = np.full((units, n_bins, reservoir), EMPTY, np.int64)
        self.sample_ordinals = np.full((units, n_bins, reservoir), EMPTY, np.int64)
        self.lo = np.full(units, np.inf)
        self.hi = np.full(units, -np.inf)
        self.nonfinite = np.zeros(units, np.int64)

    # ------------------------------------------------------------------ growing the range

    def _grid_index(self, values: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
        # Scaling by a power of two is exact, so floor() gives the true bin.
        return np.floor(values * np.ldexp(1.0, -np.asarray(exponent))).astype(np.int64)

    @staticmethod
    def _lowest_exponent(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """The smallest exponent [U] at which ``[lo, hi]``'s grid indices fit in int64 (|index| < 2**61).

        ``|v| < 2**f`` (``frexp``), so ``e >= f - 61`` keeps ``v / 2**e`` below ``2**61``. It depends on the
        range only, like the rest of the fit, so the result stays independent of arrival order.
        """
        magnitude = np.frexp(np.maximum(np.abs(lo), np.abs(hi)))[1].astype(np.int64)
        return np.maximum(magnitude - INDEX_BITS, MIN_EXPONENT)

    def _fit(self, lo: np.ndarray, hi: np.ndarray, exponent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The window holding ``[lo, hi]`` (one entry per unit): the smallest exponent ``>= exponent`` (and
        ``>=`` :meth:`_lowest_exponent`) whose grid holds the range in ``n_bins`` bins, and its first bin.
        Returns ``(exponent, first)`` [U] int64."""
        exponent = np.maximum(exponent, self._lowest_exponent(lo, hi))
        while True:
            too_wide = self._grid_index(hi, exponent) - self._grid_index(lo, exponent) + 1 > self.n_bins
            if not too_wide.any():
                break
            exponent += too_wide
        return exponent, self._grid_index(lo, exponent)

    def _pool(self, units: np.ndarray, exponent: np.ndarray, first: np.ndarray,
              parts: list[tuple[np.ndarray, ...]]) -> None:
        """Set the windows of ``units`` to ``(exponent, first)`` [U] and fill them with the bins of ``parts``.

        Each part is ``(exponent [U], first [U], counts [U, n_bins], hashes, ordinals [U, n_bins, r])``: bins
        on a grid as fine or finer, lying inside the new window. Bin ``i`` of a part is grid index
        ``first + i`` at its exponent, and ``>> shift`` is floor division by ``2**shift``: whole bins merge,
        no count is split. Vectorised over units: the first batches re-bin every unit of a layer.
        """
        rows = np.arange(len(units))[:, None]
        bins = np.arange(self.n_bins, dtype=np.int64)
        count_cells, count_weights, sample_cells, sample_hashes, sample_ordinals = [], [], [], [], []
        for part_exponent, part_first, counts, hashes, ordinals in parts:
            shift = exponent - part_exponent
            if (shift < 0).any():
                raise ValueError("a histogram cannot be re-binned onto a finer grid")
            new_index = ((part_first[:, None] + bins[None, :]) >> shift[:, None]) - first[:, None]  # [U, n_bins]
            cells = rows * self.n_bins + new_index
            occupied = counts > 0
            count_cells.append(cells[occupied])
            count_weights.append(counts[occupied])
            live = hashes != EMPTY
            sample_cells.append(np.broadcast_to(cells[:, :, None], hashes.shape)[live])
            sample_hashes.append(hashes[live])
            sample_ordinals.append(ordinals[live])
        n_cells = len(units) * self.n_bins
        counts = np.bincount(np.concatenate(count_cells), weights=np.concatenate(count_weights), minlength=n_cells)
        merged_hash, merged_ord = _smallest_per_cell(np.concatenate(sample_cells), np.concatenate(sample_hashes),
                                                     np.concatenate(sample_ordinals), n_cells, self.reservoir)
        self.sample_hashes[units] = merged_hash.reshape(len(units), self.n_bins, self.reservoir)
        self.sample_ordinals[units] = merged_ord.reshape(len(units), self.n_bins, self.reservoir)
        self.counts[units] = counts.reshape(len(units), self.n_bins).astype(np.int64)
        self.exponent[units], self.first[units] = exponent, first

    def _own_bins(self, units: np.ndarray) -> tuple[np.ndarray, ...]:
        return (self.exponent[units], self.first[units], self.counts[units], self.sample_hashes[units],
                self.sample_ordinals[units])

    def _rebin(self, units: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """Grow the windows of ``units`` to hold ``[lo, hi]`` (one entry per unit): shift, and double as needed."""
        exponent, first = self._fit(lo, hi, self.exponent[units])
        self._pool(units, exponent, first, [self._own_bins(units)])

    # ------------------------------------------------------------------ update

    def update(self, values: np.ndarray, ordinals: np.ndarray, hashes: np.ndarray) -> None:
        """Add one batch: ``values`` [B, C], ``ordinals`` [B] int64, ``hashes`` [B] int64
        (:func:`~neuronscope.mining.buckets.sample_hash`)."""
        values = values.astype(np.float64)
        finite = np.isfinite(values)
        all_finite = bool(finite.all())  # the usual case: no masking, and the batch stays [B, C] below
        if all_finite:
            batch_lo, batch_hi = values.min(axis=0), values.max(axis=0)
        else:
            self.nonfinite += (~finite).sum(axis=0)
            batch_lo = np.where(finite, values, np.inf).min(axis=0)
            batch_hi = np.where(finite, values, -np.inf).max(axis=0)
        lo, hi = np.minimum(self.lo, batch_lo), np.maximum(self.hi, batch_hi)
        has_data = np.isfinite(lo)
        lo_or_0, hi_or_0 = np.where(has_data, lo, 0.0), np.where(has_data, hi, 0.0)
        # In float: at the current (possibly too fine) exponent a large value's index would overflow int64.
        scale = np.ldexp(1.0, -self.exponent)
        outside = has_data & ((np.floor(lo_or_0 * scale) < self.first)
                              | (np.floor(hi_or_0 * scale) >= self.first + self.n_bins)
                              | (self._lowest_exponent(lo_or_0, hi_or_0) > self.exponent) | ~np.isfinite(self.lo))
        growing = np.flatnonzero(outside)
        if growing.size:
            self._rebin(growing, lo[growing], hi[growing])
        self.lo, self.hi = lo, hi

        units = values.shape[1]
        if all_finite:
            rows = np.repeat(np.arange(values.shape[0]), units)  # image b of each (b, c), row-major
            bins = self._grid_index(values, self.exponent) - self.first  # [B, C], broadcast per unit
            flat = (np.arange(units) * self.n_bins + bins).reshape(-1)  # [B * C] flat (unit, bin) cell
        else:
            rows, cols = np.nonzero(finite)  # image b, unit c
            bins = self._grid_index(values[rows, cols], self.exponent[cols]) - self.first[cols]
            flat = cols * self.n_bins + bins  # [N] flat (unit, bin) cell
        self.counts += np.bincount(flat, minlength=units * self.n_bins).reshape(units, self.n_bins)

        # Reservoirs: only candidates that beat their bin's current largest kept (hash, ordinal) matter. The
        # largest hashes are gathered from one contiguous copy, and ordinals only where hashes tie.
        kept_hash = self.sample_hashes.reshape(-1, self.reservoir)
        kept_ord = self.sample_ordinals.reshape(-1, self.reservoir)
        cand_hash, cand_ord = hashes[rows], ordinals[rows]
        worst_hash = np.ascontiguousarray(kept_hash[:, -1])[flat]
        better = cand_hash <= worst_hash
        ties = np.flatnonzero(better & (cand_hash == worst_hash))
        if ties.size:
            better[ties] = cand_ord[ties] < kept_ord[flat[ties], -1]
        if not better.any():
            return
        touched = np.unique(flat[better])
        local = np.searchsorted(touched, flat[better])
        cells = np.concatenate([np.repeat(np.arange(touched.size), self.reservoir), local])
        merged_hash, merged_ord = _smallest_per_cell(
            cells,
            np.concatenate([kept_hash[touched].reshape(-1), cand_hash[better]]),
            np.concatenate([kept_ord[touched].reshape(-1), cand_ord[better]]),
            touched.size, self.reservoir)
        kept_hash[touched], kept_ord[touched] = merged_hash, merged_ord

    def merge(self, other: StreamingHistogram) -> None:
        """Fold in the histogram of other images (a partial result), as if their values had come in a batch.

        Each window's exponent is the smallest that holds its own values, so it
        is at most the union's: the union's window is reached by exact
        doublings of both, counts add and each bin keeps the ``reservoir``
        smallest hashes of both. Merging in any order and grouping equals one pass.
        """
        if (other.n_bins, other.reservoir, other.counts.shape) != (self.n_bins, self.reservoir, self.counts.shape):
            raise ValueError(f"cannot merge a histogram of shape {other.counts.shape} (reservoir {other.reservoir})"
                             f" into {self.counts.shape} (reservoir {self.reservoir})")
        units = np.flatnonzero(np.isfinite(other.lo))  # units with finite values on the other side
        if units.size:
            lo = np.minimum(self.lo[units], other.lo[units])
            hi = np.maximum(self.hi[units], other.hi[units])
            exponent, first = self._fit(lo, hi, np.maximum(self.exponent[units], other.exponent[units]))
            self._pool(units, exponent, first, [self._own_bins(units), other._own_bins(units)])
            self.lo[units], self.hi[units] = lo, hi
        self.nonfinite = self.nonfinite + other.nonfinite

    # ------------------------------------------------------------------ reading

    def live_ordinals(self) -> np.ndarray:
        return np.unique(self.sample_ordinals[self.sample_ordinals != EMPTY])

    def state_dict(self, prefix: str) -> dict[str, np.ndarray]:
        names = ("exponent", "first", "counts", "sample_hashes", "sample_ordinals", "lo", "hi", "nonfinite")
        return {f"{prefix}{name}": getattr(self, name) for name in names}

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str) -> None:
        for name in ("exponent", "first", "counts", "sample_hashes", "sample_ordinals", "lo", "hi", "nonfinite"):
            setattr(self, name, state[f"{prefix}{name}"].copy())
