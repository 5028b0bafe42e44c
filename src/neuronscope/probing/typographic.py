"""Typographic attacks: a word on a label, stamped on images, against a zero-shot classifier.

The paper's automated attack (Goh et al. 2021, "Typographic attacks"): the
attack text rendered in one font at 8 fixed positions on each image; an
attack succeeds when the top-1 class becomes the attack's target, and the
images already of that class are not counted; the share of pixels the text
covers is reported beside the success rate. The paper counted by ImageNet's
labels; without labels, an image the model already names as the target is
the one not counted here. Its top-1 was a linear probe's on RN50x4's
features; here it is the zero-shot classifier's.

The label is black text on a white box across the image's own pixels, at the
model's input size (after its resize and crop), so the cover is a share of
what the model sees. The 8 positions are the corners and edge midpoints of
the room around the label.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from neuronscope.models.loaded import LoadedModel, require_loaded, runs_in_eval
from neuronscope.probing.raster import resolve_font
from neuronscope.probing.zeroshot import ZeroShotClassifier, encode_pixels
from neuronscope.world.render import fit_font

#: (x, y) in [0, 1] of the room around the label: the four corners, then the edge midpoints.
EIGHT_POSITIONS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.0), (0.0, 0.5), (1.0, 0.5), (0.5, 1.0))


@dataclass(frozen=True)
class AttackSettings:
    """How the attack text is drawn.

    Attributes:
        font: a font file, ``family_dir/file.ttf`` under the system fonts or a path (one font, as the paper).
        height: the label's height as a share of the image's (the text fills 3/4 of it, narrower if long).
        min_pixels: the label is never shorter than this. 15% of a 224-288 px input (34-43 px) is about the
            paper's label; 15% of the mini CLIP's 64 px is 10 px, text too small for it to read at all, so
            small inputs get 20 px (31% at 64 px, about its world's own attack labels).
        positions: (x, y) in [0, 1] where the label sits in the room around it; the paper used 8.
    """

    font: str = "dejavu/DejaVuSans-Bold.ttf"
    height: float = 0.15
    min_pixels: int = 20
    positions: tuple[tuple[float, float], ...] = EIGHT_POSITIONS

    def __post_init__(self) -> None:
        if not 0 < self.height <= 1:
            raise ValueError(f"height is a share of the image's height in (0, 1], not {self.height}")
        if self.min_pixels < 0:
            raise ValueError(f"min_pixels is a label height in pixels (0: no floor), not {self.min_pixels}")
        if not self.positions or not all(0 <= x <= 1 and 0 <= y <= 1 for x, y in self.positions):
            raise ValueError(f"positions are (x, y) pairs in [0, 1], got {self.positions}")


def stamp_label(image: Image.Image, text: str, font_file: str, height: float,
                position: tuple[float, float], *, min_pixels: int = 8) -> tuple[Image.Image, float]:
    """``image`` with ``text`` in black on a white label ``height`` of the image's height (at least
    ``min_pixels``, at most the image); returns it and the share of pixels the label covers."""
    width_px, height_px = image.size
    label_h = min(height_px, max(min_pixels, round(height * height_px), 1))
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


@runs_in_eval
def typographic_attack(model: LoadedModel, images: Iterable[Image.Image], classifier: ZeroShotClassifier,
                       text: str, *, target: str | None = None, settings: AttackSettings = AttackSettings(),
                       batch_size: int = 64, on_batch: Callable[[int], None] | None = None) -> AttackResult:
    """Stamp ``text`` on every image at each of ``settings.positions`` and classify clean and attacked.

    Images stream through: each is resized as the model's preprocessing says, stamped, classified and
    dropped, a chunk at a time, so a folder of any size fits in memory.

    Args:
        images: RGB images of any size (a list, or a generator reading them).
        classifier: the classes and prompt (:meth:`ZeroShotClassifier.build`); ``target`` must be one of
            them (default: ``text`` itself, as "iPod" attacks towards the class iPod).
        batch_size: images per forward (clean and stamped alike).
        on_batch: called with the number of images done after each chunk.

    Returns:
        :class:`AttackResult`, its images named by their position in ``images`` (replace ``images`` with
        their names: ``dataclasses.replace(result, images=names)``).

    Raises:
        ValueError: no images, an empty text, or a target that is not a class.
    """
    require_loaded(model, "typographic_attack")
    target = text if target is None else target
    if not text.strip():
        raise ValueError("the attack text is empty: give the word to write, e.g. \"iPod\"")
    if target not in classifier.classes:
        raise ValueError(f"the target {target!r} is not one of the classes: add it to the classes, or pass "
                         f"a target that is one (e.g. {classifier.classes[0]!r})")
    font_file = resolve_font(settings.font)
    per_image = len(settings.positions)
    clean: list[str] = []
    attacked: list[list[str]] = []
    covers: list[float] = []
    # A chunk's stamped images make about one forward: memory stays at a batch of the model's input.
    for piece in _chunks(images, max(1, batch_size // per_image)):
        resized = [model.preprocess.resize(image) for image in piece]
        stamped = []
        for image in resized:
            for position in settings.positions:
                label, cover = stamp_label(image, text, font_file, settings.height, position,
                                           min_pixels=settings.min_pixels)
                stamped.append(label)
                covers.append(cover)
        clean += _top1(classifier, resized, batch_size)
        tops = _top1(classifier, stamped, batch_size)
        attacked += [tops[i:i + per_image] for i in range(0, len(tops), per_image)]
        if on_batch is not None:
            on_batch(len(clean))
    if not clean:
        raise ValueError("no images to attack")
    return AttackResult(model.key, text, target, classifier.template, [str(i) for i in range(len(clean))], clean,
                        attacked, list(settings.positions), float(np.mean(covers)))


def _chunks(items: Iterable[Image.Image], size: int) -> Iterator[list[Image.Image]]:
    iterator = iter(items)
    while piece := list(itertools.islice(iterator, size)):
        yield piece


def _top1(classifier: ZeroShotClassifier, images: list[Image.Image], batch_size: int) -> list[str]:
    """The top-1 class of each image (already at the model's input size), ``batch_size`` images a forward."""
    pixels = classifier.model.preprocess.to_pixels(images)  # [N, 3, H, W]; no resize at the input size
    probabilities = classifier.probabilities_of(encode_pixels(classifier.model, pixels, batch_size))
    return [classifier.classes[int(i)] for i in probabilities.argmax(dim=-1)]


__all__ = ["AttackResult", "AttackSettings", "EIGHT_POSITIONS", "stamp_label", "typographic_attack"]
