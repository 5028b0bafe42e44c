"""Rastering words: each word as a few images (fonts x sizes x positions), rendered in workers.

Sizes are fractions of the input width (the text spans that share of the
width, its height capped at ``max_height`` of it), so the same settings
serve a 64 px and a 288 px model. Positions are (x, y) in [0, 1]: where the
text sits in the room left around it. Black text on white, like the paper's
rastered words; everything is deterministic (no random jitter).

Fonts are files on disk, found under ``/usr/share/fonts/truetype`` by
``family_dir/file.ttf`` (or given as a path). The default, DejaVu Sans
(Debian ``fonts-dejavu-core``), is under the Bitstream Vera Fonts licence
with DejaVu's changes in the public domain; Liberation fonts
(``fonts-liberation``) are under the SIL Open Font License 1.1, GNU
FreeFont (``fonts-freefont-ttf``) under the GPL v3 with the font exception.
Rendered images are not redistributed by neuronscope, only scores.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import NeuronscopeError
from ..world.render import FONT_DIRS, font_path, render_word_positions
from ..runtime import loader_generator

log = logging.getLogger(__name__)

DEFAULT_FONTS = ("dejavu/DejaVuSans.ttf",)
DEFAULT_SIZES = (0.5, 0.7, 0.9)
#: Top-left, centre, bottom-right of the room around the text.
DEFAULT_POSITIONS = ((0.1, 0.1), (0.5, 0.5), (0.9, 0.9))


@dataclass(frozen=True)
class RasterSettings:
    """How each word becomes images: ``len(fonts) * len(sizes) * len(positions)`` of them.

    Attributes:
        fonts: font files, ``family_dir/file.ttf`` under the system font folder or a path.
        sizes: text width as a fraction of the image width.
        positions: (x, y) in [0, 1], where the text sits in the room around it.
        max_height: the text's height is capped at this fraction of the image (short words).
    """

    fonts: tuple[str, ...] = DEFAULT_FONTS
    sizes: tuple[float, ...] = DEFAULT_SIZES
    positions: tuple[tuple[float, float], ...] = DEFAULT_POSITIONS
    max_height: float = 0.5

    def __post_init__(self) -> None:
        if not self.fonts or not self.sizes or not self.positions:
            raise ValueError("RasterSettings needs at least one font, one size and one position")
        if not all(0 < s <= 1 for s in self.sizes):
            raise ValueError(f"sizes are fractions of the image width in (0, 1], got {self.sizes}")
        if not all(0 <= x <= 1 and 0 <= y <= 1 for x, y in self.positions):
            raise ValueError(f"positions are (x, y) in [0, 1], got {self.positions}")

    @property
    def variants(self) -> int:
        """Images per word."""
        return len(self.fonts) * len(self.sizes) * len(self.positions)

    @property
    def grid(self) -> tuple[int, int, int]:
        """(fonts, sizes, positions): the shape a word's images reshape to."""
        return len(self.fonts), len(self.sizes), len(self.positions)

    def to_dict(self) -> dict:
        return {**asdict(self), "positions": [list(p) for p in self.positions]}


class FontMissingError(NeuronscopeError):
    """A raster font is neither a file nor installed under the system fonts."""


def resolve_font(name: str) -> str:
    """A font file's absolute path: a path as given, else ``family_dir/file.ttf`` under the system fonts."""
    if os.path.isfile(name):
        return name
    try:
        return font_path(name)
    except FileNotFoundError:
        raise FontMissingError(f"font {name!r} is not installed under {', '.join(FONT_DIRS)}: install Debian's "
                               "fonts-dejavu-core (`make venv` does, as root) or pass --fonts PATH.ttf") from None


def resolve_fonts(settings: RasterSettings) -> list[str]:
    """Every raster font's path: a command calls this before its model and its first stage, to fail fast."""
    return [resolve_font(name) for name in settings.fonts]


@functools.cache
def font_characters(font_file: str) -> frozenset[int] | None:
    """The code points ``font_file`` (its first face, as Pillow draws it) has a glyph for, from its cmap; None
    for a font fontTools cannot read (then nothing is known to be missing from it)."""
    from fontTools.ttLib import TTFont, TTLibError  # a dependency of matplotlib, so always installed

    try:
        with TTFont(font_file, fontNumber=0, lazy=True) as font:
            return frozenset(font.getBestCmap() or {})
    except (TTLibError, OSError, KeyError, ValueError) as error:
        log.debug("cannot read the cmap of %s (%s): its glyph coverage is not checked", font_file, error)
        return None


def undrawable_words(words: Sequence[str], font_files: Sequence[str]) -> dict[str, list[str]]:
    """``{word: [font files that lack a glyph of it]}`` for the words some font cannot draw, in vocabulary order.

    Pillow draws a character a font has no glyph for as the font's .notdef box, so such a word's images are
    boxes: every CJK word (or emoji) probed in a Latin font would score alike, as one "word". Whitespace is
    not checked (it draws nothing either way).
    """
    coverage = {font: font_characters(font) for font in font_files}
    missing: dict[str, list[str]] = {}
    for word in words:
        needed = {ord(char) for char in word if not char.isspace()}
        lacking = [font for font, known in coverage.items() if known is not None and not needed <= known]
        if lacking:
            missing[word] = lacking
    return missing


def render_word_images(word: str, settings: RasterSettings, size: int, font_files: Sequence[str]) -> np.ndarray:
    """Every variant of ``word``: uint8 [fonts * sizes * positions, size, size, 3], positions fastest."""
    images = [np.asarray(image) for font in font_files for fraction in settings.sizes
              for image in render_word_positions(word, font, size, fraction, list(settings.positions),
                                                 max_height_fraction=settings.max_height)]
    return np.stack(images)


class WordImages(Dataset):
    """A vocabulary as a dataset: item i is word i's images, uint8 [variants, 3, size, size]."""

    def __init__(self, words: Sequence[str], settings: RasterSettings, size: int) -> None:
        self.words = list(words)
        self.settings = settings
        self.size = size
        self.font_files = resolve_fonts(settings)  # fails here, not in a worker

    def __len__(self) -> int:
        return len(self.words)

    def __getitem__(self, index: int) -> torch.Tensor:
        images = render_word_images(self.words[index], self.settings, self.size, self.font_files)
        return torch.from_numpy(images).permute(0, 3, 1, 2)


def iter_word_batches(words: Sequence[str], settings: RasterSettings, size: int, *, words_per_batch: int,
                      workers: int) -> DataLoader:
    """Batches of consecutive words' images, uint8 [words, variants, 3, size, size], rendered by ``workers``
    processes (0: in this one). Order is the vocabulary's."""
    return DataLoader(WordImages(words, settings, size), batch_size=words_per_batch, shuffle=False,
                      num_workers=workers, prefetch_factor=4 if workers else None, persistent_workers=False,
                      generator=loader_generator())
