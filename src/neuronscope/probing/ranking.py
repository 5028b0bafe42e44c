"""Best-first listings with one rule for ties, shared by every unit → words / texts listing.

``torch.topk`` leaves the order of equal values unspecified (it differs between CPU and CUDA and with
the tensor's size), so two listings of the same scores could disagree. Here ties keep the order of the
rows (the vocabulary's order): a stable descending sort.
"""

from __future__ import annotations

import torch
from torch import Tensor


def top_k(values: Tensor, k: int, *, chunk: int = 512) -> tuple[Tensor, Tensor]:
    """The ``k`` largest entries of each column of ``values`` [N, M] (or of a vector [N]), best first, ties in
    row order: ``(values [k, M], rows [k, M])`` ([k] each for a vector).

    ``chunk`` columns are sorted at a time: a full sort of 10 k words x 2,560 units would hold 200 MB of indices.
    """
    k = min(k, values.shape[0])
    if values.ndim == 1:
        picked, rows = top_k(values[:, None], k, chunk=chunk)
        return picked[:, 0], rows[:, 0]
    value_parts, row_parts = [], []
    for start in range(0, values.shape[1], chunk):
        block = values[:, start:start + chunk]
        order = torch.argsort(block, dim=0, descending=True, stable=True)[:k]
        value_parts.append(block.gather(0, order))
        row_parts.append(order)
    if not row_parts:  # no columns
        return values.new_zeros(k, 0), torch.zeros(k, 0, dtype=torch.long, device=values.device)
    return torch.cat(value_parts, dim=1), torch.cat(row_parts, dim=1)
