"""Typographic attacks: a word on a label, stamped on images, against a zero-shot classifier.

The paper's automated attack (Goh et al. 2021, "Typographic attacks"): the
attack text rendered in one font at 8 fixed positions on each image; an
attack succeeds when the top-1 class becomes the attack's target, and the
images already of that class are not counted; the share of pixels the text
covers is reported beside the success rate. The paper counted by ImageNet's
labels; without labels, an image the model already names as the target is
the one not counted here.

The label is black text on a white box across the image's own pixels, at the
model's input size (after its resize and crop), so the cover is a share of
what the model sees. The 8 positions are the corners and edge midpoints of
the room around the label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from neuronscope.models.loaded import LoadedModel
from neuronscope.probing.raster import resolve_font
from neuronscope.probing.zeroshot import ZeroShotClassifier
from neuronscope.world.render import fit_font

#: (x, y) in [0, 1] of the room around the label: the four corners, then the edge midpoints.
EIGHT_POSITIONS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.0), (0.0, 0.5), (1.0, 0.5), (0.5, 1.0))


@dataclass(frozen=True)
class AttackSettings:
    """How the attack text is drawn.

    Attributes:
        font: a font file, ``family_dir/file.ttf`` under the system fonts or a path (one font, as the paper).
        height: the label's height as a share of the image's (the text fills 3/4 of it, narrower if long).
        positions: (x, y) in [0, 1] where the label sits in the room around it; the paper used 8.
    """

    font: str = "dejavu/DejaVuSans-Bold.ttf"
    height: float = 0.15
    positions: tuple[tuple[float, float], ...] = EIGHT_POSITIONS

    def __post_init__(self) -> None:
        if not 0 < self.height <= 1:
            raise ValueError(f"height is a share of the image's height in (0, 1], not {self.height}")
        if not self.positions or not all(0 <= x <= 1 and 0 <= y <= 1 for x, y in self.positions):
            raise ValueError(f"positions are (x, y) pairs in [0, 1], got {self.positions}")


def stamp_label(image: Image.Image, text: str, font_file: str, height: float,
                position: tuple[float, float]) -> tuple[Image.Image, float]:
    """``image`` with ``text`` in black on a white label; returns it and the share of pixels the label covers."""
    width_px, height_px = image.size
    label_h = max(8, round(height * height_px))
    pad = max(1, label_h // 8)
    font = fit_font(text, font_file, width_px - 2 * pad, label_h * 0.75)
    left, top, right, bottom = font.getbbox(text)
    label_w = min(width_px, right - left + 2 * pad)
    x = round((width_px - label_w) * position[0])
    y = round((height_px - label_h) * position[1])
    stamped = image.convert("RGB")  # a copy: the caller's image is left as it was
    draw = ImageDraw.Draw(stamped)
    draw.rectangle((x, y, x + label_w - 1, y + label_h - 1), fill=(255, 255, 255))
    text_x = x + (label_w - (right - left)) // 2 - left
    text_y = y + (label_h - (bottom - top)) // 2 - top
    draw.text((text_x, text_y), text, font=font, fill=(0, 0, 0))
    return stamped, label_w * label_h / (width_px * height_px)


@dataclass
class AttackResult:
    """One attack over a set of images.

    Attributes:
        text, target: what was written, and the class that counts as a success.
        images: the images' names; ``clean`` their top-1 classes without the text; ``attacked`` [N][P] the
            top-1 with the text at each of the P positions.
        positions: the label positions, in the order of ``attacked``'s columns.
        pixel_cover: the mean share of pixels the label covered (0-1).
    """

    model: str
    text: str
    target: str
    template: str
    images: list[str]
    clean: list[str]
    attacked: list[list[str]]
    positions: list[tuple[float, float]]
    pixel_cover: float

    @property
    def counted(self) -> list[int]:
        """The images an attack can succeed on: those the model does not already name the target."""
        return [i for i, top in enumerate(self.clean) if top != self.target]

    def success_by_position(self) -> list[float | None]:
        """Per position, the share of counted images whose top-1 became the target (None: nothing counted)."""
        counted = self.counted
        if not counted:
            return [None] * len(self.positions)
        return [sum(self.attacked[i][p] == self.target for i in counted) / len(counted)
                for p in range(len(self.positions))]

    @property
    def success(self) -> float | None:
        """The share of (counted image, position) pairs whose top-1 became the target: the paper's number."""
        shares = self.success_by_position()
        return None if shares[0] is None else float(np.mean(shares))

    def to_json(self) -> dict:
        return {"model": self.model, "text": self.text, "target": self.target, "template": self.template,
                "images": len(self.images), "counted": len(self.counted),
                "success": self.success, "pixel_cover": self.pixel_cover,
                "by_position": [{"position": list(position), "success": share}
                                for position, share in zip(self.positions, self.success_by_position())],
                "per_image": [{"image": name, "clean": clean, "attacked": row}
                              for name, clean, row in zip(self.images, self.clean, self.attacked)]}

    def __repr__(self) -> str:
        success = "n/a" if self.success is None else f"{self.success:.1%}"
        return (f"AttackResult({self.text!r} -> {self.target!r} on {self.model}: success {success} over "
                f"{len(self.counted)} of {len(self.images)} images, pixel cover {self.pixel_cover:.1%})")


def typographic_attack(model: LoadedModel, images: Sequence[Image.Image], classifier: ZeroShotClassifier,
                       text: str, *, target: str | None = None, names: Sequence[str] | None = None,
                       settings: AttackSettings = AttackSettings(), batch_size: int = 64) -> AttackResult:
    """Stamp ``text`` on every image at each of ``settings.positions`` and classify clean and attacked.

    Args:
        images: RGB images of any size (each resized as the model's preprocessing says, then stamped).
        classifier: the classes and prompt (:meth:`ZeroShotClassifier.build`); ``target`` must be one of
            them (default: ``text`` itself, as "iPod" attacks towards the class iPod).
        names: the images' names in the result (default: their positions).

    Raises:
        ValueError: no images, an empty text, or a target that is not a class.
    """
    target = text if target is None else target
    if not text.strip():
        raise ValueError("the attack text is empty: give the word to write, e.g. \"iPod\"")
    if target not in classifier.classes:
        raise ValueError(f"the target {target!r} is not one of the classes: add it to the classes, or pass "
                         f"a target that is one (e.g. {classifier.classes[0]!r})")
    if not images:
        raise ValueError("no images to attack")
    font_file = resolve_font(settings.font)
    names = list(names) if names is not None else [str(i) for i in range(len(images))]
    clean: list[str] = []
    attacked: list[list[str]] = []
    covers: list[float] = []
    for start in range(0, len(images), batch_size):
        resized = [model.preprocess.resize(image) for image in images[start:start + batch_size]]
        stamped: list[Image.Image] = []
        for image in resized:
            for position in settings.positions:
                label, cover = stamp_label(image, text, font_file, settings.height, position)
                stamped.append(label)
                covers.append(cover)
        clean += _top1(classifier, resized)
        tops = _top1(classifier, stamped)
        per = len(settings.positions)
        attacked += [tops[i:i + per] for i in range(0, len(tops), per)]
    return AttackResult(model.key, text, target, classifier.template, names, clean, attacked,
                        list(settings.positions), float(np.mean(covers)))


def _top1(classifier: ZeroShotClassifier, images: list[Image.Image]) -> list[str]:
    pixels = torch.from_numpy(np.stack([np.asarray(image, dtype=np.float32) / 255 for image in images]))
    predicted = classifier.predict(pixels.permute(0, 3, 1, 2))
    return [classifier.classes[int(i)] for i in predicted]


__all__ = ["AttackResult", "AttackSettings", "EIGHT_POSITIONS", "stamp_label", "typographic_attack"]
