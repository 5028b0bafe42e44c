"""Analyses over recorded unit responses: selectivity, multimodality."""

from .selectivity import auroc_per_class, average_ranks

__all__ = ["auroc_per_class", "average_ranks"]
