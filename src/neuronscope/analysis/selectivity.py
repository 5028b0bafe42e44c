"""How selective a unit is for a class: AUROC of one class against all others.

Ties matter: a dead or rectified unit answers many images with exactly 0,
and ordinal ranks would make such ties look selective. Ranks here are
average ranks, so a constant unit has AUROC 0.5 for every class.
"""

from __future__ import annotations

import torch


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based) of each column of ``values`` [N, U], tied values sharing their average rank."""
    n, units = values.shape
    sorted_values, order = values.sort(dim=0)
    new_group = torch.ones_like(sorted_values, dtype=torch.long)
    new_group[1:] = (sorted_values[1:] != sorted_values[:-1]).long()
    group = new_group.cumsum(dim=0) - 1 + torch.arange(units) * n  # [N, U] unique group id per column
    position = torch.arange(n, dtype=torch.float64).unsqueeze(1).expand(n, units)
    flat_group, flat_position = group.reshape(-1), position.reshape(-1)
    first = torch.full((n * units,), float("inf"), dtype=torch.float64).scatter_reduce(0, flat_group, flat_position, "amin")
    last = torch.full((n * units,), -1.0, dtype=torch.float64).scatter_reduce(0, flat_group, flat_position, "amax")
    sorted_ranks = ((first[group] + last[group]) / 2 + 1)  # [N, U]
    ranks = torch.empty_like(sorted_ranks)
    ranks.scatter_(0, order, sorted_ranks)
    return ranks


def auroc_per_class(responses: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """AUROC of each class against all other samples, for every unit.

    responses: [N, U] one value per sample and unit; labels: [N] int in [0, n_classes).
    Returns [n_classes, U] (NaN for a class without samples or without negatives).
    """
    ranks = average_ranks(responses.double())  # [N, U]
    labels = labels.long()
    # summed per class in place: a one-hot [N, C] matrix would take more memory than the ranks with many classes
    rank_sums = torch.zeros(n_classes, ranks.shape[1], dtype=torch.float64).index_add_(0, labels, ranks)  # [C, U]
    positives = torch.bincount(labels, minlength=n_classes).double()  # [C]
    negatives = labels.numel() - positives
    auroc = (rank_sums - (positives * (positives + 1) / 2).unsqueeze(1)) / (positives * negatives).unsqueeze(1)
    return auroc.float()
