"""Edits: change chosen units of a layer while a :class:`Recorder` is active.

Edits ride on the recorder's own hooks (there is no second hook mechanism):

    with Recorder(model, "visual.attnpool", edits=[zero_units("neurons", "0-31")]) as rec:
        rec.run(images)      # layer4's last block sees units 0-31 zeroed

An edit never modifies the tensor it is given in place: the same tensor may
be held by the module (``act3`` is an in-place ReLU) or by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import Tensor

from neuronscope.activations.layout import CHANNELS_FIRST, Layout
from neuronscope.activations.reduce import unit_axis
from neuronscope.errors import UnitsError
from neuronscope.units import parse_units

Mode = Literal["zero", "mean", "set"]


@dataclass(frozen=True)
class Edit:
    """Replace ``units`` of ``layer`` while the recorder is active.

    Attributes:
        layer: a layer name or alias (resolved by the recorder).
        units: unit indices, a unit list (``"0-31,550"``), or None for all.
        mode: ``zero``; ``mean`` (mean-ablate: each unit's value everywhere
            becomes ``value``, its reference mean [U] or scalar, e.g. from a
            scan; without ``value``, the unit's mean over this batch and all
            positions); ``set`` (each unit becomes ``value``, a scalar or [U]).
        value: see ``mode``; a tensor of shape [U] (one per listed unit) or a scalar.
    """

    layer: str
    units: Sequence[int] | str | None = None
    mode: Mode = "zero"
    value: float | Tensor | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("zero", "mean", "set"):
            raise ValueError(f"edit mode {self.mode!r}: use zero, mean or set")
        if self.mode == "set" and self.value is None:
            raise ValueError("a 'set' edit needs a value")

    def unit_indices(self, n_units: int) -> list[int]:
        if self.units is None:
            return list(range(n_units))
        return parse_units(self.units, n_units)  # one parser: text, ints, NumPy / torch integers

    def apply(self, acts: Tensor, layout: Layout = CHANNELS_FIRST) -> Tensor:
        """A new tensor like ``acts`` with the units replaced (``acts`` is not touched); ``layout``: where a
        4-D ``acts`` holds its units (the recorder passes the layer's)."""
        axis = unit_axis(acts, layout)
        units = self.unit_indices(acts.shape[axis])
        index = torch.tensor(units, device=acts.device)
        edited = acts.clone()
        view = edited.movedim(axis, -1)  # [..., C], a view: writes land in `edited`
        if self.mode == "zero":
            view[..., index] = 0
            return edited
        if self.mode == "mean" and self.value is None:
            replacement = acts.movedim(axis, -1)[..., index].reshape(-1, len(units)).mean(dim=0)  # [U]
        else:
            replacement = torch.as_tensor(self.value, dtype=acts.dtype, device=acts.device)
            if replacement.ndim == 1 and replacement.numel() not in (1, len(units)):
                raise UnitsError(f"edit of {self.layer}: {replacement.numel()} values for {len(units)} units")
        view[..., index] = replacement.to(acts.dtype)
        return edited


def zero_units(layer: str, units: Sequence[int] | str | None = None) -> Edit:
    """Zero ``units`` of ``layer`` (all units when None)."""
    return Edit(layer, units, "zero")


def mean_ablate(layer: str, units: Sequence[int] | str | None = None, means: float | Tensor | None = None) -> Edit:
    """Replace ``units`` by their mean: ``means`` [U] from a reference set, else this batch's."""
    return Edit(layer, units, "mean", means)


def set_units(layer: str, units: Sequence[int] | str | None, value: float | Tensor) -> Edit:
    """Set ``units`` of ``layer`` to ``value`` (scalar or one per unit [U]) everywhere."""
    return Edit(layer, units, "set", value)
