"""The Objective algebra: what a render maximizes, composable like numbers.

    obj = 0.5 * channel("neurons", 7) - channel("neurons", 9)
    obj.layers         # ("neurons",): the only layer the render hooks
    str(obj)           # "0.5 * Channel [neurons, 7] - Channel [neurons, 9]"

An objective maps a :class:`Context` (the captured activations of one
forward, with autograd on) to one value **per image** [B]. Keeping the batch
axis is what lets one batch render many units: image ``i`` can be scored by
unit ``i`` and the images never mix. Objectives are **maximized**; write a
penalty with a minus sign (``channel(...) - 0.1 * l2()``). A weight may be a
tensor or a NumPy array, one value or one per image (``torch.tensor([0.1, 5.0]) * obj``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from neuronscope.activations.catalog import unknown_layout_message
from neuronscope.activations.layout import CHANNELS_FIRST, Layout
from neuronscope.activations.reduce import unit_maps
from neuronscope.errors import LayerNotFoundError, NeuronscopeError

Number = int | float


@dataclass
class Context:
    """What an objective can read during one optimisation step.

    Attributes:
        acts: ``{layer name as the objective wrote it: activations}``, in the
            autograd graph, as the model runs them ([B, C, H, W] maps, or [B, H, W, C] for a
            channels-last layer; [B, T, D] ViT tokens, [B, D] vectors). Read units with :meth:`maps`.
        image: the parameterised image before transforms, [B, C, H, W] in [0, 1]
            (what the penalties L1/L2/TV read; C = 4 with alpha).
        step: the optimiser step (0-based).
        token_grid: (rows, cols) of a ViT's patch tokens; None for conv nets.
        prefix_tokens: the class and register tokens before a ViT's patch tokens
            (:attr:`~neuronscope.models.LoadedModel.prefix_tokens`).
        values: each objective's value once computed on this context, so that an objective that several
            terms read (a facet term reads its unit's objective, which the sum adds too) runs once.
        layouts: ``{layer as in acts: where its 4-D activations hold their units}`` (the render passes the
            model's, :func:`neuronscope.activations.layer_layouts`; None: unknown, an error to read units
            from); a layer not in it is read channels first.
        relu: the ReLU an objective applies itself: the render's redirected one while it redirects the
            model's (its first steps), as Lucid's gradient override reached every ReLU of the graph.
    """

    acts: Mapping[str, Tensor]
    image: Tensor
    step: int = 0
    token_grid: tuple[int, int] | None = None
    values: dict["Objective", Tensor] = field(default_factory=dict, repr=False)
    layouts: Mapping[str, Layout | None] = field(default_factory=dict)
    prefix_tokens: int = 1
    relu: Callable[[Tensor], Tensor] = torch.relu

    @property
    def batch(self) -> int:
        return self.image.shape[0]

    def __getitem__(self, layer: str) -> Tensor:
        try:
            return self.acts[layer]
        except KeyError:
            raise LayerNotFoundError(f"layer {layer!r} was not recorded; an objective must list it in its "
                                     f"layers (recorded: {', '.join(self.acts) or 'none'})") from None

    def maps(self, layer: str) -> Tensor:
        """The layer's units as maps [B, C, H, W] in fp32, whatever its layout (ViTs: the patch tokens on
        ``token_grid``, after ``prefix_tokens``; vectors: 1 x 1 maps). Every unit objective reads this, never
        dim 1 of the raw tensor."""
        acts = self[layer]
        layout = self.layouts.get(layer, CHANNELS_FIRST)
        if layout is None and acts.ndim == 4:
            raise NeuronscopeError(unknown_layout_message(layer, tuple(acts.shape)))
        return unit_maps(acts.float(), grid=self.token_grid, layout=layout or CHANNELS_FIRST,
                         prefix_tokens=self.prefix_tokens)


def _has_top_level(description: str, operators: str) -> bool:
    """Whether ``description`` has one of the binary ``operators`` outside brackets (``"a - b"``, not ``"[a - b]"``)."""
    depth = 0
    for i, char in enumerate(description):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif depth == 0 and char in operators and description[i - 1:i] == " ":
            return True  # binary: a space before it (a leading "-" is unary)
    return False


def _operand(description: str, operators: str = "+-") -> str:
    """``description`` as an operand, bracketed when it has a top-level operator of ``operators``.

    The default suits the operands of ``*`` and the right operand of ``-``. The right operand of ``/``
    needs ``"+-*/"``: ``a / (b * c)`` is not ``a / b * c``.
    """
    return f"({description})" if _has_top_level(description, operators) else description


def _divisor(description: str) -> str:
    """The right operand of ``/``: bracketed whenever it is itself a sum, difference, product or quotient."""
    return _operand(description, "+-*/")


def _number(value: Number) -> str:
    return f"{value:g}"


def _weight(value: object) -> "Tensor | Number | None":
    """A number, or a tensor (or NumPy array) of one weight [] or one per image [B]; None for anything else."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.asarray(value, dtype=np.float64))
    if isinstance(value, Tensor):
        if value.ndim > 1:
            raise ValueError(f"a tensor weight of shape {tuple(value.shape)}: give one value or one per image [B]")
        return value.detach()
    return value if isinstance(value, numbers.Real) else None


def _weight_text(value: "Tensor | Number") -> str:
    """A weight as a description writes it: ``0.5``, or per image ``[0.1,5]`` (``[0.1,...,5 (9)]`` when long)."""
    if not isinstance(value, Tensor):
        return _number(value)
    if value.ndim == 0:
        return _number(float(value))
    listed = [_number(v) for v in value.tolist()]
    return f"[{','.join(listed)}]" if len(listed) <= 4 else f"[{listed[0]},...,{listed[-1]} ({len(listed)})]"


def _scaled(values: Tensor, weight: "Tensor | Number", op: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``op(values, weight)`` with a tensor weight brought to the values' device and dtype.

    Raises:
        ValueError: a per-image weight whose length is not the batch's (torch would name neither).
    """
    if isinstance(weight, Tensor):
        if weight.ndim == 1 and len(weight) != len(values):
            raise ValueError(f"a per-image weight {_weight_text(weight)} has {len(weight)} values for a batch of "
                             f"{len(values)} images: give one value, or one per image")
        weight = weight.to(values.device, values.dtype)
    return op(values, weight)


class Objective:
    """A differentiable score per image, with the layers it needs and a readable description.

    Args:
        fn: ``Context -> Tensor [B]``.
        layers: layer names or aliases the render must hook (only these are).
        description: e.g. ``"Channel [neurons, 7]"``.
        live_layers: layers read as the very tensor the forward goes on with
            (not a clone), for objectives that differentiate *with respect to*
            a layer (faceted visualization). Never an in-place module's input.
    """

    #: NumPy defers to the objective's own operators: ``np.array([1., 2.]) * obj`` is a per-image weight,
    #: not an object array of objectives.
    __array_ufunc__ = None

    def __init__(self, fn: Callable[[Context], Tensor], layers: Sequence[str] = (), description: str = "",
                 live_layers: Sequence[str] = ()) -> None:
        self.fn = fn
        self.layers: tuple[str, ...] = tuple(dict.fromkeys(layers))
        self.live_layers: tuple[str, ...] = tuple(dict.fromkeys(live_layers))
        self.description = description or getattr(fn, "__name__", "objective")

    def _derive(self, fn: Callable[[Context], Tensor], description: str, *others: "Objective") -> "Objective":
        """A new objective computed from this one (and ``others``): their layers together."""
        parents = (self, *others)
        return Objective(fn, [name for p in parents for name in p.layers], description,
                         [name for p in parents for name in p.live_layers])

    def __call__(self, context: Context) -> Tensor:
        if self in context.values:
            return context.values[self]
        value = self.fn(context)
        if value.ndim == 0:
            value = value.expand(context.batch)
        if value.shape != (context.batch,):
            raise ValueError(f"objective {self} returned shape {tuple(value.shape)}; expected one value per "
                             f"image [{context.batch}]")
        context.values[self] = value
        return value

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """``tensor * objective``: a tensor on the left defers to :meth:`__rmul__` (torch would raise)."""
        if func in (Tensor.mul, Tensor.__mul__, torch.mul) and len(args) == 2 and not kwargs \
                and isinstance(args[1], Objective):
            return args[1].__rmul__(args[0])
        return NotImplemented

    def __repr__(self) -> str:
        return f"Objective({self.description!r}, layers={list(self.layers)})"

    def __str__(self) -> str:
        return self.description

    # ------------------------------------------------------------------ algebra

    @staticmethod
    def _combine(left: "Objective", right: "Objective", op: Callable[[Tensor, Tensor], Tensor],
                 description: str) -> "Objective":
        return left._derive(lambda ctx: op(left(ctx), right(ctx)), description, right)

    def __add__(self, other: "Objective | Number") -> "Objective":
        if isinstance(other, Objective):
            return self._combine(self, other, torch.add, f"{self} + {other}")
        if isinstance(other, numbers.Real):
            return self._derive(lambda ctx: self(ctx) + other, f"{self} + {_number(other)}")
        return NotImplemented

    def __radd__(self, other: Number) -> "Objective":
        if isinstance(other, numbers.Real) and other == 0:
            return self  # so that builtin sum() starts cleanly
        if isinstance(other, numbers.Real):
            return self._derive(lambda ctx: other + self(ctx), f"{_number(other)} + {self}")
        return NotImplemented

    def __neg__(self) -> "Objective":
        return self._derive(lambda ctx: -self(ctx), f"-{_operand(str(self))}")

    def __sub__(self, other: "Objective | Number") -> "Objective":
        if isinstance(other, Objective):
            return self._combine(self, other, torch.sub, f"{self} - {_operand(str(other))}")
        if isinstance(other, numbers.Real):
            return self._derive(lambda ctx: self(ctx) - other, f"{self} - {_number(other)}")
        return NotImplemented

    def __rsub__(self, other: Number) -> "Objective":
        if isinstance(other, numbers.Real):
            return self._derive(lambda ctx: other - self(ctx), f"{_number(other)} - {_operand(str(self))}")
        return NotImplemented

    def __mul__(self, other: "Objective | Number | Tensor") -> "Objective":
        """Times an objective, a number, or a tensor weight: one [] or one per image [B] (e.g. a facet's
        strength ramped over the batch)."""
        if isinstance(other, Objective):
            return self._combine(self, other, torch.mul, f"{_operand(str(self))} * {_operand(str(other))}")
        weight = _weight(other)
        if weight is not None:
            return self._derive(lambda ctx: _scaled(self(ctx), weight, torch.mul),
                                f"{_weight_text(weight)} * {_operand(str(self))}")
        return NotImplemented

    __rmul__ = __mul__

    def __truediv__(self, other: "Objective | Number | Tensor") -> "Objective":
        if isinstance(other, Objective):
            return self._combine(self, other, torch.div, f"{_operand(str(self))} / {_divisor(str(other))}")
        weight = _weight(other)
        if weight is not None:
            return self._derive(lambda ctx: _scaled(self(ctx), weight, torch.div),
                                f"{_operand(str(self))} / {_weight_text(weight)}")
        return NotImplemented

    def __rtruediv__(self, other: Number) -> "Objective":
        if isinstance(other, numbers.Real):
            return self._derive(lambda ctx: other / self(ctx), f"{_number(other)} / {_divisor(str(self))}")
        return NotImplemented
