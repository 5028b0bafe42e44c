"""Drawing the top examples' thumbnails in worker processes (decode, resize, mark the cell, encode PNG).

The scanner asks for the (grid, cell)s of every image some unit keeps in its
top-k; workers return PNG bytes with deterministic names, and only the
atlas writes them to disk.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torch.utils.data import DataLoader, Dataset

from neuronscope.atlas.thumbnails import marked_thumbnail, thumbnail_name
from neuronscope.imagefiles import PILLOW_MAX_PIXELS
from neuronscope.mining.loader import decode_entry
from neuronscope.mining.sources import Entry
from neuronscope.models.preprocess import Preprocess
from neuronscope.runtime import loader_generator

Cell = tuple[int, int, int, int]  # grid rows, grid cols, row, col
#: The thumbnail phase's progress callback: ``(thumbnails done, thumbnails to draw)``. A scan's last phase
#: decodes the full-size originals again, minutes for a large model's top-k: without it the scan falls
#: silent right after its files reached ``ETA 0 s``.
ThumbnailProgressHook = Callable[[int, int], None]


@dataclass(frozen=True)
class ThumbnailJob:
    """One image and the cells to mark on it (one PNG per cell)."""

    entry: Entry
    ordinal: int
    sha256: str
    cells: tuple[Cell, ...]


class _Jobs(Dataset):
    def __init__(self, jobs: list[ThumbnailJob], preprocess: Preprocess, max_pixels: int) -> None:
        self.jobs, self.preprocess, self.max_pixels = jobs, preprocess, max_pixels

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> list[tuple[Cell, str, bytes]]:
        job = self.jobs[index]
        decoded = decode_entry(job.entry, job.ordinal, self.preprocess, self.max_pixels)
        if decoded.pixels is None or decoded.sha256 != job.sha256:
            return []  # gone or changed since the scan: no thumbnail rather than a wrong one
        pixels = decoded.pixels.permute(1, 2, 0).numpy()  # [H, W, 3] uint8
        drawn = []
        for cell in job.cells:
            buffer = io.BytesIO()
            marked_thumbnail(pixels, cell[2:], cell[:2]).save(buffer, format="PNG")
            drawn.append((cell, thumbnail_name(job.sha256, cell[:2], cell[2:], self.preprocess), buffer.getvalue()))
        return drawn


def render_thumbnails(jobs: list[ThumbnailJob], preprocess: Preprocess, *, workers: int = 0,
                      max_pixels: int = PILLOW_MAX_PIXELS,
                      on_drawn: ThumbnailProgressHook | None = None) -> Iterator[tuple[str, Cell, str, bytes]]:
    """Yield ``(sha256, cell, file name, PNG bytes)`` for every job's cells, drawn by ``workers`` processes.

    ``on_drawn`` hears ``(0, total)`` first (``(0, 0)``: nothing to draw) and then, after each image, the
    cells done so far, a gone or changed image's cells included, so the count always reaches its total.
    """
    total = sum(len(job.cells) for job in jobs)
    if on_drawn is not None:
        on_drawn(0, total)
    if not jobs:
        return
    loader = DataLoader(_Jobs(jobs, preprocess, max_pixels), batch_size=None, shuffle=False, num_workers=workers,
                        generator=loader_generator())
    done = 0
    for job, drawn in zip(jobs, loader):
        for cell, name, png in drawn:
            yield job.sha256, cell, name, png
        done += len(job.cells)
        if on_drawn is not None:
            on_drawn(done, total)
