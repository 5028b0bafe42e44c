"""The mini CLIP's held-out test split: a tar shard of PNGs with an ``index.json``.

It ships inside the package, so ``world eval``, ``scan``, ``zeroshot``, the
demo and the tests need neither openclipart nor a font package.

Each ``index.json`` entry has ``file`` and ``kind``: ``drawing`` (``concept``,
``drawing`` id, ``render``), ``word`` (``concept``, ``font``), ``attack``
(``concept`` of the drawing, ``attack_word``, ``font``) or ``reading``
(``word``, ``font``).
"""

from __future__ import annotations

import functools
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import WorldFileMissing
from ..models.bundled import TEST_SPLIT_FILE, bundled_dir


@dataclass
class TestSplit:
    """The split in memory.

    Attributes:
        meta: ``seed``, ``image_size``, ``concepts`` (the world's, in order), ``reading_gallery``.
        entries: one dict per image (see the module docstring).
        images: [N, H, W, 3] uint8, in the order of ``entries``.
    """

    meta: dict
    entries: list[dict]
    images: np.ndarray

    __test__ = False  # not a pytest class

    def __repr__(self) -> str:  # the dataclass's printed every entry and the whole uint8 array (445k characters)
        height, width = self.images.shape[1:3]
        return f"TestSplit({len(self.entries)} images of {len(self.concepts)} concepts, {height}x{width} px)"

    @property
    def concepts(self) -> list[str]:
        return self.meta["concepts"]

    def indices(self, kind: str) -> np.ndarray:
        """Positions of the images of one kind."""
        return np.array([i for i, e in enumerate(self.entries) if e["kind"] == kind], dtype=np.int64)

    def concept_labels(self, indices: np.ndarray) -> torch.Tensor:
        """Concept index [len(indices)] of the given images."""
        position = {c: i for i, c in enumerate(self.concepts)}
        return torch.tensor([position[self.entries[i]["concept"]] for i in indices])

    def pixels(self, indices: np.ndarray | None = None) -> torch.Tensor:
        """Images as float [N, 3, H, W] in [0, 1] (all of them when ``indices`` is None)."""
        chosen = self.images if indices is None else self.images[indices]
        return torch.from_numpy(chosen).permute(0, 3, 1, 2).float().div(255)

    def pil(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


def bundled_test_split_path() -> Path:
    """The bundled mini CLIP's held-out split (a tar shard of PNGs), which ``world eval`` and the demo read."""
    return bundled_dir() / TEST_SPLIT_FILE


def load_test_split(path: str | Path | None = None) -> TestSplit:
    """Read a test split tar (the bundled one by default)."""
    path = Path(path) if path is not None else bundled_test_split_path()
    if not path.is_file():
        raise WorldFileMissing(f"no test split at {path}; build one with `neuronscope world build` "
                                "or reinstall neuronscope (it ships with the package)")
    with tarfile.open(path) as tar:
        index = json.loads(tar.extractfile("index.json").read())
        entries = index.pop("images")
        images = np.stack([np.asarray(Image.open(io.BytesIO(tar.extractfile(e["file"]).read())).convert("RGB"))
                           for e in entries])
    return TestSplit(meta=index, entries=entries, images=images)


@functools.lru_cache(maxsize=1)
def bundled_split() -> TestSplit:
    """The bundled split, decoded once per process (3,612 PNGs: about a second) and kept for its life (about
    44 MB of pixels): attribution samples and the built-in facets read it, and a notebook holds it until its
    kernel restarts (``bundled_split.cache_clear()`` frees it). Treat it as read-only: every caller shares it."""
    return load_test_split()
