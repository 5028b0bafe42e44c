"""Streaming mean, standard deviation, min, max and count per unit, in float64.

Batches, and partial results of other images (:meth:`StreamingMoments.merge`,
for the Ray backend), are merged with Chan et al.'s parallel update (count,
mean, M2), so the result does not depend on how images are split beyond
float64 rounding (~1e-15 relative), far inside the 1e-6 the scans promise.
"""

from __future__ import annotations

import numpy as np


class StreamingMoments:
    """Per-unit moments of one value per image (``values`` [B, C]).

    Also keeps ``map_sum``: the sum over images of each unit's spatial mean,
    so that ``map_mean`` (mean over images *and* positions, what
    :func:`neuronscope.activations.mean_ablate` wants) comes with the scan.

    A non-finite value (inf or NaN from a broken forward) is left out of its
    unit's moments, as the histogram leaves it out of its bins (and counts it
    in ``nonfinite``): one such image would otherwise turn the unit's mean,
    std and max into NaN. So ``count`` [C] is per unit: the images whose
    value and spatial mean are both finite.
    """

    def __init__(self, units: int) -> None:
        self.count = np.zeros(units, np.int64)
        self.mean = np.zeros(units, np.float64)
        self.m2 = np.zeros(units, np.float64)
        self.min = np.full(units, np.inf, np.float64)
        self.max = np.full(units, -np.inf, np.float64)
        self.map_sum = np.zeros(units, np.float64)

    def update(self, values: np.ndarray, map_means: np.ndarray) -> None:
        """Merge one batch: ``values`` [B, C] (max over space), ``map_means`` [B, C] (mean over space)."""
        batch, maps = values.astype(np.float64), map_means.astype(np.float64)
        if batch.shape[0] == 0:
            return
        finite = np.isfinite(batch) & np.isfinite(maps)  # [B, C]
        n = finite.sum(axis=0)  # [C]
        kept = np.where(finite, batch, 0.0)
        batch_mean = kept.sum(axis=0) / np.maximum(n, 1)
        batch_m2 = np.where(finite, (kept - batch_mean) ** 2, 0.0).sum(axis=0)
        self._combine(n, batch_mean, batch_m2)
        self.min = np.minimum(self.min, np.where(finite, batch, np.inf).min(axis=0))
        self.max = np.maximum(self.max, np.where(finite, batch, -np.inf).max(axis=0))
        self.map_sum += np.where(finite, maps, 0.0).sum(axis=0)

    def _combine(self, n: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        """Chan et al.'s pairwise update with ``n`` [C] more values of ``mean`` and ``m2`` [C] (n may be 0)."""
        total = self.count + n
        share = np.divide(n, total, out=np.zeros(n.shape), where=total > 0)
        delta = mean - self.mean
        self.mean = self.mean + delta * share
        self.m2 = self.m2 + m2 + delta**2 * self.count * share
        self.count = total

    def merge(self, other: StreamingMoments) -> None:
        """Fold in the moments of other images (Chan et al.'s pairwise update; order-free up to float64 rounding)."""
        if other.mean.shape != self.mean.shape:
            raise ValueError(f"cannot merge moments of {other.mean.size} units into {self.mean.size}")
        self._combine(other.count, other.mean, other.m2)
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        self.map_sum = self.map_sum + other.map_sum

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation [C] (0 for a unit with fewer than two finite values)."""
        variance = np.divide(self.m2, self.count, out=np.zeros_like(self.m2), where=self.count >= 2)
        return np.sqrt(np.maximum(variance, 0.0))

    @property
    def map_mean(self) -> np.ndarray:
        return self.map_sum / np.maximum(self.count, 1)

    def state_dict(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}count": self.count, f"{prefix}mean": self.mean, f"{prefix}m2": self.m2,
                f"{prefix}min": self.min, f"{prefix}max": self.max, f"{prefix}map_sum": self.map_sum}

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str) -> None:
        self.count = state[f"{prefix}count"].astype(np.int64)
        for name in ("mean", "m2", "min", "max", "map_sum"):
            setattr(self, name, state[f"{prefix}{name}"].copy())
