"""Opening image files safely: one set of reasons for every file we skip.

Scans and the world builder both read collections where some files are
broken. They never crash on one: :func:`open_image` returns either a decoded
RGB(A) image or the reason it was skipped, from one shared vocabulary.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Why a file was skipped. Shared by scans and the world builder.
SKIP_REASONS = ("zero_byte", "truncated", "not_image", "too_many_pixels", "unreadable", "missing", "duplicate")

#: Pillow's own decompression-bomb limit; scans default to it.
PILLOW_MAX_PIXELS = 89_478_485


class SkippedFile(Exception):
    """A file that cannot be used, with one of :data:`SKIP_REASONS`."""

    def __init__(self, reason: str, path: str | os.PathLike, detail: str = ""):
        assert reason in SKIP_REASONS, reason
        self.reason = reason
        self.path = str(path)
        super().__init__(f"{path}: {reason}{': ' + detail if detail else ''}")


#: Example paths :class:`SkipCounts` keeps per reason: enough to find and fix the bad files, bounded however many.
SKIP_EXAMPLES = 5


@dataclass
class SkipCounts:
    """Counts of skipped files by reason, plus a few example paths per reason (the first ones counted)."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, skipped: SkippedFile) -> None:
        self.count(skipped.reason, skipped.path)

    def count(self, reason: str, path: str) -> None:
        """One more file skipped for ``reason``; ``path`` is kept while the reason has few examples."""
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < SKIP_EXAMPLES:
            examples.append(path)

    def merge(self, other: SkipCounts) -> None:
        """Fold in another part's counts; each reason keeps the first examples by path, whatever the order the
        parts come in (a scan's parts list their files sorted by path, so these are the ones it counted first)."""
        self.counts.update(other.counts)
        for reason, paths in other.examples.items():
            self.examples[reason] = sorted({*self.examples.get(reason, []), *paths})[:SKIP_EXAMPLES]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return {reason: int(self.counts.get(reason, 0)) for reason in SKIP_REASONS}

    def files(self) -> dict[str, str]:
        """``{path: reason}`` of the example files, by reason (in :data:`SKIP_REASONS` order), then path: the
        ``skipped_files`` of a JSON report, as ``attack``'s."""
        return {path: reason for reason in SKIP_REASONS for path in self.examples.get(reason, [])}

    def lines(self) -> list[str]:
        """``skipped PATH: reason`` for every example, and ``... and N more REASON`` where there are more: what a
        command prints on stderr, so that bad files can be found and fixed."""
        lines = []
        for reason in SKIP_REASONS:
            examples = self.examples.get(reason, [])
            lines += [f"skipped {path}: {reason}" for path in examples]
            if self.counts.get(reason, 0) > len(examples):
                lines.append(f"... and {self.counts[reason] - len(examples)} more {reason}")
        return lines


class NotRegularFile(OSError):
    """A path that is no regular file: a FIFO, device node or socket named like an image, or a directory."""


def open_regular_file(path: str | os.PathLike) -> BinaryIO:
    """Open a regular file for reading, or raise :class:`NotRegularFile` (an ``OSError``) without blocking.

    A plain ``open`` of a FIFO waits for a writer forever, and a device node may never end: one such file
    with an image name in a collection would hang a scan with no word of which file. Opened non-blocking,
    its type is checked on the open descriptor (no race with a rename); the flag changes nothing for the
    regular file that is then read.
    """
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotRegularFile(f"{path}: not a regular file (a pipe, device, socket or folder)")
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks: image ids and the weights' provenance both use it."""
    digest = hashlib.sha256()
    with open_regular_file(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _own_pixel_limit():
    """Switch off Pillow's decompression-bomb check: we apply our own limit from the header."""
    previous_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def open_image(path: str | os.PathLike, max_pixels: int = PILLOW_MAX_PIXELS, keep_alpha: bool = False) -> Image.Image:
    """Decode an image file fully, or raise :class:`SkippedFile` with the reason.

    The pixel count is read from the header *before* decoding, so a
    decompression bomb costs nothing. EXIF rotation is honoured; animated
    images give their first frame; every mode is converted to RGB (or RGBA
    when ``keep_alpha``; palette transparency becomes alpha).
    """
    path = Path(path)
    if not path.exists():
        raise SkippedFile("missing", path)
    if not path.is_file():  # a FIFO would block the decoder; a device node or socket has no image either
        raise SkippedFile("unreadable", path, "not a regular file")
    if path.stat().st_size == 0:
        raise SkippedFile("zero_byte", path)
    return _decode(path, path, max_pixels, keep_alpha)


def decode_image_bytes(data: bytes, name: str, max_pixels: int = PILLOW_MAX_PIXELS,
                       keep_alpha: bool = False) -> Image.Image:
    """:func:`open_image` for bytes already read (a tar member, a file read once to hash it).

    ``name`` is only used in the :class:`SkippedFile` raised for bad data.
    """
    if not data:
        raise SkippedFile("zero_byte", name)
    return _decode(io.BytesIO(data), name, max_pixels, keep_alpha)


def _decode(stream: Path | io.BytesIO, name: str | os.PathLike, max_pixels: int, keep_alpha: bool) -> Image.Image:
    """Header check, full decode and mode conversion shared by files and bytes."""
    try:
        with _own_pixel_limit():
            image = Image.open(stream)
    except UnidentifiedImageError:
        raise SkippedFile("not_image", name) from None
    except OSError as error:
        raise SkippedFile("unreadable", name, str(error)) from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise SkippedFile("too_many_pixels", name, f"{width}x{height} > {max_pixels} pixels")
        try:
            with _own_pixel_limit():
                image.seek(0)
                image.load()
        except OSError as error:
            reason = "truncated" if "truncated" in str(error) or "broken data stream" in str(error) else "unreadable"
            raise SkippedFile(reason, name, str(error)) from None
        except (SyntaxError, ValueError) as error:
            raise SkippedFile("unreadable", name, str(error)) from None
        image = ImageOps.exif_transpose(image)
        has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
        if keep_alpha and has_alpha:
            return image.convert("RGBA")
        if has_alpha and image.mode == "P":
            # Through RGBA: Pillow warns when a palette with transparency goes straight to RGB
            # (the colours are the same either way; the alpha is dropped).
            image = image.convert("RGBA")
        if image.mode == "I;16" or image.mode.startswith("I"):
            # 16-bit greyscale: scale to 8 bits rather than clip.
            image = image.point(lambda value: value / 256).convert("L")
        elif image.mode == "F":
            image = _float_to_grey(image, name)
        return image.convert("RGBA" if keep_alpha else "RGB")


def _float_to_grey(image: Image.Image, name: str | os.PathLike) -> Image.Image:
    """A float greyscale image (mode F, values in [0, 1] by convention) as 8-bit ``L``.

    Pillow's own conversion clips the values to 0..255, so a [0, 1] image would come out black. Values
    outside [0, 1] (or not finite) follow no convention we could scale by: the file is skipped.
    """
    values = np.asarray(image, dtype=np.float32)  # [H, W]
    if not np.isfinite(values).all() or values.min(initial=0.0) < 0.0 or values.max(initial=0.0) > 1.0:
        raise SkippedFile("unreadable", name, "float pixels outside [0, 1]")
    return Image.fromarray(np.rint(values * 255.0).astype(np.uint8), mode="L")


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")

