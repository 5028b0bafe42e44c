"""Whole layers, unit by unit: plain and diverse renders, batched.

    renders = render_units(model, "neurons", range(32), batch_size=16)   # 2 passes of 16 units
    renders[0].unit, renders[0].image.shape, renders[0].objective

A plain render puts one unit in each image of the batch (image ``i``
maximises ``units[i]``), so a layer takes units / batch_size passes. Each
image is seeded by its unit (see :func:`render`), so a unit starts alike and
sees the same transforms whichever units share its pass; its final image is
reproduced exactly only by the same pass (same units, same batch size): in
another pass it differs by float rounding that Adam amplifies over the
steps. A diverse render gives one unit a whole batch of N images, pushed
apart by Lucid's diversity objective.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from neuronscope.models.loaded import LoadedModel, require_loaded
from neuronscope.objectives import channel, diversity
from neuronscope.units import parse_unit, parse_units
from neuronscope.visualize.render import StepCallback, render
from neuronscope.visualize.results import RenderConfig, UnitRender

Piece = TypeVar("Piece")


def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    """``items`` in consecutive pieces of at most ``size``."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def render_units(
    model: LoadedModel,
    layer: str,
    units: str | int | Iterable[int],
    *,
    batch_size: int = 16,
    config: RenderConfig = RenderConfig(),
    on_step: StepCallback | None = None,
    on_pass: Callable[[list[UnitRender]], None] | None = None,
) -> list[UnitRender]:
    """One image per unit, ``batch_size`` units per pass.

    Args:
        layer: a layer name or alias (``neurons``).
        units: unit indices, read by :func:`~neuronscope.units.parse_units` (``"0-31"``, ``"all"``, an int, a
            list, NumPy / torch integers); rendered in this order.
        on_step: called with (steps done, total) over all passes.
        on_pass: called with each pass's renders as soon as it finishes (to store them).

    Returns:
        One :class:`UnitRender` (kind ``plain``) per unit, in order.
    """
    require_loaded(model, "render_units")
    units = parse_units(units, model.layer_shape(layer)[0])

    def render_pass(piece: list[int], step_hook: StepCallback | None) -> list[UnitRender]:
        result = render(model, channel(layer, piece), batch=len(piece), config=config, on_step=step_hook, keys=piece)
        return [UnitRender(layer, unit, "plain", 0, result.images[i], float(result.final[i]), result.curve[:, i],
                           f"Channel [{layer}, {unit}]") for i, unit in enumerate(piece)]

    return render_passes(chunks(units, batch_size), render_pass, steps=config.steps, on_step=on_step,
                         on_pass=on_pass)


def render_passes(
    passes: Sequence[Piece],
    render_pass: Callable[[Piece, StepCallback | None], list[UnitRender]],
    *,
    steps: int,
    on_step: StepCallback | None = None,
    on_pass: Callable[[list[UnitRender]], None] | None = None,
) -> list[UnitRender]:
    """Render pass after pass: progress over all of them, and each pass handed to ``on_pass`` when done.

    Args:
        passes: what each pass renders (e.g. its units).
        render_pass: renders one pass; takes the pass and its step callback (steps done, ``steps``).
        steps: optimiser steps per pass.
        on_step: called with (steps done, total) over all passes.
        on_pass: called with each pass's renders as soon as it finishes (to store them).

    Returns:
        The renders of every pass, in order.
    """
    total = len(passes) * steps
    renders: list[UnitRender] = []
    for number, piece in enumerate(passes):
        step_hook = None if on_step is None else (lambda done, _, n=number: on_step(n * steps + done, total))
        batch = render_pass(piece, step_hook)
        renders.extend(batch)
        if on_pass is not None:
            on_pass(batch)
    return renders


def render_diverse(
    model: LoadedModel,
    layer: str,
    unit: int | str,
    count: int,
    *,
    weight: float = 1.0,
    diversity_layer: str | None = None,
    config: RenderConfig = RenderConfig(),
    on_step: StepCallback | None = None,
) -> list[UnitRender]:
    """``count`` different images of one unit: its channel plus ``weight`` x Lucid's diversity.

    Args:
        weight: the diversity term's weight, relative to the channel's mean
            activation. Lucid averaged the channel over the batch, so its weight w is w * (count - 1)
            here (its 1e2: 100 * (count - 1)), on activations of another scale; the curve's channel
            part tells how much it cost.
        unit: one unit (an int, a NumPy / torch integer, ``"473"``).
        diversity_layer: where Gram matrices are compared (default: ``layer``).

    Returns:
        ``count`` :class:`UnitRender` s of kind ``diverse``, index 0..count-1.
    """
    require_loaded(model, "render_diverse")
    if count < 2:
        raise ValueError("a diverse render needs at least 2 images; use render_units for one")
    unit = parse_unit(unit, model.layer_shape(layer)[0])
    objective = channel(layer, unit) + weight * diversity(diversity_layer or layer)
    result = render(model, objective, batch=count, config=config, on_step=on_step, score=channel(layer, unit))
    return [UnitRender(layer, unit, "diverse", k, result.images[k], float(result.final[k]), result.curve[:, k],
                       str(objective)) for k in range(count)]
