"""Random transforms applied to the image before every forward (transformation robustness).

Each is an ``nn.Module`` on images [B, C, H, W]; each takes the device and
dtype from its input, and draws its random numbers on the CPU, each image
from its own generator (seeded by the render), so a seed means the same
sequence on every device and an image's transforms do not depend on which
images share its batch (Lucid drew one jitter offset for the whole batch).
Lucid's standard stack at 224 px is pad 12 -> jitter 8 -> scale 0.9..1.1 ->
rotate -10..10 deg -> jitter 4; :func:`standard_transforms` scales the pixel
amounts with the image size (a 64 px mini CLIP does not want 12 px of
padding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _rotation_grid(cos: Tensor, sin: Tensor, images: Tensor) -> Tensor:
    """``F.affine_grid`` of the linear maps [[cos, -sin], [sin, cos]] (per image [B]) for ``images``: [B, H, W, 2].

    One broadcast sum of a row term [B, 1, W, 2] and a column term [B, H, 1, 2]: affine_grid's batched
    matmul with an inner size of 3, or stacking two [B, H, W] maps, costs more on a CPU than the resample's
    forward.
    """
    height, width = images.shape[2:]
    ys = (torch.arange(height, device=images.device, dtype=images.dtype) * 2 + 1) / height - 1  # pixel centres
    xs = (torch.arange(width, device=images.device, dtype=images.dtype) * 2 + 1) / width - 1
    cos = cos.to(images.device, images.dtype)
    sin = sin.to(images.device, images.dtype)
    along_x = xs[None, None, :, None] * torch.stack((cos, sin), dim=-1)[:, None, None, :]  # [B, 1, W, 2]
    along_y = ys[None, :, None, None] * torch.stack((-sin, cos), dim=-1)[:, None, None, :]  # [B, H, 1, 2]
    return along_x + along_y


class RandomTransform(nn.Module):
    """Base: holds the generators random draws come from, one per image (None: torch's global one)."""

    generators: Sequence[torch.Generator] | None = None

    def _picks(self, batch: int, *options: Sequence[float]) -> list[list[float]]:
        """For each of ``batch`` images, one value of each of ``options``, drawn from that image's generator.

        One uniform draw per option per image: an image's sequence depends only on its own generator.
        """
        generators = self.generators if self.generators is not None else [None] * batch
        if len(generators) != batch:
            raise ValueError(f"{len(generators)} generators for {batch} images: give one per image")
        picks = []
        for generator in generators:
            uniform = torch.rand(len(options), generator=generator, dtype=torch.float64).tolist()
            picks.append([values[int(u * len(values))] for u, values in zip(uniform, options)])
        return picks


class Pad(nn.Module):
    """Pad every side by ``pixels`` with a constant (Lucid: grey 0.5), so jitter can move content out."""

    def __init__(self, pixels: int, value: float = 0.5) -> None:
        super().__init__()
        self.pixels, self.value = pixels, value

    def forward(self, images: Tensor) -> Tensor:
        return F.pad(images, [self.pixels] * 4, mode="constant", value=self.value) if self.pixels else images

    def extra_repr(self) -> str:
        return f"pixels={self.pixels}, value={self.value}"


class Jitter(RandomTransform):
    """A random crop ``pixels`` smaller in each dimension (an offset per image; 0 pixels: no crop)."""

    def __init__(self, pixels: int) -> None:
        super().__init__()
        self.pixels = pixels

    def forward(self, images: Tensor) -> Tensor:
        if not self.pixels:
            return images
        offsets = range(self.pixels + 1)
        height, width = images.shape[2] - self.pixels, images.shape[3] - self.pixels
        return torch.stack([image[:, dy:dy + height, dx:dx + width]
                            for image, (dy, dx) in zip(images, self._picks(images.shape[0], offsets, offsets))])

    def extra_repr(self) -> str:
        return f"pixels={self.pixels}"


class RandomAffine(RandomTransform):
    """Scale and rotate each image in one resample (a scale from ``scales``, an angle in degrees from ``angles``).

    Lucid resized, then rotated: two resamples. One affine grid does both at a
    third of the cost of the pair's backward, and keeps the canvas size (a
    zoom-out fills with grey, a zoom-in crops): the standard stack uses this.
    """

    def __init__(self, scales: Sequence[float], angles: Sequence[float], fill: float = 0.5) -> None:
        super().__init__()
        self.scales, self.angles, self.fill = tuple(scales), tuple(angles), fill

    def forward(self, images: Tensor) -> Tensor:
        scale, degrees = torch.tensor(self._picks(images.shape[0], self.scales, self.angles), dtype=torch.float64).T
        radians = degrees * (math.pi / 180)
        cos, sin = radians.cos() / scale, radians.sin() / scale  # output -> input coordinates: shrink to zoom in
        grid = _rotation_grid(cos, sin, images)
        return F.grid_sample(images - self.fill, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False) + self.fill

    def extra_repr(self) -> str:
        return (f"scales={min(self.scales):g}..{max(self.scales):g}, "
                f"angles={min(self.angles):g}..{max(self.angles):g} deg")


class CropOrPad(nn.Module):
    """Centre-crop or grey-pad to ``size`` (H, W): how a render meets the model's input size, never by resizing."""

    def __init__(self, size: tuple[int, int], value: float = 0.5) -> None:
        super().__init__()
        self.size, self.value = tuple(size), value

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[2:]
        want_h, want_w = self.size
        if (height, width) == (want_h, want_w):
            return images
        pad_h, pad_w = max(0, want_h - height), max(0, want_w - width)
        if pad_h or pad_w:
            images = F.pad(images, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2],
                           mode="constant", value=self.value)
        top, left = (images.shape[2] - want_h) // 2, (images.shape[3] - want_w) // 2
        return images[:, :, top:top + want_h, left:left + want_w]

    def extra_repr(self) -> str:
        return f"size={self.size}"


class Transforms(nn.Sequential):
    """A stack of transforms that draw from the same per-image generators (see :meth:`use_generators`)."""

    def use_generators(self, generators: Sequence[torch.Generator] | None) -> "Transforms":
        """Draw image ``i``'s random numbers from ``generators[i]`` (None: torch's global generator)."""
        for module in self.modules():
            if isinstance(module, RandomTransform):
                module.generators = generators
        return self


def standard_transforms(size: int | tuple[int, int], *, pad: int | None = None, jitter: int | None = None,
                        scales: Sequence[float] | None = None, angles: Sequence[float] | None = None) -> Transforms:
    """Lucid's standard transforms, their pixel amounts scaled to the image's side (224 px = Lucid's).

    pad 12, jitter 8, scales 0.9..1.1 in steps of 0.02 with angles -10..10 deg (0 five more
    times) in one :class:`RandomAffine`, jitter 4 at 224 px; pad 3, jitter 2 and jitter 1 at 64 px.
    A given ``jitter`` sets the first jitter, and half of it (rounded down) the second: 0 turns both off.
    """
    side = size if isinstance(size, int) else max(size)
    ratio = side / 224

    def scaled(pixels: int) -> int:
        return max(1, round(pixels * ratio))

    return Transforms(
        Pad(scaled(12) if pad is None else pad),
        Jitter(scaled(8) if jitter is None else jitter),
        RandomAffine(scales if scales is not None else [1 + (i - 5) / 50 for i in range(11)],
                     angles if angles is not None else [*range(-10, 11), *[0] * 5]),
        Jitter(scaled(4) if jitter is None else jitter // 2),
    )
