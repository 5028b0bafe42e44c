"""Image parameterizations: *what is optimized* (an ``nn.Parameter``) and *how it becomes an image*.

Lucid's recipe, rewritten for torch:

- :class:`FFTImage`: the image's spectrum, scaled by ``1 / frequency ** decay_power``
  so that low frequencies move first (decay power 1, init sd 0.01);
- :class:`PixelImage`: the pixels themselves (init sd 0.01);
- both pass through a decorrelated colour space (ImageNet's colour-correlation
  square root, normalised by its largest column norm) and a sigmoid to [0, 1];
- optional alpha: a fourth channel, its own sigmoid.

A parameterization may live at a lower resolution than the image
(:class:`Upsampled`, Lucid's ``lowres_tensor``): it cannot hold detail finer
than its own pixels, so a small model's renders become shapes instead of
saturated high-frequency texture.

A parameterization is an ``nn.Module`` whose ``forward()`` returns images
[B, C, H, W] in [0, 1] (C = 3, or 4 with alpha). Its tensors live on the
device given at construction; nothing is chosen at import time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ImageNet colour correlation, square root (Lucid's ``color_correlation_svd_sqrt``).
COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]])


def decorrelated_to_rgb(channels: Tensor) -> Tensor:
    """Decorrelated colour [B, 3, H, W] -> RGB logits [B, 3, H, W] (before the sigmoid)."""
    matrix = COLOR_CORRELATION_SQRT / COLOR_CORRELATION_SQRT.norm(dim=0).max()
    # [3, 3] @ [B, 3, H*W], broadcast over the batch: forward + backward ~6x cheaper on a CPU than the
    # same product as a 1x1 convolution (whose oneDNN set-up dominates at 3 channels).
    return torch.matmul(matrix.to(channels.device, channels.dtype), channels.flatten(2)).view_as(channels)


Generators = torch.Generator | Sequence[torch.Generator] | None


def normal_init(batch: int, shape: tuple[int, ...], generator: Generators, *, batch_dim: int = 0) -> Tensor:
    """Standard normal init with ``batch`` images along ``batch_dim`` of ``shape`` (which holds a 1 there).

    ``generator``: one CPU generator for the whole batch, or one per image (image ``i`` drawn from
    ``generator[i]`` alone, so an image's start does not depend on what shares its batch), or None
    (torch's global generator). Drawn on the CPU, so a seed gives the same start on every device.
    """
    if generator is None or isinstance(generator, torch.Generator):
        full = list(shape)
        full[batch_dim] = batch
        return torch.randn(full, generator=generator)
    if len(generator) != batch:
        raise ValueError(f"{len(generator)} generators for {batch} images: give one per image")
    return torch.cat([torch.randn(shape, generator=g) for g in generator], dim=batch_dim)


def fft_frequencies(height: int, width: int) -> Tensor:
    """Radial frequency of each rfft2 coefficient: [H, W // 2 + 1]."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return (fy ** 2 + fx ** 2).sqrt()


class ImageParam(nn.Module):
    """Base: turns its raw tensor [B, C, H, W] into an image in [0, 1] (colour, sigmoid, alpha)."""

    def __init__(self, batch: int, size: tuple[int, int], *, decorrelate: bool, alpha: bool) -> None:
        super().__init__()
        self.batch, self.size = batch, size
        self.decorrelate, self.alpha = decorrelate, alpha
        self.channels = 4 if alpha else 3

    def raw(self) -> Tensor:
        """The unconstrained image [B, C, H, W] (subclasses)."""
        raise NotImplementedError

    def forward(self) -> Tensor:
        """Images [B, C, H, W] in [0, 1]."""
        raw = self.raw()
        colour = raw[:, :3]
        if self.decorrelate:
            colour = decorrelated_to_rgb(colour)
        if self.alpha:
            return torch.cat([colour, raw[:, 3:]], dim=1).sigmoid()
        return colour.sigmoid()


class FFTImage(ImageParam):
    """Lucid's Fourier parameterization: ``irfft2(spectrum / max(f, 1/size) ** decay_power)``.

    Args:
        batch: images.
        size: (height, width).
        sd: init standard deviation of the spectrum (Lucid: 0.01).
        decay_power: 1 (Lucid): a 1/f spectrum, the statistics of natural images.
        generator: seeded CPU generator(s), one for the batch or one per image (:func:`normal_init`).
    """

    def __init__(self, batch: int, size: tuple[int, int], *, sd: float = 0.01, decay_power: float = 1.0,
                 decorrelate: bool = True, alpha: bool = False, device: torch.device | str = "cpu",
                 generator: Generators = None) -> None:
        super().__init__(batch, size, decorrelate=decorrelate, alpha=alpha)
        height, width = size
        frequencies = fft_frequencies(height, width)
        # Lucid scales the spectrum by sqrt(H*W) before TensorFlow's irfft2d, which divides by H*W: together
        # an orthonormal inverse (a unitary map, so learning rates mean what they mean for pixels), which is
        # what norm="ortho" computes without the factor. The / 4 is Lucid's constant (it keeps the initial
        # image near grey after the sigmoid), folded in here.
        scale = 1.0 / frequencies.clamp(min=1.0 / max(height, width)) ** decay_power / 4
        self.register_buffer("scale", scale.to(device))
        init = normal_init(batch, (2, 1, self.channels, *frequencies.shape), generator, batch_dim=1) * sd
        # Stored [B, C, H, W//2+1, 2 (re, im)] so that view_as_complex reads it without a copy; drawn as
        # [2 (re, im), ...] per image, the order the seeded starts have always been drawn in.
        self.spectrum = nn.Parameter(init.movedim(0, -1).contiguous().to(device))

    def raw(self) -> Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        return torch.fft.irfft2(spectrum, s=self.size, norm="ortho")


class PixelImage(ImageParam):
    """Pixels as the parameter (init sd 0.01); the baseline Lucid compares FFT against."""

    def __init__(self, batch: int, size: tuple[int, int], *, sd: float = 0.01, decorrelate: bool = True,
                 alpha: bool = False, device: torch.device | str = "cpu",
                 generator: Generators = None) -> None:
        super().__init__(batch, size, decorrelate=decorrelate, alpha=alpha)
        init = normal_init(batch, (1, self.channels, *size), generator) * sd
        self.pixels = nn.Parameter(init.to(device))

    def raw(self) -> Tensor:
        return self.pixels


class Upsampled(nn.Module):
    """A parameterization at a lower resolution, its images [B, C, h, w] resized (bilinear) to ``size``."""

    def __init__(self, inner: ImageParam, size: tuple[int, int]) -> None:
        super().__init__()
        self.inner, self.size = inner, tuple(size)

    def forward(self) -> Tensor:
        """Images [B, C, H, W] in [0, 1]."""
        return F.interpolate(self.inner(), size=self.size, mode="bilinear", align_corners=False)


PARAMETERIZATIONS = {"fft": FFTImage, "pixel": PixelImage}


def make_param(kind: str, batch: int, size: tuple[int, int], *, param_size: int | None = None,
               **options) -> nn.Module:
    """``fft`` or ``pixel`` parameterization of ``batch`` images of ``size`` (H, W).

    ``param_size``: the longest side the parameterization lives at (the other side in proportion), upsampled
    to ``size``; None: ``size`` itself.
    """
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {kind!r}: use {' or '.join(PARAMETERIZATIONS)}")
    if param_size is None or param_size == max(size):
        return PARAMETERIZATIONS[kind](batch, size, **options)
    if not 4 <= param_size < max(size):
        raise ValueError(f"param_size {param_size} must be at least 4 and below the image's side {max(size)} "
                         f"(a parameterization is only ever upsampled)")
    low = tuple(max(1, round(side * param_size / max(size))) for side in size)
    return Upsampled(PARAMETERIZATIONS[kind](batch, low, **options), size)
