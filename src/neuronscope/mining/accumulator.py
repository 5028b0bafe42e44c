"""Everything a scan keeps about one layer, updated batch by batch.

Per unit: top-k and bottom-k images by max-over-space activation (with the
argmax cell), moments, and a histogram with reservoir samples. The
reductions over space and the top-k run where the activations are (the GPU,
when there is one); only ``[B, C]`` maxima and means come back to the CPU,
for the moments and histograms. Memory is bounded by units x k and does not
grow with the number of images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from neuronscope.activations.layout import CHANNELS_FIRST, Layout
from neuronscope.activations.reduce import spatial_max, unit_maps
from neuronscope.errors import NeuronscopeError
from neuronscope.mining.histogram import StreamingHistogram
from neuronscope.mining.moments import StreamingMoments
from neuronscope.mining.topk import StreamingTopK

if TYPE_CHECKING:  # annotations only
    from neuronscope.activations.geometry import LayerGeometry


class ScanSettingsError(NeuronscopeError, ValueError):
    """Scan settings that cannot work (a top-k of 0, a one-bin histogram, ...)."""


@dataclass(frozen=True)
class ScanSettings:
    """What a scan keeps per unit; part of the run's config (a resumed scan must match)."""

    top_k: int = 48
    bottom_k: int = 48
    n_bins: int = 128
    reservoir: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        # n_bins >= 2: a range straddling a bin edge at every scale (-1 and 1) never fits one bin.
        for name, least in (("top_k", 1), ("bottom_k", 1), ("n_bins", 2), ("reservoir", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ScanSettingsError(f"ScanSettings.{name} must be a whole number of at least {least}, "
                                        f"not {value!r}")


def reduce_batch(acts: torch.Tensor, grid: tuple[int, int] | None = None, layout: Layout = CHANNELS_FIRST,
                 prefix_tokens: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's activations -> per image and unit: max over space, its cell, mean over space.

    Args:
        acts: maps [B, C, H, W] (or [B, H, W, C] with ``layout="channels_last"``),
            ViT tokens [B, T, D] (patch tokens laid on ``grid``) or vectors [B, D].
        prefix_tokens: the class and register tokens before a ViT's patch tokens (the layer's
            :class:`~neuronscope.activations.LayerGeometry` says how many; open_clip's ViTs: 1).

    Returns:
        ``values`` [B, C] float32, ``cells`` [B, C, 2] int16 (row, col),
        ``map_means`` [B, C] float32, on the activations' device.
    """
    maps = unit_maps(acts.float(), grid=grid if acts.ndim == 3 else None, layout=layout,
                     prefix_tokens=prefix_tokens)  # [B, C, H, W]
    values, cells = spatial_max(maps)
    return values, cells.to(torch.int16), maps.mean(dim=(2, 3))


def _numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    return array.cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


class LayerAccumulator:
    """Streaming statistics of every unit of one layer.

    Args:
        units: number of units C.
        grid: (rows, cols) of the layer's spatial map (cells are on this grid).
        settings: k, histogram bins, reservoir size, seed.
        device: where the top-k and bottom-k live (the model's device).
        layout: where a 4-D activation of the layer holds its units (:mod:`neuronscope.activations.layout`).
        prefix_tokens: class and register tokens before a ViT layer's patches (see :func:`reduce_batch`).
    """

    def __init__(self, units: int, grid: tuple[int, int], settings: ScanSettings,
                 device: str | torch.device = "cpu", layout: Layout = CHANNELS_FIRST,
                 prefix_tokens: int = 1) -> None:
        self.units = units
        self.grid = grid
        self.layout = layout
        self.prefix_tokens = prefix_tokens
        self.settings = settings
        self.top = StreamingTopK(units, settings.top_k, largest=True, device=device)
        self.bottom = StreamingTopK(units, settings.bottom_k, largest=False, device=device)
        self.moments = StreamingMoments(units)
        self.histogram = StreamingHistogram(units, settings.n_bins, settings.reservoir)

    @classmethod
    def for_geometry(cls, geometry: LayerGeometry, settings: ScanSettings,
                     device: str | torch.device = "cpu") -> LayerAccumulator:
        """An empty accumulator of a layer of this geometry (:func:`~neuronscope.activations.layer_geometry`):
        its ``units`` on its ``grid``, read as its ``layout`` and ``prefix_tokens`` say."""
        return cls(geometry.units, geometry.grid, settings, device, layout=geometry.layout,
                   prefix_tokens=geometry.prefix_tokens)

    def reduce(self, acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This layer's activations of a batch -> ``(values, cells, map_means)`` on this layer's grid
        (see :func:`reduce_batch`)."""
        return reduce_batch(acts, self.grid, self.layout, self.prefix_tokens)

    def update(self, values: np.ndarray | torch.Tensor, cells: np.ndarray | torch.Tensor,
               map_means: np.ndarray | torch.Tensor, ordinals: np.ndarray, hashes: np.ndarray) -> None:
        """Merge one batch (see :func:`reduce_batch` for ``values``, ``cells``, ``map_means``; tensors or arrays).

        ``ordinals`` [B] int64 break ties; ``hashes`` [B] int64 pick reservoir samples.
        """
        if values.shape[1] != self.units:
            raise ValueError(f"batch has {values.shape[1]} units, the layer {self.units}")
        self.top.update(values, ordinals, cells)
        self.bottom.update(values, ordinals, cells)
        values = _numpy(values)
        self.moments.update(values, _numpy(map_means))
        self.histogram.update(values, ordinals, hashes)

    def to(self, device: str | torch.device) -> LayerAccumulator:
        """Move the device-resident part (top-k, bottom-k); returns ``self``."""
        self.top.to(device)
        self.bottom.to(device)
        return self

    def merge(self, other: LayerAccumulator) -> None:
        """Fold in the statistics of other images of the same layer (a partial result, e.g. a Ray worker's).

        Every piece merges associatively and commutatively, so partial results
        merged in any order and grouping equal one pass over all the images.
        """
        if (other.units, other.grid, other.settings) != (self.units, self.grid, self.settings):
            raise ValueError(f"cannot merge a layer of {other.units} units on {other.grid} ({other.settings}) "
                             f"into {self.units} units on {self.grid} ({self.settings})")
        self.top.merge(other.top)
        self.bottom.merge(other.bottom)
        self.moments.merge(other.moments)
        self.histogram.merge(other.histogram)

    def live_ordinals(self) -> np.ndarray:
        """Ordinals of every image some unit still holds (top, bottom or a reservoir)."""
        return np.union1d(np.union1d(self.top.live_ordinals(), self.bottom.live_ordinals()),
                          self.histogram.live_ordinals())

    def state_dict(self) -> dict[str, np.ndarray]:
        return {**self.top.state_dict("top."), **self.bottom.state_dict("bottom."),
                **self.moments.state_dict("moments."), **self.histogram.state_dict("histogram.")}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.top.load_state_dict(state, "top.")
        self.bottom.load_state_dict(state, "bottom.")
        self.moments.load_state_dict(state, "moments.")
        self.histogram.load_state_dict(state, "histogram.")
