"""The preprocessing contract a set of weights was trained with.

The contract travels with the weights (input size, mean, std, interpolation,
resize mode): it is never guessed from a class name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

_PIL_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
RESIZE_MODES = ("shortest", "squash", "longest")


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    height, width = (int(s) for s in size)
    return (height, width)


def _fill(color: int | Sequence[int], rgb: bool = False) -> int | tuple[int, int, int]:
    """A fill colour as open_clip's configs write it (one value, or RGB); ``rgb`` gives PIL's triple."""
    if isinstance(color, int):
        return (color,) * 3 if rgb else color
    red, green, blue = (int(c) for c in color)
    return (red, green, blue)


#: A "shortest" resize larger than this many times the target (an aspect ratio beyond 16:1 at a square
#: target) resamples only the crop instead of the whole image.
MAX_RESIZED_AREA_RATIO = 16


def _cover_size(image_w: int, image_h: int, width: int, height: int) -> tuple[int, int]:
    """The size an image is resized to before a centre crop to ``width`` x ``height``.

    A square target is torchvision's ``Resize(size)`` (what open_clip's transform runs): the short side
    becomes ``size`` and the long side ``int(size * long / short)``, truncated. Otherwise the image is
    scaled to cover the target (open_clip's ``ResizeKeepRatio``, rounded).
    """
    if width == height:
        if image_w <= image_h:
            return width, int(width * image_h / image_w)
        return int(height * image_w / image_h), height
    scale = max(height / image_h, width / image_w)
    return max(width, round(image_w * scale)), max(height, round(image_h * scale))


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the model's input tensor.

    Attributes:
        image_size: (height, width) of the input, e.g. (288, 288) for RN50x4.
        mean, std: per-channel normalisation, applied to pixels in [0, 1].
        interpolation: ``bicubic``, ``bilinear``, ``nearest`` or ``lanczos``.
        resize_mode: ``shortest`` (resize the short side, centre crop; CLIP's
            default), ``squash`` (resize to the exact size) or ``longest``
            (resize the long side, pad with ``fill_color``).
        fill_color: the padding of ``longest``, one 0-255 value for every
            channel or an RGB triple; 0 (black), as open_clip pads.
    """

    image_size: tuple[int, int]
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int | tuple[int, int, int] = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", _pair(self.image_size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "fill_color", _fill(self.fill_color))
        if self.interpolation not in _PIL_FILTERS:
            raise ValueError(f"interpolation {self.interpolation!r}: use one of {', '.join(_PIL_FILTERS)}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {self.resize_mode!r}: use one of {', '.join(RESIZE_MODES)}")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "Preprocess":
        """Read neuronscope's keys (``image_size``) or open_clip's (``size``)."""
        size = cfg.get("image_size", cfg.get("size"))
        if size is None:
            raise ValueError(f"preprocessing config has no image_size: {dict(cfg)}")
        return cls(
            image_size=_pair(size),
            mean=tuple(cfg.get("mean", OPENAI_MEAN)),
            std=tuple(cfg.get("std", OPENAI_STD)),
            interpolation=cfg.get("interpolation", "bicubic"),
            resize_mode=cfg.get("resize_mode", "shortest"),
            fill_color=_fill(cfg.get("fill_color", 0)),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        if isinstance(self.fill_color, tuple):
            out["fill_color"] = list(self.fill_color)
        return out

    # ------------------------------------------------------------------ tensors

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` [B, 3, H, W] in [0, 1] -> normalised model input, same shape."""
        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(1, 3, 1, 1)
        return (pixels - mean) / std

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`: model input [B, 3, H, W] -> pixels in [0, 1]."""
        mean = torch.tensor(self.mean, dtype=inputs.dtype, device=inputs.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=inputs.dtype, device=inputs.device).view(1, 3, 1, 1)
        return inputs * std + mean

    # ------------------------------------------------------------------ PIL

    def resize(self, image: Image.Image) -> Image.Image:
        """Resize (and crop or pad) one RGB image to ``image_size`` by ``resize_mode``."""
        image = image.convert("RGB")
        height, width = self.image_size
        resample = _PIL_FILTERS[self.interpolation]
        if self.resize_mode == "squash":
            return image.resize((width, height), resample)
        if self.resize_mode == "shortest":
            # Scale so the image covers the target, then centre-crop (CLIP's default), with torchvision's
            # geometry as open_clip uses it: the long side truncated, the crop offset rounded.
            new_w, new_h = _cover_size(image.width, image.height, width, height)
            left, top = int(round((new_w - width) / 2.0)), int(round((new_h - height) / 2.0))
            if new_w * new_h <= MAX_RESIZED_AREA_RATIO * width * height:
                return image.resize((new_w, new_h), resample).crop((left, top, left + width, top + height))
            # An extreme aspect ratio: resample only the crop (``box``: its region of the source), since
            # resizing the whole of a 40000x1 image first made it 2.5M pixels wide at 64 px (1.5 GB). Same
            # sampling positions as the whole resize, up to PIL's fixed-point rounding (1/255).
            scale_x, scale_y = new_w / image.width, new_h / image.height
            box = (left / scale_x, top / scale_y, (left + width) / scale_x, (top + height) / scale_y)
            return image.resize((width, height), resample, box=box)
        # "longest": scale so the image fits inside, then pad with fill_color (black by default, as open_clip).
        scale = min(height / image.height, width / image.width)
        new_w = min(width, max(1, round(image.width * scale)))
        new_h = min(height, max(1, round(image.height * scale)))
        resized = image.resize((new_w, new_h), resample)
        canvas = Image.new("RGB", (width, height), _fill(self.fill_color, rgb=True))
        canvas.paste(resized, ((width - new_w) // 2, (height - new_h) // 2))
        return canvas

    def to_pixels(self, images: Image.Image | Iterable[Image.Image]) -> torch.Tensor:
        """PIL image(s) -> resized float32 batch [B, 3, H, W] in [0, 1], not yet normalised."""
        if isinstance(images, Image.Image):
            images = [images]
        arrays = [np.asarray(self.resize(image), dtype=np.float32) / 255.0 for image in images]
        if not arrays:
            raise ValueError("no images to preprocess")
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

    def __call__(self, images: Image.Image | Iterable[Image.Image]) -> torch.Tensor:
        """PIL image(s) -> normalised float32 batch [B, 3, H, W] (B = 1 for one image)."""
        return self.normalize(self.to_pixels(images))
