"""Reading, decoding and resizing images in worker processes.

A torch ``DataLoader`` over a source's entries: each worker reads an entry's
bytes, hashes them (the id's content part), decodes through
:mod:`neuronscope.imagefiles` (bad files become a skip reason, never an
exception) and resizes to the model's input by its preprocessing contract.
Pixels travel between processes as uint8 ``[3, H, W]`` (4x less than float);
normalisation happens on the model's device.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from neuronscope.imagefiles import PILLOW_MAX_PIXELS, SkippedFile, decode_image_bytes
from neuronscope.mining.sources import Entry, ShortRead, content_sha256, image_id, list_inputs
from neuronscope.models.preprocess import Preprocess
from neuronscope.runtime import loader_generator


@dataclass
class DecodedImage:
    """One entry after the worker: pixels or the reason it was skipped."""

    ordinal: int
    name: str
    sha256: str | None = None
    size: tuple[int, int] | None = None  # (width, height) of the file, after EXIF rotation
    pixels: torch.Tensor | None = None  # [3, H, W] uint8 at the model's input size
    skip_reason: str | None = None

    @property
    def id(self) -> str:
        assert self.sha256 is not None, "a skipped entry has no id"
        return image_id(self.name, self.sha256)


@dataclass
class Batch:
    """What the loader yields: decoded images (in ordinal order) and the entries skipped."""

    ordinals: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the entries' names (paths relative to the source)
    ids: list[str] = field(default_factory=list)
    sha256s: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    pixels: torch.Tensor | None = None  # [B, 3, H, W] uint8
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (ordinal, name, reason)

    @property
    def last_ordinal(self) -> int:
        return max([*self.ordinals, *(ordinal for ordinal, _, _ in self.skipped)], default=-1)


def read_and_decode(entry: Entry, max_pixels: int = PILLOW_MAX_PIXELS) -> tuple[bytes, Image.Image] | SkippedFile:
    """An entry's bytes and RGB image, or the :class:`SkippedFile` saying why not (never raises for a bad
    file: a missing one is ``missing``, a tar member cut short ``truncated``, a directory or a file that cannot
    be read ``unreadable``)."""
    try:
        data = entry.read()
    except FileNotFoundError:
        return SkippedFile("missing", entry.name)
    except ShortRead:  # a tar member its shard holds only the start of
        return SkippedFile("truncated", entry.name, "the shard ends inside it")
    except OSError as error:  # a directory, no permission, an I/O error
        return SkippedFile("unreadable", entry.name, type(error).__name__)
    try:
        return data, decode_image_bytes(data, entry.name, max_pixels)
    except SkippedFile as skipped:
        return skipped


def iter_decoded(inputs: Sequence[str | os.PathLike], max_pixels: int = PILLOW_MAX_PIXELS
                 ) -> Iterator[tuple[str, Image.Image | SkippedFile]]:
    """``(name, RGB image or SkippedFile)`` for image files, folders, tar shards or path lists, decoded here.

    For small jobs that need no worker processes (``zeroshot``); names as
    :func:`~neuronscope.mining.sources.list_inputs` gives them. Bad files are
    counted by the scan's reasons, never raised.
    """
    return decode_entries(list_inputs(inputs), max_pixels)


def decode_entries(entries: Iterable[Entry], max_pixels: int = PILLOW_MAX_PIXELS
                   ) -> Iterator[tuple[str, Image.Image | SkippedFile]]:
    """:func:`iter_decoded` of entries already listed (a caller that also counts them lists once)."""
    for entry in entries:
        outcome = read_and_decode(entry, max_pixels)
        yield entry.name, outcome if isinstance(outcome, SkippedFile) else outcome[1]


def decode_entry(entry: Entry, ordinal: int, preprocess: Preprocess, max_pixels: int) -> DecodedImage:
    """Read, hash, decode and resize one entry (runs in a worker)."""
    outcome = read_and_decode(entry, max_pixels)
    if isinstance(outcome, SkippedFile):
        return DecodedImage(ordinal, entry.name, skip_reason=outcome.reason)
    data, image = outcome
    size = image.size
    pixels = np.asarray(preprocess.resize(image), dtype=np.uint8)  # [H, W, 3]
    return DecodedImage(ordinal, entry.name, content_sha256(data), size,
                        torch.from_numpy(pixels.copy()).permute(2, 0, 1))


class EntryDataset(Dataset):
    """Consecutive entries of a source, the first at ordinal ``first``, decoded on access (indexable, so
    workers keep order): the rest of a listing from where a scan resumes, or a Ray shard's entries."""

    def __init__(self, entries: Sequence[Entry], preprocess: Preprocess, *, first: int = 0,
                 max_pixels: int = PILLOW_MAX_PIXELS) -> None:
        self.entries = entries
        self.preprocess = preprocess
        self.first = first
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> DecodedImage:
        return decode_entry(self.entries[index], self.first + index, self.preprocess, self.max_pixels)


def collate(items: list[DecodedImage]) -> Batch:
    """Stack the decoded images of a batch; keep the skipped ones aside."""
    batch = Batch()
    tensors = []
    for item in items:
        if item.skip_reason is not None:
            batch.skipped.append((item.ordinal, item.name, item.skip_reason))
            continue
        batch.ordinals.append(item.ordinal)
        batch.names.append(item.name)
        batch.ids.append(item.id)
        batch.sha256s.append(item.sha256)  # type: ignore[arg-type]
        batch.sizes.append(item.size)  # type: ignore[arg-type]
        tensors.append(item.pixels)
    if tensors:
        batch.pixels = torch.stack(tensors)
    return batch


def iter_batches(entries: Sequence[Entry], preprocess: Preprocess, *, batch_size: int, workers: int,
                 first: int = 0, max_pixels: int = PILLOW_MAX_PIXELS) -> Iterator[Batch]:
    """Batches of consecutive ``entries`` (the first at ordinal ``first``) in order, decoded by ``workers``
    processes (0: in this one). ``entries`` are the ones to decode, already sliced: ``first`` only numbers
    them (it used to skip the first ``first`` of a full listing).

    Each batch covers ``batch_size`` consecutive entries, so a skipped file makes
    its batch smaller rather than shifting the rest.
    """
    dataset = EntryDataset(entries, preprocess, first=first, max_pixels=max_pixels)
    if len(dataset) <= 0:
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                        prefetch_factor=4 if workers else None, persistent_workers=False,
                        generator=loader_generator())
    yield from loader
