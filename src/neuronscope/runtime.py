"""Run-time choices shared by every model-running command: device, precision
and seed (the unit-list parser, :mod:`neuronscope.units`, is re-exported here).

Nothing here picks a device at import time; callers pass one (or "auto").
"""

from __future__ import annotations

import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from neuronscope.errors import DeviceError
from neuronscope.units import format_units, parse_units  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- memory


def available_memory() -> int | None:
    """Bytes of memory the system can still give without swapping (Linux's ``MemAvailable``), or None where
    that cannot be read (other systems): callers then check nothing."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


# --------------------------------------------------------------------------- device


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` into a device this machine has.

    ``auto`` (and ``None``) means the first CUDA GPU when there is one, else the CPU.
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} asked for, but this torch sees no CUDA GPU; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s) "
                f"(cuda:0-cuda:{torch.cuda.device_count() - 1})"
            )
    elif resolved.type not in ("cpu", "mps"):
        raise DeviceError(f"device {name!r} is not supported: use cpu, cuda or cuda:N")
    return resolved


# --------------------------------------------------------------------------- precision

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "bf16-weights")
Family = Literal["conv", "vit", "other"]


def bf16_support(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` runs bf16 natively, and the evidence, for the log."""
    if device.type == "cuda":
        # is_bf16_supported() also says yes where bf16 is only emulated (before Ampere),
        # and it reads the current device, not `device`: ask the device's capability.
        major, minor = torch.cuda.get_device_capability(device)
        ok = major >= 8
        name = torch.cuda.get_device_name(device)
        return ok, f"{name} (compute capability {major}.{minor}) {'runs' if ok else 'has no'} native bf16"
    if device.type == "cpu":
        # oneDNN's own check: AVX512-BF16 or AMX. Without it bf16 is emulated and
        # slower than fp32, so auto must not pick it.
        try:
            ok = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            ok = False
        return ok, f"oneDNN reports {'native' if ok else 'no native'} bf16 on this CPU"
    return False, f"bf16 is not measured on {device.type}"


@dataclass(frozen=True)
class Precision:
    """How a model runs: weights dtype, autocast dtype and memory format.

    ``fp32``, ``bf16`` and ``fp16`` keep fp32 weights and autocast the forward
    (``bf16``/``fp16``); ``bf16-weights`` stores the weights in bf16 and feeds
    bf16 inputs (no autocast), which is the faster choice for ViTs on CPUs with
    native bf16.
    """

    name: Literal["fp32", "bf16", "fp16", "bf16-weights"]
    requested: str
    reason: str
    channels_last: bool = False

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def weight_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == "bf16-weights" else torch.float32

    def prepare(self, module: nn.Module) -> nn.Module:
        """Cast ``module``'s weights and memory format in place; returns it."""
        module.to(dtype=self.weight_dtype)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def cast_input(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` [B, 3, H, W] in the dtype and memory format the weights expect."""
        pixels = pixels.to(dtype=self.weight_dtype)
        if self.channels_last and pixels.ndim == 4:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        return pixels

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context for a forward on ``device`` (a no-op without autocast)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)


def resolve_precision(requested: str, device: torch.device, family: Family = "other") -> Precision:
    """Resolve ``auto|fp32|bf16|fp16|bf16-weights`` for ``device`` and a model family.

    ``auto`` picks bf16 only where the device runs it natively, and logs why:
    on a GPU, bf16 autocast; on a CPU, bf16 autocast + channels_last for
    ResNets and bf16 weights for ViTs. Everywhere else, fp32. ResNets get
    channels_last in every precision: it is oneDNN's and cuDNN's fast layout
    for convolutions (RN50x4 in fp32 on a 2-core EPYC without bf16: 0.70-0.75
    against 0.81-0.96 s an image), and it changes no value beyond rounding.
    """
    requested = requested.strip().lower()
    if requested not in PRECISIONS:
        raise DeviceError(f"unknown precision {requested!r}: use one of {', '.join(PRECISIONS)}")
    conv_net = family == "conv"
    if requested == "auto":
        ok, why = bf16_support(device)
        if not ok:
            choice = Precision("fp32", requested, f"auto: fp32 because {why}", channels_last=conv_net)
        elif device.type == "cpu" and family == "vit":
            choice = Precision("bf16-weights", requested, f"auto: bf16 weights because {why} (ViT)")
        else:
            choice = Precision("bf16", requested, f"auto: bf16 autocast because {why}", channels_last=conv_net)
        log.info("precision %s", choice.reason)
        return choice
    if requested in ("bf16", "bf16-weights"):
        ok, why = bf16_support(device)
        note = "" if ok else f" (forced although {why}; expect it to be slow)"
        return Precision(requested, requested, f"{requested} as asked{note}", channels_last=conv_net)  # type: ignore[arg-type]
    if requested == "fp16":
        return Precision("fp16", requested, "fp16 autocast as asked", channels_last=conv_net)
    return Precision("fp32", requested, "fp32 as asked", channels_last=conv_net)


# --------------------------------------------------------------------------- seed


def loader_generator(seed: int = 0) -> torch.Generator:
    """A DataLoader's own generator. Without one, every iteration of a DataLoader draws its workers' base
    seed from the global torch RNG (with ``num_workers=0`` too), so a scan or a word probe would move the
    caller's random stream; nothing neuronscope's loaders decode is random, so any fixed seed serves."""
    return torch.Generator().manual_seed(seed)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy (if present) and torch on every device."""
    random.seed(seed)
    torch.manual_seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed % 2**32)
