"""Redirected ReLU gradients (Lucid), so a unit that starts dead can still take off.

A ReLU passes no gradient where its input is negative. Early in a render
that can be everywhere on the path to a unit, and the image never moves.
For the first steps Lucid swaps each ReLU's gradient: where the normal
gradient is all zero for an image, let the gradient through wherever it
would push the input *up* (never further down).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


class _RedirectedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(inputs)
        return inputs.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (inputs,) = ctx.saved_tensors
        negative = inputs < 0
        relu_grad = grad.masked_fill(negative, 0)
        # grad is d(loss)/d(out) with loss = -objective: grad > 0 pushes the input down.
        redirected = grad.masked_fill(negative & (grad > 0), 0)
        alive = relu_grad.flatten(1).abs().amax(dim=1) > 0  # [B]: the normal gradient reaches this image
        shape = (-1,) + (1,) * (grad.ndim - 1)
        return torch.where(alive.view(shape), relu_grad, redirected)


def redirected_relu(inputs: Tensor) -> Tensor:
    """``relu(inputs)`` with the redirected gradient (never in place)."""
    return _RedirectedReLU.apply(inputs)


@contextlib.contextmanager
def redirect_relus(module: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, every ``nn.ReLU`` below ``module`` uses :func:`redirected_relu`.

    Yields how many modules were switched. Each module's ``forward`` is
    shadowed by an instance attribute and restored in ``finally``, so nothing
    outlives the block (hooks on the modules keep working meanwhile).
    """
    switched: list[nn.Module] = []
    try:
        if enabled:
            for submodule in module.modules():
                if isinstance(submodule, nn.ReLU) and "forward" not in vars(submodule):
                    submodule.forward = redirected_relu  # type: ignore[method-assign]
                    switched.append(submodule)
        yield len(switched)
    finally:
        for submodule in switched:
            del submodule.forward
