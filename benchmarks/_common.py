"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch
from torch import Tensor

from neuronscope.activations import Recorder
from neuronscope.models import LoadedModel


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall clock read after it times the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_rate(model: LoadedModel, layers: str | list[str], images: int, batch_size: int, *, stop: bool = True,
                 capture_fn: Callable[[Tensor], Tensor] | None = None) -> float:
    """Images/s of no-grad forwards on ready tensors (no decoding), ``images / batch_size`` batches (at least one).

    Args:
        layers: the layer(s) recorded when ``stop``.
        stop: stop at ``layers`` (a Recorder with early stop, as the scan runs); otherwise the whole image tower.
        capture_fn: reduces each recorded activation inside the hook (e.g. the spatial mean words probing takes).

    One untimed forward at the timed batch first: the first forward of a shape pays one-off set-up (oneDNN
    kernels, cuDNN autotuning) that a rate must not include. The device is synchronised around the timed loop.
    """
    height, width = model.preprocess.image_size
    pixels = model.preprocess.normalize(torch.rand(batch_size, 3, height, width)).to(model.device)
    batches = max(1, round(images / batch_size))
    # Hooks attached once for the whole loop, as the scan and the words probe keep them.
    recorder = Recorder(model, layers, early_stop=True, capture_fn=capture_fn) if stop else None
    with torch.no_grad(), recorder or contextlib.nullcontext():
        forward = (lambda: recorder.run(pixels)) if recorder else (lambda: model.encode_images(pixels))
        forward()  # warm-up, at the timed batch
        synchronize(model.device)
        start = time.perf_counter()
        for _ in range(batches):
            forward()
        synchronize(model.device)
    return batches * batch_size / (time.perf_counter() - start)
