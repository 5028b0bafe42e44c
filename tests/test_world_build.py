"""The world builder on a small generated clipart tree: deterministic, and every bad file skipped with its reason."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from neuronscope.imagefiles import SkipCounts
from neuronscope.world.build import collect_drawings, pack_drawings
from neuronscope.world.render import augment_drawing, render_drawing
from tests.helpers import CLIPART_CONCEPTS, blob_drawing


def _build(root: Path, seed: int):
    skipped = SkipCounts()
    drawings, images = collect_drawings(root, CLIPART_CONCEPTS, seed, skipped)
    return drawings, images, skipped


def test_bad_files_are_skipped_and_counted_by_reason(clipart_tree: Path) -> None:
    drawings, _, skipped = _build(clipart_tree, seed=0)
    assert skipped.as_dict() == {
        "zero_byte": 1, "truncated": 1, "not_image": 1, "too_many_pixels": 1, "unreadable": 0,
        "missing": 1, "duplicate": 6,  # five placeholder copies dropped whole, one repeat of a dog
    }
    by_concept = {c.word: [d for d in drawings if d.concept == c.word] for c in CLIPART_CONCEPTS}
    assert len(by_concept["cat"]) == 16 and len(by_concept["dog"]) == 18  # dogs/ and dogs/puppies/
    assert not any("linked_image_not_found" in d.path for d in drawings)
    for concept_drawings in by_concept.values():
        n_test = sum(d.split == "test" for d in concept_drawings)
        assert n_test == max(4, round(0.2 * len(concept_drawings)))


@pytest.mark.timeout(60)  # hashing the FIFO blocked forever
def test_a_fifo_named_like_a_drawing_is_unreadable_not_a_hang(clipart_tree: Path) -> None:
    import os

    cats = next(folder for folder in clipart_tree.rglob("*") if folder.is_dir() and any(folder.glob("*.png")))
    os.mkfifo(cats / "pipe.png")
    _, _, skipped = _build(clipart_tree, seed=0)
    assert skipped.as_dict()["unreadable"] == 1 and skipped.examples["unreadable"] == [str(cats / "pipe.png")]


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
    drawing = blob_drawing(1)
    render = lambda seed: np.asarray(render_drawing(drawing, np.random.default_rng(seed), 64))  # noqa: E731
    assert render(7).shape == (64, 64, 3)
    assert np.array_equal(render(7), render(7))
    assert not np.array_equal(render(7), render(8))


def test_augmented_drawings_are_seeded_variants_that_keep_the_drawing() -> None:
    drawing = blob_drawing(1)  # a 20 x 16 opaque block: 320 visible pixels
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
        build.build_world(tmp_path / "world", root=clipart_tree, concepts=CLIPART_CONCEPTS)
    assert not (tmp_path / "world").exists()
