"""Random transforms applied to the image before every forward (transformation robustness).

Each is an ``nn.Module`` on images [B, C, H, W]; each takes the device and
dtype from its input, and draws its random numbers on the CPU, each image
from its own generator (seeded by the render), so a seed means the same
sequence on every device and an image's transforms do not depend on which
images share its batch (Lucid drew one jitter offset for the whole batch).
Lucid's standard stack at 224 px is pad 12 -> jitter 8 -> scale 0.9..1.1 ->
rotate -10..10 deg -> jitter 4; :func:`standard_transforms` scales the pixel
amounts down for images smaller than 224 px (a 64 px mini CLIP does not want
12 px of padding), keeps Lucid's pixels from 224 px up (RN50x4's 288 px, as
the paper rendered it), and runs it all, with the crop to the model's input,
as one resample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _affine_grid(cos: Tensor, sin: Tensor, before: Tensor, after: Tensor, canvas: tuple[int, int],
                 jitter: tuple[int, int], out: tuple[int, int], image: tuple[int, int], **options) -> Tensor:
    """The sampling grid [B, H2, W2, 2] of crop -> rotate-and-scale -> crop, per image, over ``image``'s pixels.

    The map works on a ``canvas`` (the image with its grey padding, never materialised) cropped by
    ``jitter[0]``; ``before`` / ``after`` [B, 2] (y, x) are the offsets of the crops before and after the
    linear map [[cos, -sin], [sin, cos]] (about the first crop's centre, in its normalised coordinates, as
    ``F.affine_grid`` has it), and ``after`` also places the ``out`` window in what the second crop leaves.
    The crops only move where the map samples, so they are translations of the grid: one resample, no
    per-image slicing. Built as one broadcast sum of a row term [B, 1, W2, 2] and a column term
    [B, H2, 1, 2] (affine_grid's batched matmul with an inner size of 3 costs more on a CPU than the
    resample's forward).
    """
    height, width = canvas
    h1, w1 = height - jitter[0], width - jitter[0]  # the canvas the map works on
    h2, w2 = out
    cos, sin = cos.to(**options), sin.to(**options)
    before, after = before.to(**options), after.to(**options)
    # Output pixel centres in the first crop's normalised coordinates, shifted by the second crop: [B, W2], [B, H2].
    xs = ((torch.arange(w2, **options) + after[:, 1:]) * 2 + 1) / w1 - 1
    ys = ((torch.arange(h2, **options) + after[:, :1]) * 2 + 1) / h1 - 1
    # From the first crop's normalised coordinates to the canvas's (scale by its share of the canvas, shift
    # by its offset), then to the image's: the canvas is the image grown by its padding about the same
    # centre, so its normalised coordinates are the image's scaled by canvas / image.
    share = torch.tensor([w1 / width, h1 / height], **options)
    shift = share - 1 + 2 * before.flip(1) / torch.tensor([width, height], **options)  # [B, 2] as (x, y)
    to_image = torch.tensor([width / image[1], height / image[0]], **options)
    shift, share = shift * to_image, share * to_image
    along_x = xs[:, None, :, None] * (torch.stack((cos, sin), dim=-1) * share)[:, None, None, :]  # [B, 1, W2, 2]
    along_y = ys[:, :, None, None] * (torch.stack((-sin, cos), dim=-1) * share)[:, None, None, :]  # [B, H2, 1, 2]
    return (along_x + shift[:, None, None, :]) + along_y


def _window_offset(natural: int, wanted: int) -> int:
    """Where a window of ``wanted`` pixels starts in ``natural`` ones: :class:`CropOrPad`'s centring
    (a crop starts at half the excess rounded down; a grey pad puts half the shortfall, rounded down, first)."""
    return (natural - wanted) // 2 if natural >= wanted else -((wanted - natural) // 2)


class RandomTransform(nn.Module):
    """Base: holds the generators random draws come from, one per image (None: torch's global one)."""

    generators: Sequence[torch.Generator] | None = None

    def _picks(self, batch: int, *groups: Sequence[Sequence[float]]) -> list[list[float]]:
        """For each of ``batch`` images, one value of each option of each group, drawn from that image's
        generator: one uniform draw of a group's size per group, so an image's sequence depends only on its
        own generator (and a group draws what a transform of its own would).
        """
        generators = self.generators if self.generators is not None else [None] * batch
        if len(generators) != batch:
            raise ValueError(f"{len(generators)} generators for {batch} images: give one per image")
        picks = []
        for generator in generators:
            values = []
            for options in groups:
                uniform = torch.rand(len(options), generator=generator, dtype=torch.float64).tolist()
                values += [choices[int(u * len(choices))] for u, choices in zip(uniform, options)]
            picks.append(values)
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
                            for image, (dy, dx) in zip(images, self._picks(images.shape[0], (offsets, offsets)))])

    def extra_repr(self) -> str:
        return f"pixels={self.pixels}"


class RandomAffine(RandomTransform):
    """Scale and rotate each image in one resample (a scale from ``scales``, an angle in degrees from ``angles``),
    with a grey border ``pad`` pixels wide, random crops ``jitter = (before, after)`` pixels smaller on each
    side of the map and a centred window of ``size`` pixels all folded in.

    Lucid padded, cropped, resized, rotated and cropped again: two resamples and three copies. One affine
    grid does it all: the scale and angle, the two jitters as translations of where it samples (each image
    its own offsets, without slicing images one by one), the padding as where it samples outside the image
    (grey: the resample reads ``image - fill`` with zeros outside, and adds ``fill`` back), and the window as
    which output pixels it computes. It keeps the canvas size through the map (a zoom-out fills with grey,
    a zoom-in crops). The result is that of Pad -> Jitter -> scale-and-rotate -> Jitter -> CropOrPad(size)
    to float rounding where the padding is at least the first jitter (the standard stack); a crop that
    would cut into the image itself samples the image there instead of grey.

    Args:
        size: (H, W) of the output (default: the padded image less both jitters; a larger window extends
            the map's view rather than framing it in grey as CropOrPad would).
    """

    def __init__(self, scales: Sequence[float], angles: Sequence[float], fill: float = 0.5,
                 jitter: tuple[int, int] = (0, 0), pad: int = 0, size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.scales, self.angles, self.fill = tuple(scales), tuple(angles), fill
        self.jitter, self.pad = tuple(jitter), pad
        self.size = tuple(size) if size is not None else None

    def forward(self, images: Tensor) -> Tensor:
        before_jitter, after_jitter = self.jitter
        # The draws of the transforms this folds, in their order (a crop of 0 pixels draws nothing).
        groups = [[range(before_jitter + 1)] * 2] if before_jitter else []
        groups.append([self.scales, self.angles])
        groups += [[range(after_jitter + 1)] * 2] if after_jitter else []
        picks = torch.tensor(self._picks(images.shape[0], *groups), dtype=torch.float64)  # [B, 2 per group]
        none = torch.zeros(images.shape[0], 2, dtype=torch.float64)
        before = picks[:, :2] if before_jitter else none  # (y, x)
        scale, degrees = picks[:, 2:4].T if before_jitter else picks[:, :2].T
        after = picks[:, -2:] if after_jitter else none
        radians = degrees * (math.pi / 180)
        cos, sin = radians.cos() / scale, radians.sin() / scale  # output -> input coordinates: shrink to zoom in
        image = tuple(images.shape[2:])
        canvas = tuple(side + 2 * self.pad for side in image)
        natural = tuple(side - before_jitter - after_jitter for side in canvas)
        out = self.size or natural
        after = after + torch.tensor([_window_offset(n, o) for n, o in zip(natural, out)], dtype=torch.float64)
        grid = _affine_grid(cos, sin, before, after, canvas, self.jitter, out, image,
                            device=images.device, dtype=images.dtype)
        return F.grid_sample(images - self.fill, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False) + self.fill

    def extra_repr(self) -> str:
        return (f"scales={min(self.scales):g}..{max(self.scales):g}, "
                f"angles={min(self.angles):g}..{max(self.angles):g} deg, jitter={self.jitter}, pad={self.pad}"
                + (f", size={self.size}" if self.size else ""))


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
                        scales: Sequence[float] | None = None, angles: Sequence[float] | None = None,
                        out: tuple[int, int] | None = None) -> Transforms:
    """Lucid's standard transforms; below 224 px their pixel amounts are scaled down with the image's side.

    pad 12, jitter 8, scales 0.9..1.1 in steps of 0.02 with angles -10..10 deg (0 five more
    times), jitter 4 at 224 px and above (Lucid's pixels: the paper rendered RN50x4 at 288 px with them);
    pad 3, jitter 2 and jitter 1 at 64 px. The padding, the jitters and the
    scale and angle are one :class:`RandomAffine` (one resample). A given ``jitter`` sets the first jitter,
    and half of it (rounded down) the second: 0 turns both off. ``out``: the (H, W) window of the result
    (centred, as :class:`CropOrPad` would cut it; default: the padded image less both jitters).
    """
    side = size if isinstance(size, int) else max(size)
    ratio = min(1.0, side / 224)  # a small image's pixels are a larger share of it; a large one keeps Lucid's

    def scaled(pixels: int) -> int:
        return max(1, round(pixels * ratio))

    jitters = (scaled(8), scaled(4)) if jitter is None else (jitter, jitter // 2)
    return Transforms(
        RandomAffine(scales if scales is not None else [1 + (i - 5) / 50 for i in range(11)],
                     angles if angles is not None else [*range(-10, 11), *[0] * 5], jitter=jitters,
                     pad=scaled(12) if pad is None else pad, size=out),
    )
