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
    """

    def __init__(self, units: int) -> None:
        self.count = 0
        self.mean = np.zeros(units, np.float64)
        self.m2 = np.zeros(units, np.float64)
        self.min = np.full(units, np.inf, np.float64)
        self.max = np.full(units, -np.inf, np.float64)
        self.map_sum = np.zeros(units, np.float64)

    def update(self, values: np.ndarray, map_means: np.ndarray) -> None:
        """Merge one batch: ``values`` [B, C] (max over space), ``map_means`` [B, C] (mean over space)."""
        batch = values.astype(np.float64)
        n = batch.shape[0]
        if n == 0:
            return
        batch_mean = batch.mean(axis=0)
        batch_m2 = ((batch - batch_mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + batch_m2 + delta**2 * (self.count * n / total)
        self.count = total
        self.min = np.minimum(self.min, batch.min(axis=0))
        self.max = np.maximum(self.max, batch.max(axis=0))
        self.map_sum += map_means.astype(np.float64).sum(axis=0)

    def merge(self, other: StreamingMoments) -> None:
        """Fold in the moments of other images (Chan et al.'s pairwise update; order-free up to float64 rounding)."""
        if other.mean.shape != self.mean.shape:
            raise ValueError(f"cannot merge moments of {other.mean.size} units into {self.mean.size}")
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / total)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.count * other.count / total)
        self.count = total
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        self.map_sum = self.map_sum + other.map_sum

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation [C] (0 for fewer than two images)."""
        if self.count < 2:
            return np.zeros_like(self.mean)
        return np.sqrt(np.maximum(self.m2 / self.count, 0.0))

    @property
    def map_mean(self) -> np.ndarray:
        return self.map_sum / max(self.count, 1)

    def state_dict(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}count": np.array(self.count), f"{prefix}mean": self.mean, f"{prefix}m2": self.m2,
                f"{prefix}min": self.min, f"{prefix}max": self.max, f"{prefix}map_sum": self.map_sum}

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str) -> None:
        self.count = int(state[f"{prefix}count"])
        for name in ("mean", "m2", "min", "max", "map_sum"):
            setattr(self, name, state[f"{prefix}{name}"].copy())
