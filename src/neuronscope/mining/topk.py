"""Streaming top-k (and bottom-k) per unit, with ties broken by image ordinal.

State per unit: the k best ``(value, ordinal, cell)`` seen so far. A batch is
merged by sorting the k kept and the B new candidates together, so the result
is the k best of everything seen, whatever the batch size or the order of the
batches: the same set a brute-force sort over all images gives.
Memory: units x k.
"""

from __future__ import annotations

import numpy as np

#: Ordinal of an empty slot: loses every tie (real ordinals are smaller).
EMPTY = np.iinfo(np.int64).max


class StreamingTopK:
    """The ``k`` highest (``largest=True``) or lowest values per unit, with their ordinal and cell.

    Order: value (descending for top, ascending for bottom), then ordinal
    ascending. ``values`` [C, k] float32, ``ordinals`` [C, k] int64, ``cells``
    [C, k, 2] int16 (row, col).
    """

    def __init__(self, units: int, k: int, *, largest: bool = True) -> None:
        self.k = k
        self.largest = largest
        fill = -np.inf if largest else np.inf
        self.values = np.full((units, k), fill, np.float32)
        self.ordinals = np.full((units, k), EMPTY, np.int64)
        self.cells = np.zeros((units, k, 2), np.int16)

    def update(self, values: np.ndarray, ordinals: np.ndarray, cells: np.ndarray) -> None:
        """Merge one batch.

        Args:
            values: [B, C] float32, one value per image and unit (max over space).
            ordinals: [B] int64, the images' ordinals.
            cells: [B, C, 2] (row, col) of each value.
        """
        units = self.values.shape[0]
        self._keep_best(values.T.astype(np.float32), np.broadcast_to(ordinals, (units, len(ordinals))),
                        cells.transpose(1, 0, 2).astype(np.int16))

    def merge(self, other: StreamingTopK) -> None:
        """Fold in another top-k of the same units and direction (a partial result of other images).

        The k best of the union of two sets is the k best of their k bests, so
        merging partial results in any order and grouping equals one pass.
        """
        if other.k != self.k or other.largest != self.largest or other.values.shape != self.values.shape:
            raise ValueError(f"cannot merge a top-{other.k} of {other.values.shape[0]} units "
                             f"(largest={other.largest}) into a top-{self.k} of {self.values.shape[0]}")
        self._keep_best(other.values, other.ordinals, other.cells)

    def _keep_best(self, values: np.ndarray, ordinals: np.ndarray, cells: np.ndarray) -> None:
        """Keep the k best of those kept and the candidates: ``values`` [C, n], ``ordinals`` [C, n],
        ``cells`` [C, n, 2]."""
        all_values = np.concatenate([self.values, values], axis=1)  # [C, k + n]
        all_ordinals = np.concatenate([self.ordinals, ordinals], axis=1)
        all_cells = np.concatenate([self.cells, cells], axis=1)  # [C, k + n, 2]
        primary = -all_values if self.largest else all_values
        # lexsort: last key is primary. NaN (a broken forward) sorts last either way.
        order = np.lexsort((all_ordinals, primary), axis=-1)[:, : self.k]  # [C, k]
        self.values = np.take_along_axis(all_values, order, axis=1)
        self.ordinals = np.take_along_axis(all_ordinals, order, axis=1)
        self.cells = np.take_along_axis(all_cells, order[:, :, None], axis=1)

    def live_ordinals(self) -> np.ndarray:
        """The ordinals held anywhere (for the id table the scanner keeps)."""
        return np.unique(self.ordinals[self.ordinals != EMPTY])

    def state_dict(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}values": self.values, f"{prefix}ordinals": self.ordinals, f"{prefix}cells": self.cells}

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str) -> None:
        self.values = state[f"{prefix}values"].copy()
        self.ordinals = state[f"{prefix}ordinals"].copy()
        self.cells = state[f"{prefix}cells"].copy()
