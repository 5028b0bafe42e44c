"""Building the world: collect and clean the clipart, split it, render the test split.

``build_world`` writes a directory:

- ``world.json``: concepts, every kept drawing with its split, the reading
  words, skipped-file counts by reason, library versions;
- ``drawings.npz``: the prepared drawings (RGBA, longest side 128 px), which
  the trainer renders from;
- ``test_split.tar``: the held-out test split at the model's resolution, PNGs
  plus an ``index.json`` member (what ships with the package).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import WorldFileMissing, WorldMismatch
from ..imagefiles import NotRegularFile, SkipCounts, SkippedFile, file_sha256, open_image
from .concepts import CLIPART_ROOT, CONCEPTS, Concept
from .render import DRAWING_BOX, HELDOUT_FONTS, font_path, prepare_drawing, render_drawing, render_labelled, render_word

#: The world builder refuses images above this many pixels (read from the header).
WORLD_MAX_PIXELS = 16_000_000
#: A content hash with more copies than this is a placeholder ("Linked Image Not Found"): all dropped.
PLACEHOLDER_COPIES = 3
MAX_DRAWINGS_PER_CONCEPT = 100
MIN_DRAWINGS_PER_CONCEPT = 15
READING_WORDS = 5000
READING_EVAL_WORDS = 500
RENDERS_PER_HELDOUT_DRAWING = 4
HELDOUT_WORD_FRACTIONS = (0.5, 0.7, 0.9)
HELDOUT_WORD_RENDERS = 2  # per font file and width fraction: 4 fonts x 3 x 2 = 24 a concept

# Streams of the seeded generator, one per kind of image, so that adding
# images of one kind never changes the pixels of another.
STREAM = {"split": 1, "drawing": 2, "word": 3, "attack": 4, "reading": 5, "reading_pick": 6, "train_drawing": 7}


@dataclass(frozen=True)
class Drawing:
    """One kept clipart file."""

    id: int
    concept: str
    path: str  # relative to the clipart root
    sha256: str
    split: str  # "train" or "test"


def stream_rng(seed: int, stream: str, *index: int) -> np.random.Generator:
    """The seeded generator of one image of one stream (:data:`STREAM`)."""
    return np.random.default_rng([seed, STREAM[stream], *index])


def _candidates(root: Path, concepts: tuple[Concept, ...]) -> list[tuple[str, Path]]:
    """(concept, path) for every PNG directly inside a concept's folders, sorted."""
    found = []
    for concept in concepts:
        for folder in concept.folders:
            directory = root / folder
            if directory.is_dir():
                found += [(concept.word, path) for path in sorted(directory.iterdir())
                          if path.suffix.lower() == ".png" and not path.is_dir()]
    return found


def collect_drawings(root: str | Path, concepts: tuple[Concept, ...], seed: int, skipped: SkipCounts,
                     max_pixels: int = WORLD_MAX_PIXELS) -> tuple[list[Drawing], list[Image.Image]]:
    """Clean, deduplicate, cap and split the clipart of ``concepts``.

    Bad files are skipped and counted in ``skipped``; a content hash seen more
    than :data:`PLACEHOLDER_COPIES` times is dropped whole, other repeats keep
    their first copy. Concepts with fewer than
    :data:`MIN_DRAWINGS_PER_CONCEPT` drawings are dropped (a ``ValueError``
    if that leaves fewer than two).

    Returns the kept drawings and their prepared RGBA images, in the same order.
    """
    root = Path(root)
    hashed: list[tuple[str, Path, str]] = []
    for concept, path in _candidates(root, concepts):
        try:  # file_sha256 opens regular files only: a FIFO named like a drawing would block its hashing forever
            hashed.append((concept, path, file_sha256(path)))
        except FileNotFoundError:  # a broken link
            skipped.add(SkippedFile("missing", path))
        except NotRegularFile:
            skipped.add(SkippedFile("unreadable", path, "not a regular file"))
    copies: dict[str, int] = defaultdict(int)
    for _, _, sha in hashed:
        copies[sha] += 1
    seen: set[str] = set()
    by_concept: dict[str, list[tuple[Path, str, Image.Image]]] = defaultdict(list)
    for concept, path, sha in hashed:
        if copies[sha] > PLACEHOLDER_COPIES or sha in seen:
            skipped.add(SkippedFile("duplicate", path))
            continue
        try:
            image = open_image(path, max_pixels=max_pixels, keep_alpha=True)
        except SkippedFile as error:
            skipped.add(error)
            continue
        seen.add(sha)
        by_concept[concept].append((path, sha, prepare_drawing(image)))

    drawings: list[Drawing] = []
    images: list[Image.Image] = []
    for concept_index, concept in enumerate(concepts):
        files = by_concept.get(concept.word, [])
        if len(files) < MIN_DRAWINGS_PER_CONCEPT:
            continue
        rng = stream_rng(seed, "split", concept_index)
        order = rng.permutation(len(files))[:MAX_DRAWINGS_PER_CONCEPT]
        n_test = max(4, round(0.2 * len(order)))
        for rank, index in enumerate(order):
            path, sha, image = files[index]
            drawings.append(Drawing(len(drawings), concept.word, str(path.relative_to(root)), sha,
                                    "test" if rank < n_test else "train"))
            images.append(image)
    if len({d.concept for d in drawings}) < 2:
        raise WorldMismatch(f"fewer than two concepts have {MIN_DRAWINGS_PER_CONCEPT} usable drawings under {root}")
    return drawings, images


def reading_words(concept_words: list[str], seed: int, count: int = READING_WORDS) -> list[str]:
    """A seeded ``count`` of the 10,000 most frequent English words (wordfreq) that are not concepts."""
    from wordfreq import top_n_list

    excluded = set(concept_words)
    pool = [w for w in top_n_list("en", 10_000) if w.isalpha() and w.isascii() and w not in excluded]
    pick = stream_rng(seed, "reading_pick").permutation(len(pool))[:count]
    return [pool[i] for i in sorted(pick)]


def pack_drawings(images: list[Image.Image]) -> dict[str, np.ndarray]:
    """Prepared drawings as one array: ``pixels`` [N, 128, 128, 4] uint8 (top-left aligned), ``sizes`` [N, 2] (w, h)."""
    pixels = np.zeros((len(images), DRAWING_BOX, DRAWING_BOX, 4), np.uint8)
    sizes = np.zeros((len(images), 2), np.int32)
    for i, image in enumerate(images):
        pixels[i, : image.height, : image.width] = np.asarray(image)
        sizes[i] = image.size
    return {"pixels": pixels, "sizes": sizes}


def unpack_drawing(pixels: np.ndarray, size: np.ndarray) -> Image.Image:
    """Inverse of :func:`pack_drawings` for one drawing."""
    width, height = int(size[0]), int(size[1])
    return Image.fromarray(pixels[:height, :width], "RGBA")


def render_test_split(drawings: list[Drawing], images: list[Image.Image], words: list[str], seed: int,
                      size: int) -> tuple[list[dict], list[Image.Image]]:
    """The held-out test split: index entries and images, at ``size`` px.

    - ``drawing``: each held-out drawing, :data:`RENDERS_PER_HELDOUT_DRAWING` renders;
    - ``word``: each concept's word in the held-out fonts (24 a concept);
    - ``attack``: each held-out drawing labelled with another concept's word, in a held-out font;
    - ``reading``: :data:`READING_EVAL_WORDS` reading words in a held-out font.
    """
    concepts = sorted({d.concept for d in drawings}, key=[d.concept for d in drawings].index)
    entries: list[dict] = []
    rendered: list[Image.Image] = []

    def add(image: Image.Image, **entry) -> None:
        entry["file"] = f"{len(entries):05d}_{entry['kind']}.png"
        entries.append(entry)
        rendered.append(image)

    heldout = [d for d in drawings if d.split == "test"]
    for d in heldout:
        for render in range(RENDERS_PER_HELDOUT_DRAWING):
            add(render_drawing(images[d.id], stream_rng(seed, "drawing", d.id, render), size),
                kind="drawing", concept=d.concept, drawing=d.id, render=render)
    for c, concept in enumerate(concepts):
        for f, font in enumerate(HELDOUT_FONTS):
            for w, fraction in enumerate(HELDOUT_WORD_FRACTIONS):
                for render in range(HELDOUT_WORD_RENDERS):
                    rng = stream_rng(seed, "word", c, f, w, render)
                    add(render_word(concept, font_path(font), rng, size, width_fraction=fraction),
                        kind="word", concept=concept, font=Path(font).stem, word=concept)
    for d in heldout:
        rng = stream_rng(seed, "attack", d.id)
        others = [c for c in concepts if c != d.concept]
        attack_word = others[int(rng.integers(len(others)))]
        font = HELDOUT_FONTS[int(rng.integers(len(HELDOUT_FONTS)))]
        add(render_labelled(images[d.id], attack_word, font_path(font), rng, size),
            kind="attack", concept=d.concept, drawing=d.id, attack_word=attack_word, font=Path(font).stem)
    pick = stream_rng(seed, "reading", 0).permutation(len(words))[:READING_EVAL_WORDS]
    for i in sorted(pick):
        rng = stream_rng(seed, "reading", 1, int(i))
        font = HELDOUT_FONTS[int(rng.integers(len(HELDOUT_FONTS)))]
        add(render_word(words[i], font_path(font), rng, size), kind="reading", word=words[i], font=Path(font).stem)
    return entries, rendered


def write_test_split(path: str | Path, entries: list[dict], images: list[Image.Image], meta: dict) -> None:
    """Write the test split as one tar: PNG members plus ``index.json`` (``meta`` + ``images``)."""
    def member(name: str, payload: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(payload), 0, 0o644  # fixed mtime: same bytes for a seed
        return info, io.BytesIO(payload)

    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(*member("index.json", json.dumps({**meta, "images": entries}, indent=0).encode()))
        for entry, image in zip(entries, images):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=True)
            tar.addfile(*member(entry["file"], buffer.getvalue()))


def library_versions() -> dict[str, str]:
    """The versions a run records, plus wordfreq's (it chooses the reading words)."""
    from importlib.metadata import version

    from ..atlas.store import library_versions as run_versions

    return {**run_versions(), "wordfreq": version("wordfreq")}


def check_build_needs(root: str | Path) -> None:
    """A clear error for the first thing ``build_world`` needs that is not installed: the clipart, the
    held-out fonts the test split is rendered in, wordfreq (it chooses the reading words)."""
    if not Path(root).is_dir():
        raise WorldFileMissing(f"clipart root {root} not found: install Debian's openclipart-png (`make world` does)")
    for font in HELDOUT_FONTS:
        font_path(font)
    try:
        import wordfreq  # noqa: F401
    except ImportError:
        raise WorldFileMissing("the world's reading words need wordfreq: pip install 'neuronscope[words]'") from None


def build_world(out: str | Path, seed: int = 0, size: int = 64, root: str | Path = CLIPART_ROOT,
                concepts: tuple[Concept, ...] = CONCEPTS, max_pixels: int = WORLD_MAX_PIXELS,
                n_reading: int = READING_WORDS) -> dict:
    """Build the world into directory ``out``; returns the content of ``world.json``."""
    out = Path(out)
    check_build_needs(root)  # before minutes of hashing clipart, not after
    out.mkdir(parents=True, exist_ok=True)
    skipped = SkipCounts()
    drawings, images = collect_drawings(root, concepts, seed, skipped, max_pixels)
    concept_words = [c.word for c in concepts if any(d.concept == c.word for d in drawings)]
    words = reading_words(concept_words, seed, n_reading)
    np.savez(out / "drawings.npz", **pack_drawings(images))
    entries, rendered = render_test_split(drawings, images, words, seed, size)
    world = {
        "seed": seed,
        "image_size": size,
        "concepts": concept_words,
        "drawings": [asdict(d) for d in drawings],
        "reading_words": words,
        "skipped": skipped.as_dict(),
        "skipped_examples": skipped.examples,
        "versions": library_versions(),
    }
    meta = {"seed": seed, "image_size": size, "concepts": concept_words, "reading_gallery": words}
    write_test_split(out / "test_split.tar", entries, rendered, meta)
    (out / "world.json").write_text(json.dumps(world, indent=1))
    return world
