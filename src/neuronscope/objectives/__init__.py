"""Objectives: what a feature visualization maximizes.

    from neuronscope.objectives import channel, diversity, l2
    obj = 0.5 * channel("neurons", 7) - channel("neurons", 9)
    obj = channel("neurons", [3, 5, 8])          # image i maximizes unit [3, 5, 8][i]
    obj = channel("neurons", 7) + 1e-2 * diversity("neurons") - 0.05 * l2()

Objectives are maximized, compose with ``+ - * /`` (numbers and objectives),
unary minus and ``sum``, carry a readable description, and declare the
layers they need, so a render hooks only those and stops the forward there.
"""

from neuronscope.objectives.base import Context, Objective
from neuronscope.objectives.library import (
    alignment,
    as_objective,
    channel,
    direction,
    diversity,
    l1,
    l2,
    neuron,
    text_direction,
    total_variation,
)

__all__ = [
    "Context", "Objective",
    "alignment", "as_objective", "channel", "direction", "diversity", "l1", "l2", "neuron", "text_direction",
    "total_variation",
]
