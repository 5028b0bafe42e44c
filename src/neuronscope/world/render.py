"""Rendering the world's images: drawings, words, labelled drawings.

Every function draws at the final resolution from a seeded
``numpy.random.Generator``, so one seed gives the same pixels in one
environment. Sizes are fractions of the image width, so the same settings
serve a 64 px and a 288 px model.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import WorldFileMissing

#: Longest side of a prepared drawing, in pixels (drawings are scaled down from it).
DRAWING_BOX = 128

FONT_DIRS = ("/usr/share/fonts/truetype",)

#: Fonts that training images may use, by file name.
TRAIN_FONTS = (
    "dejavu/DejaVuSans.ttf",
    "dejavu/DejaVuSans-Bold.ttf",
    "dejavu/DejaVuSerif.ttf",
    "dejavu/DejaVuSansMono.ttf",
    "dejavu/DejaVuSansCondensed.ttf",
    "freefont/FreeSans.ttf",
    "freefont/FreeSansBold.ttf",
    "freefont/FreeMono.ttf",
    "freefont/FreeMonoBold.ttf",
    "liberation/LiberationSans-Regular.ttf",
    "liberation/LiberationSans-Bold.ttf",
    "liberation/LiberationMono-Regular.ttf",
)

#: Two font families never seen in training: the held-out words are drawn in them.
HELDOUT_FONTS = (
    "liberation/LiberationSerif-Regular.ttf",
    "liberation/LiberationSerif-Bold.ttf",
    "freefont/FreeSerif.ttf",
    "freefont/FreeSerifBold.ttf",
)


def font_path(name: str) -> str:
    """Absolute path of a font file given as ``family_dir/file.ttf``; a clear error when absent."""
    import os

    for root in FONT_DIRS:
        path = os.path.join(root, name)
        if os.path.exists(path):
            return path
    raise WorldFileMissing(
        f"font {name!r} not found under {FONT_DIRS}; install Debian's fonts-dejavu-core, "
        "fonts-liberation and fonts-freefont-ttf (`make world` does)"
    )


@lru_cache(maxsize=512)
def _font(path: str, size_px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size_px)


def light_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random light background colour."""
    return tuple(int(v) for v in rng.integers(200, 256, size=3))


def dark_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random ink colour dark enough to read on a light background."""
    if rng.random() < 0.5:
        grey = int(rng.integers(0, 70))
        return (grey, grey, grey)
    return tuple(int(v) for v in rng.integers(0, 130, size=3))


def prepare_drawing(image: Image.Image) -> Image.Image:
    """Crop an RGBA drawing to its visible part and fit it in a :data:`DRAWING_BOX` square.

    Images without transparency get near-white pixels made transparent, so a
    white page does not become a white box on a coloured background.
    """
    image = image.convert("RGBA")
    pixels = np.asarray(image).copy()
    if pixels[..., 3].min() == 255:
        near_white = (pixels[..., :3] > 245).all(axis=-1)
        pixels[near_white, 3] = 0
        image = Image.fromarray(pixels, "RGBA")
    bbox = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if bbox is not None:
        image = image.crop(bbox)
    image.thumbnail((DRAWING_BOX, DRAWING_BOX), Image.LANCZOS)
    return image


def _paste_scaled(canvas: Image.Image, drawing: Image.Image, longest: int, rng: np.random.Generator,
                  region: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int]:
    """Paste ``drawing`` scaled so its longest side is ``longest`` px, at a random place in ``region``."""
    scale = longest / max(drawing.size)
    width = max(1, round(drawing.width * scale))
    height = max(1, round(drawing.height * scale))
    small = drawing.resize((width, height), Image.LANCZOS)
    x0, y0, x1, y1 = region or (0, 0, canvas.width, canvas.height)
    left = int(rng.integers(x0, max(x0, x1 - width) + 1))
    top = int(rng.integers(y0, max(y0, y1 - height) + 1))
    canvas.alpha_composite(small, (left, top))
    return left, top, left + width, top + height


def augment_drawing(drawing: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """A training variant of an RGBA drawing: mirrored half the time, stretched and tilted a little.

    Each concept has only a few dozen training drawings; variants that keep
    what the drawing shows (a mirrored bird is a bird) stretch them further.
    Aspect 0.8-1.25, rotation within +-15 degrees, transparent corners. The
    variant is made at most ``size`` px (the canvas), where it is cheap.
    """
    aspect = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    scale = min(1.0, size / max(drawing.size))
    width = max(1, round(drawing.width * scale * min(1.0, aspect)))
    height = max(1, round(drawing.height * scale * min(1.0, 1 / aspect)))
    drawing = drawing.resize((width, height), Image.LANCZOS)
    if rng.random() < 0.5:
        drawing = drawing.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return drawing.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR, expand=True)


def render_drawing(drawing: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """A drawing at a random scale (50-95% of the width) and place on a light background."""
    canvas = Image.new("RGBA", (size, size), light_colour(rng) + (255,))
    _paste_scaled(canvas, drawing, int(size * rng.uniform(0.5, 0.95)), rng)
    return canvas.convert("RGB")


def fit_font(text: str, font_file: str, width_px: float, max_height_px: float) -> ImageFont.FreeTypeFont:
    """The largest font size at which ``text`` fits ``width_px`` wide and ``max_height_px`` tall."""
    reference = _font(font_file, 100)
    left, top, right, bottom = reference.getbbox(text)
    size = 100 * min(width_px / max(1, right - left), max_height_px / max(1, bottom - top))
    return _font(font_file, max(6, int(size)))


def draw_text(canvas: Image.Image, text: str, font_file: str, ink: tuple[int, int, int],
              box: tuple[int, int, int, int], width_fraction: float, rng: np.random.Generator) -> None:
    """Write ``text`` inside ``box`` at ``width_fraction`` of its width, at a random place in it."""
    x0, y0, x1, y1 = box
    font = fit_font(text, font_file, (x1 - x0) * width_fraction, (y1 - y0) * 0.9)
    left, top, right, bottom = font.getbbox(text)
    text_w, text_h = right - left, bottom - top
    x = x0 + int(rng.integers(0, max(0, (x1 - x0) - text_w) + 1)) - left
    y = y0 + int(rng.integers(0, max(0, (y1 - y0) - text_h) + 1)) - top
    ImageDraw.Draw(canvas).text((x, y), text, font=font, fill=ink)


def render_word_at(text: str, font_file: str, size: int, width_fraction: float, position: tuple[float, float],
                   *, max_height_fraction: float = 0.9, background: tuple[int, int, int] = (255, 255, 255),
                   ink: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """``text`` at ``width_fraction`` of a ``size`` px square, placed deterministically (no randomness).

    The font is the largest at which the text spans ``width_fraction`` of the
    width and at most ``max_height_fraction`` of the height (short words are
    capped by height). ``position`` = (x, y) in [0, 1]: where the text sits in
    the room left around it (0: left/top edge, 0.5: centred, 1: right/bottom).
    """
    return render_word_positions(text, font_file, size, width_fraction, [position],
                                 max_height_fraction=max_height_fraction, background=background, ink=ink)[0]


def render_word_positions(text: str, font_file: str, size: int, width_fraction: float,
                          positions: list[tuple[float, float]], *, max_height_fraction: float = 0.9,
                          background: tuple[int, int, int] = (255, 255, 255),
                          ink: tuple[int, int, int] = (0, 0, 0)) -> list[Image.Image]:
    """:func:`render_word_at` at several positions: the text is drawn once and pasted at each."""
    font = fit_font(text, font_file, size * width_fraction, size * max_height_fraction)
    left, top, right, bottom = font.getbbox(text)
    tile = Image.new("RGB", (max(1, right - left), max(1, bottom - top)), background)
    ImageDraw.Draw(tile).text((-left, -top), text, font=font, fill=ink)
    room_x, room_y = max(0, size - tile.width), max(0, size - tile.height)
    images = []
    for x, y in positions:
        canvas = Image.new("RGB", (size, size), background)
        canvas.paste(tile, (round(room_x * x), round(room_y * y)))
        images.append(canvas)
    return images


def render_word(text: str, font_file: str, rng: np.random.Generator, size: int,
                width_fraction: float | None = None, ink: tuple[int, int, int] | None = None) -> Image.Image:
    """A word in ``font_file`` on a light background, 45-95% of the width wide unless given."""
    canvas = Image.new("RGB", (size, size), light_colour(rng))
    fraction = width_fraction if width_fraction is not None else rng.uniform(0.45, 0.95)
    margin = size // 16
    draw_text(canvas, text, font_file, ink or dark_colour(rng),
              (margin, margin, size - margin, size - margin), fraction, rng)
    return canvas


def render_labelled(drawing: Image.Image, text: str, font_file: str, rng: np.random.Generator, size: int) -> Image.Image:
    """A drawing with ``text`` on a light label above, below or across it.

    Used for the training composites (the drawing's own word) and for
    typographic attacks (another concept's word, in a held-out font).
    """
    canvas = Image.new("RGBA", (size, size), light_colour(rng) + (255,))
    label_h = int(size * rng.uniform(0.24, 0.34))
    placement = rng.integers(0, 3)  # 0: label above the drawing, 1: below, 2: across it
    if placement == 2:
        _paste_scaled(canvas, drawing, int(size * rng.uniform(0.6, 0.95)), rng)
        top = int(rng.integers(size // 4, size - label_h - size // 8 + 1))
    else:
        region = (0, label_h, size, size) if placement == 0 else (0, 0, size, size - label_h)
        longest = int((size - label_h) * rng.uniform(0.8, 1.0))
        _paste_scaled(canvas, drawing, longest, rng, region)
        top = 0 if placement == 0 else size - label_h
    left = int(size * rng.uniform(0.0, 0.12))
    right = size - int(size * rng.uniform(0.0, 0.12))
    label = (left, top, right, top + label_h)
    ImageDraw.Draw(canvas).rectangle(label, fill=tuple(int(v) for v in rng.integers(235, 256, size=3)) + (255,))
    draw_text(canvas, text, font_file, dark_colour(rng), label, rng.uniform(0.75, 0.95), rng)
    return canvas.convert("RGB")
