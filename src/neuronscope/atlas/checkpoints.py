"""Checkpoints: the state of a job in progress (a scan, a word probe, a kept attribution basis), one ``.npz`` a
key in an atlas's ``checkpoints/`` folder, dropped when the job finishes.

A checkpoint is the job's arrays plus a JSON ``meta`` (stored as the array ``__meta__``). Keys are the run's
config key, or ``KEY-SUFFIX`` for the files a backend keeps beside it (the Ray scan's), which
:meth:`CheckpointStore.files` finds by prefix.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neuronscope.atlas.files import atomic_write_npz

META = "__meta__"


class CheckpointStore:
    """The checkpoints in the folder ``folder`` (created on the first save)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: str) -> Path:
        """The file of the checkpoint ``key``."""
        return self.folder / f"{key}.npz"

    def save(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Atomically replace the checkpoint ``key`` with ``arrays`` and a JSON ``meta``."""
        atomic_write_npz(self.path(key), {**arrays, META: np.array(json.dumps(meta))})

    def load(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The checkpoint ``key`` as ``(arrays, meta)``, or None when there is none."""
        path = self.path(key)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name != META}
            meta = json.loads(str(data[META]))
        return arrays, meta

    def drop(self, key: str) -> None:
        """Remove the checkpoint ``key`` (nothing when there is none)."""
        self.path(key).unlink(missing_ok=True)

    def files(self, prefix: str = "") -> list[Path]:
        """The checkpoint files whose key starts with ``prefix``, sorted by name."""
        return sorted(self.folder.glob(f"{glob.escape(prefix)}*.npz"))
