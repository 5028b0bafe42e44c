"""The world builder on a small generated clipart tree: deterministic, and every bad file skipped with its reason."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuronscope.imagefiles import SkipCounts
from neuronscope.world.build import collect_drawings, pack_drawings
from neuronscope.world.concepts import Concept
from neuronscope.world.render import augment_drawing, render_drawing

CONCEPTS = (Concept("cat", ("animals/cats",)), Concept("dog", ("animals/dogs", "animals/dogs/puppies")))


def _drawing(seed: int) -> Image.Image:
    """A distinct small RGBA drawing: a coloured blob on transparency."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((32, 40, 4), np.uint8)
    top, left = rng.integers(0, 12, size=2)
    pixels[top:top + 16, left:left + 20, :3] = rng.integers(0, 200, size=3)
    pixels[top:top + 16, left:left + 20, 3] = 255
    return Image.fromarray(pixels, "RGBA")


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (valid CRCs, almost no data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@pytest.fixture
def clipart_tree(tmp_path: Path) -> Path:
    root = tmp_path / "png"
    cats, dogs, puppies = root / "animals/cats", root / "animals/dogs", root / "animals/dogs/puppies"
    for folder in (cats, dogs, puppies):
        folder.mkdir(parents=True)
    for i in range(16):
        _drawing(i).save(cats / f"cat_{i:02d}.png")
    for i in range(10):
        _drawing(100 + i).save(dogs / f"dog_{i:02d}.png")
    for i in range(8):
        _drawing(200 + i).save(puppies / f"puppy_{i:02d}.png")
    # Bad files, one of each kind the issue names, plus a plain repeat.
    (cats / "empty.png").write_bytes(b"")
    whole = (cats / "cat_00.png").read_bytes()
    (cats / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (cats / "bomb.png").write_bytes(_png_claiming(5000, 4000))  # 20 megapixels, by its header
    (cats / "notes.png").write_text("not an image at all")
    (dogs / "gone.png").symlink_to(tmp_path / "nowhere.png")
    placeholder = _drawing(999)
    for i in range(5):
        placeholder.save(dogs / f"linked_image_not_found_{i}.png")
    (dogs / "dog_00_copy.png").write_bytes((dogs / "dog_00.png").read_bytes())
    return root


def _build(root: Path, seed: int):
    skipped = SkipCounts()
    drawings, images = collect_drawings(root, CONCEPTS, seed, skipped)
    return drawings, images, skipped


def test_bad_files_are_skipped_and_counted_by_reason(clipart_tree: Path) -> None:
    drawings, _, skipped = _build(clipart_tree, seed=0)
    assert skipped.as_dict() == {
        "zero_byte": 1, "truncated": 1, "not_image": 1, "too_many_pixels": 1, "unreadable": 0,
        "missing": 1, "duplicate": 6,  # five placeholder copies dropped whole, one repeat of a dog
    }
    by_concept = {c.word: [d for d in drawings if d.concept == c.word] for c in CONCEPTS}
    assert len(by_concept["cat"]) == 16 and len(by_concept["dog"]) == 18  # dogs/ and dogs/puppies/
    assert not any("linked_image_not_found" in d.path for d in drawings)
    for concept_drawings in by_concept.values():
        n_test = sum(d.split == "test" for d in concept_drawings)
        assert n_test == max(4, round(0.2 * len(concept_drawings)))


def test_build_is_deterministic_for_a_seed(clipart_tree: Path) -> None:
    first, first_images, _ = _build(clipart_tree, seed=3)
    second, second_images, _ = _build(clipart_tree, seed=3)
    other, _, _ = _build(clipart_tree, seed=4)
    assert first == second
    digest = lambda images: hashlib.sha256(pack_drawings(images)["pixels"].tobytes()).hexdigest()  # noqa: E731
    assert digest(first_images) == digest(second_images)
    held_out = lambda drawings: {d.path for d in drawings if d.split == "test"}  # noqa: E731
    assert held_out(first) != held_out(other)  # the seed does choose the split


def test_rendering_is_deterministic_and_seed_dependent() -> None:
    drawing = _drawing(1)
    render = lambda seed: np.asarray(render_drawing(drawing, np.random.default_rng(seed), 64))  # noqa: E731
    assert render(7).shape == (64, 64, 3)
    assert np.array_equal(render(7), render(7))
    assert not np.array_equal(render(7), render(8))


def test_augmented_drawings_are_seeded_variants_that_keep_the_drawing() -> None:
    drawing = _drawing(1)  # a 20 x 16 opaque block: 320 visible pixels
    variant = lambda seed: augment_drawing(drawing, np.random.default_rng(seed), 64)  # noqa: E731
    assert np.array_equal(np.asarray(variant(3)), np.asarray(variant(3)))
    visible = [int((np.asarray(variant(seed))[..., 3] > 127).sum()) for seed in range(20)]
    # Stretching by 0.8-1.25 and tilting within 15 degrees keeps the block's area within those factors.
    assert all(0.75 * 320 <= v <= 1.1 * 320 for v in visible)
    pixels = [np.asarray(variant(seed)) for seed in range(5)]
    colours = {tuple(p[..., :3][p[..., 3] == 255][0]) for p in pixels}
    assert len(colours) == 1  # the drawing's own colour: the variant changes its shape, not its ink
    assert len({variant(seed).size for seed in range(20)}) > 5  # and the shapes do vary


def test_a_missing_heldout_font_stops_the_build_before_the_clipart_is_read(clipart_tree: Path, tmp_path: Path,
                                                                           monkeypatch) -> None:
    from neuronscope.errors import WorldFileMissing
    from neuronscope.world import build

    monkeypatch.setattr(build, "HELDOUT_FONTS", ("nowhere/Missing.ttf",))
    monkeypatch.setattr(build, "collect_drawings", lambda *_: pytest.fail("the clipart was read first"))
    with pytest.raises(WorldFileMissing, match="fonts-liberation"):
        build.build_world(tmp_path / "world", root=clipart_tree, concepts=CONCEPTS)
    assert not (tmp_path / "world").exists()
