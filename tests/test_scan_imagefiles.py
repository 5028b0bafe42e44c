"""Decoding for scans: every broken kind gets its reason, every unusual mode is converted."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from neuronscope.imagefiles import SkippedFile, decode_image_bytes, open_image
from tests.helpers import broken_files, encode, noise, unusual_files


@pytest.mark.parametrize("name", sorted(unusual_files()))
def test_unusual_modes_decode_to_rgb_without_warnings(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = decode_image_bytes(unusual_files()[name], name)
    assert image.mode == "RGB" and image.size == (50, 30)


def test_sixteen_bit_is_scaled_not_clipped_and_animation_gives_the_first_frame():
    grey = np.asarray(decode_image_bytes(unusual_files()["sixteen.png"], "s.png"))
    assert grey[0, 0].tolist() == [156, 156, 156]  # 40000 / 256
    first = np.asarray(decode_image_bytes(unusual_files()["animated.gif"], "a.gif"))
    assert first[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("name", sorted(broken_files()))
def test_broken_bytes_give_their_reason(name):
    data, reason = broken_files()[name]
    with pytest.raises(SkippedFile) as caught:
        decode_image_bytes(data, name)
    assert caught.value.reason == reason


def test_pixel_limit_is_read_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(encode(noise(100, 100), "PNG"))
    with pytest.raises(SkippedFile, match="too_many_pixels"):
        decode_image_bytes(path.read_bytes(), "big.png", max_pixels=9_999)
    with pytest.raises(SkippedFile, match="too_many_pixels"):
        open_image(path, max_pixels=9_999)
    assert open_image(path).size == (100, 100)
    with pytest.raises(SkippedFile, match="missing"):
        open_image(tmp_path / "gone.png")


def test_float_images_are_scaled_from_zero_one_or_skipped_never_black():
    """Mode F (float TIFF) in [0, 1] -> 8 bits; Pillow's own conversion clipped it to black."""
    ramp = np.linspace(0.0, 1.0, 50, dtype=np.float32)[None, :].repeat(30, axis=0)  # [30, 50]
    grey = np.asarray(decode_image_bytes(encode(Image.fromarray(ramp, mode="F"), "TIFF"), "f.tif"))
    assert grey.shape == (30, 50, 3) and grey[0, 0].tolist() == [0, 0, 0] and grey[0, -1].tolist() == [255] * 3
    assert grey[0, 25, 0] == round(25 / 49 * 255)
    with pytest.raises(SkippedFile, match="outside") as caught:
        decode_image_bytes(encode(Image.fromarray(ramp * 1000, mode="F"), "TIFF"), "hdr.tif")
    assert caught.value.reason == "unreadable"


def test_iter_decoded_counts_a_directory_in_a_path_list_as_unreadable(tmp_path):
    """zeroshot's reader shares the scan's: a directory listed as an image is a skip, not an abort."""
    from neuronscope.mining.loader import iter_decoded

    (tmp_path / "imgs").mkdir()
    noise().save(tmp_path / "imgs" / "ok.png")
    (tmp_path / "d.png").mkdir()
    (tmp_path / "list.txt").write_text("imgs/ok.png\nd.png\ngone.png\n")
    outcomes = {name: item for name, item in iter_decoded([str(tmp_path / "list.txt")])}
    assert isinstance(outcomes["imgs/ok.png"], Image.Image)
    assert {name: item.reason for name, item in outcomes.items() if isinstance(item, SkippedFile)} == \
        {"d.png": "unreadable", "gone.png": "missing"}


@pytest.mark.timeout(30)  # before the fix, reading the FIFO blocked forever
def test_a_fifo_named_like_an_image_is_unreadable_and_never_blocks(tmp_path):
    """A pipe (or device node, socket) with an image suffix in a folder is a skip with its name, not a hang."""
    import os

    from neuronscope.imagefiles import NotRegularFile, file_sha256
    from neuronscope.mining.loader import iter_decoded

    noise().save(tmp_path / "ok.png")
    os.mkfifo(tmp_path / "pipe.png")
    outcomes = dict(iter_decoded([str(tmp_path)]))
    name = os.path.join(str(tmp_path), "pipe.png")
    assert isinstance(outcomes[os.path.join(str(tmp_path), "ok.png")], Image.Image)
    assert isinstance(outcomes[name], SkippedFile) and outcomes[name].reason == "unreadable"
    with pytest.raises(SkippedFile) as caught:
        open_image(tmp_path / "pipe.png")
    assert caught.value.reason == "unreadable"
    with pytest.raises(NotRegularFile, match="pipe.png: not a regular file"):
        file_sha256(tmp_path / "pipe.png")
