"""Files of an atlas: writes a reader (or a crash) sees whole or not at all, and names that are safe as one URL
segment or one file name.

Every file beside the catalogue (histograms, thumbnails, renders, artifacts, checkpoints, exports) is written
through :func:`atomic_write`; every folder or file named after a model or layer goes through :func:`path_slug`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np


def url_name(name: str) -> str:
    """A model key or layer alias as one URL segment or folder name: ``/`` is written ``~``
    (``hf-hub:org/repo@hub`` -> ``hf-hub:org~repo@hub``, ``image_block_4/5/Add_6`` -> ``image_block_4~5~Add_6``).

    Servers decode ``%2F`` before routing (it would split the segment), and an exported folder would nest
    one level deeper than its links say. :func:`from_url_name` reads it back.
    """
    return name.replace("/", "~")


def from_url_name(name: str) -> str:
    """:func:`url_name` read back: ``~`` stands for ``/``."""
    return name.replace("~", "/")


def path_slug(name: str) -> str:
    """A model, layer, kind or artifact name usable as one file or folder name (``:`` is awkward on some systems)."""
    return url_name(name).replace(":", "~")


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) sees the old file or the new, never half.

    ``durable`` also fsyncs before the rename (checkpoints, arrays); files that can be
    redrawn (thumbnails) skip it: an fsync per thumbnail made them 4x slower than drawing.
    """
    atomic_write(path, lambda stream: stream.write(data), durable=durable)


def atomic_write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``arrays`` as an ``.npz`` file at ``path``, atomically and durably, written straight into the file: a
    checkpoint of gigabytes (a kept attribution basis) needs no second copy of itself in memory."""
    atomic_write(path, lambda stream: np.savez(stream, **arrays))


def atomic_write(path: Path, write: Callable[[BinaryIO], object], *, durable: bool = True) -> None:
    """:func:`atomic_write_bytes` of whatever ``write`` writes to the open file it is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = _create_temporary(path)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new, empty file beside ``path`` (open for writing): its descriptor and name.

    Not :func:`tempfile.mkstemp`, which creates mode 0600: the renamed file kept it, so an atlas copied to or
    served by another user answered "permission denied" for every render and artifact. Created here with
    0666 the kernel applies the umask, as for any file the user creates (reading the umask instead would
    mean setting it, which is not thread-safe).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}"
        try:
            return os.open(temporary, flags, 0o666), str(temporary)
        except FileExistsError:
            continue  # a name another writer holds: draw again
    raise FileExistsError(f"no free temporary name beside {path}")
