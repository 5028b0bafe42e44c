"""Streaming top-k (and bottom-k) per unit, with ties broken by image ordinal, kept on the model's device.

State per unit: the k best ``(value, ordinal, cell)`` seen so far. A batch is
merged by sorting the k kept and the B new candidates together, so the result
is the k best of everything seen, whatever the batch size or the order of the
batches: the same set a brute-force sort over all images gives.
The state lives where the activations are (the GPU in a GPU scan), so a
batch's ``[B, C]`` maxima never leave it for the top-k; checkpoints and
results read it back as NumPy arrays. Memory: units x k.
"""

from __future__ import annotations

import numpy as np
import torch

#: Ordinal of an empty slot: loses every tie (real ordinals are smaller).
EMPTY = np.iinfo(np.int64).max

ArrayLike = np.ndarray | torch.Tensor


class StreamingTopK:
    """The ``k`` highest (``largest=True``) or lowest finite values per unit, with their ordinal and cell.

    Order: value (descending for top, ascending for bottom), then ordinal
    ascending. Tensors on ``device``: ``values`` [C, k] float32, ``ordinals``
    [C, k] int64, ``cells`` [C, k, 2] int16 (row, col).
    """

    def __init__(self, units: int, k: int, *, largest: bool = True, device: str | torch.device = "cpu") -> None:
        if k < 1:
            raise ValueError(f"a top-k needs k >= 1, not {k}")
        self.k = k
        self.largest = largest
        self.device = torch.device(device)
        fill = float("-inf") if largest else float("inf")
        self.values = torch.full((units, k), fill, dtype=torch.float32, device=self.device)
        self.ordinals = torch.full((units, k), EMPTY, dtype=torch.int64, device=self.device)
        self.cells = torch.zeros((units, k, 2), dtype=torch.int16, device=self.device)

    def _tensor(self, array: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(array).to(device=self.device, dtype=dtype)

    def update(self, values: ArrayLike, ordinals: ArrayLike, cells: ArrayLike) -> None:
        """Merge one batch.

        Args:
            values: [B, C] float32, one value per image and unit (max over space).
            ordinals: [B] int64, the images' ordinals.
            cells: [B, C, 2] (row, col) of each value.
        """
        values = self._tensor(values, torch.float32).T  # [C, B]
        # inf or NaN (a broken forward) is no example: as NaN it beats nothing and sorts after the empty
        # slots, so it never enters the k kept (the histogram counts it in ``nonfinite``).
        values = values.masked_fill(~values.isfinite(), float("nan"))
        ordinals = self._tensor(ordinals, torch.int64).expand(values.shape[0], -1)  # [C, B]
        self._keep_best(values, ordinals, self._tensor(cells, torch.int16).transpose(0, 1))

    def merge(self, other: StreamingTopK) -> None:
        """Fold in another top-k of the same units and direction (a partial result of other images).

        The k best of the union of two sets is the k best of their k bests, so
        merging partial results in any order and grouping equals one pass.
        """
        if other.k != self.k or other.largest != self.largest or other.values.shape != self.values.shape:
            raise ValueError(f"cannot merge a top-{other.k} of {other.values.shape[0]} units "
                             f"(largest={other.largest}) into a top-{self.k} of {self.values.shape[0]}")
        self._keep_best(other.values.to(self.device), other.ordinals.to(self.device), other.cells.to(self.device))

    def _keep_best(self, values: torch.Tensor, ordinals: torch.Tensor, cells: torch.Tensor) -> None:
        """Keep the k best of those kept and the candidates: ``values`` [C, n], ``ordinals`` [C, n],
        ``cells`` [C, n, 2].

        Only the rows where some candidate beats the row's k-th kept entry are re-sorted: once a scan
        is past its first few thousand images that is a small share of units, and the other rows'
        k best cannot change.
        """
        worst_value, worst_ordinal = self.values[:, -1:], self.ordinals[:, -1:]
        beats = (values > worst_value) if self.largest else (values < worst_value)
        beats |= (values == worst_value) & (ordinals < worst_ordinal)  # NaN beats nothing: it sorts last
        rows = beats.any(dim=1).nonzero().flatten()
        if rows.numel() == 0:
            return
        all_values = torch.cat([self.values[rows], values[rows]], dim=1)  # [R, k + n]
        all_ordinals = torch.cat([self.ordinals[rows], ordinals[rows]], dim=1)
        all_cells = torch.cat([self.cells[rows], cells[rows]], dim=1)  # [R, k + n, 2]
        primary = -all_values if self.largest else all_values
        # Order by (primary, ordinal): a stable sort by ordinal, then a stable sort by primary. NaN (a broken
        # forward) sorts last, after the empty slots' infinities.
        by_ordinal = all_ordinals.argsort(dim=1, stable=True)
        order = by_ordinal.gather(1, primary.gather(1, by_ordinal).argsort(dim=1, stable=True))[:, : self.k]
        self.values[rows] = all_values.gather(1, order)
        self.ordinals[rows] = all_ordinals.gather(1, order)
        self.cells[rows] = all_cells.gather(1, order[:, :, None].expand(-1, -1, 2))

    def to(self, device: str | torch.device) -> StreamingTopK:
        """Move the state (e.g. to the CPU before a partial result is pickled); returns ``self``."""
        self.device = torch.device(device)
        self.values, self.ordinals, self.cells = (t.to(self.device) for t in (self.values, self.ordinals, self.cells))
        return self

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values, ordinals, cells)`` as NumPy arrays on the CPU (copies)."""
        return tuple(t.cpu().numpy().copy() for t in (self.values, self.ordinals, self.cells))  # type: ignore[return-value]

    def live_ordinals(self) -> np.ndarray:
        """The ordinals held anywhere (for the id table the scanner keeps)."""
        ordinals = self.ordinals.cpu().numpy()
        return np.unique(ordinals[ordinals != EMPTY])

    def state_dict(self, prefix: str) -> dict[str, np.ndarray]:
        values, ordinals, cells = self.arrays()
        return {f"{prefix}values": values, f"{prefix}ordinals": ordinals, f"{prefix}cells": cells}

    def load_state_dict(self, state: dict[str, np.ndarray], prefix: str) -> None:
        self.values = torch.from_numpy(state[f"{prefix}values"].copy()).to(self.device)
        self.ordinals = torch.from_numpy(state[f"{prefix}ordinals"].copy()).to(self.device)
        self.cells = torch.from_numpy(state[f"{prefix}cells"].copy()).to(self.device)
