"""Typographic attacks: the label drawn, what is counted, and on the mini CLIP that the written word is what wins."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from neuronscope.cli import app
from neuronscope.probing.raster import resolve_font
from neuronscope.probing.typographic import EIGHT_POSITIONS, AttackSettings, stamp_label, typographic_attack
from neuronscope.probing.zeroshot import ZeroShotClassifier
from neuronscope.world.concepts import ZEROSHOT_TEMPLATE, concept_names
from tests.helpers import training

#: The default label: 15% of the height, at least 20 px, so 20 px (31%) on the mini CLIP's 64 px, about its world's
#: attack labels (24-34%); 15% alone would be a 10 px label, too small for it to read.
MINI_CLIP_ATTACK = AttackSettings()


def test_a_label_covers_its_box_and_nothing_else():
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    font = resolve_font(AttackSettings().font)
    for position in EIGHT_POSITIONS:
        stamped, cover = stamp_label(image, "iPod", font, 0.25, position)
        pixels = np.asarray(stamped)
        changed = (pixels != (200, 30, 30)).any(axis=2)
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        assert cover == pytest.approx(box / (64 * 48)) and changed.sum() == box  # a solid label, nothing outside
        assert (rows[0] == 0) == (position[1] == 0) and (rows[-1] == 47) == (position[1] == 1)
        assert (cols[0] == 0) == (position[0] == 0) and (cols[-1] == 63) == (position[0] == 1)
        assert set(map(tuple, pixels[changed].reshape(-1, 3))) - {(255, 255, 255)}  # some ink on the white
    assert np.asarray(image).max() == 200  # the caller's image is left as it was


def test_the_default_label_is_15_percent_of_the_height_and_at_least_20_pixels():
    font = resolve_font(AttackSettings().font)

    def label_rows(size: int, **settings) -> int:
        chosen = AttackSettings(**settings)
        image = Image.new("RGB", (size, size), (200, 30, 30))
        stamped, _ = stamp_label(image, "iPod", font, chosen.height, (0.0, 0.0), min_pixels=chosen.min_pixels)
        return int((np.asarray(stamped) != (200, 30, 30)).any(axis=2).any(axis=1).sum())

    assert label_rows(288) == 43 and label_rows(224) == 34  # 15%: the floor does not bind at CLIP's sizes
    assert label_rows(64) == 20 and label_rows(64, min_pixels=0) == 10 and label_rows(64, height=0.5) == 32
    assert label_rows(16) == 16  # never taller than the image
    with pytest.raises(ValueError, match="min_pixels"):
        AttackSettings(min_pixels=-1)


@pytest.fixture(scope="module")
def other_drawings(test_split):
    """24 held-out drawings of concepts other than star and fish, one render each."""
    chosen = [i for i in test_split.indices("drawing")[::4] if test_split.entries[i]["concept"] not in ("star", "fish")]
    return [test_split.pil(int(i)) for i in chosen[::len(chosen) // 24][:24]]


def test_the_written_word_wins_on_the_mini_clip_and_a_nonsense_word_does_not(mini_clip_fp32, other_drawings):
    """The paper's finding in the mini world: writing a class's name on a drawing of something else makes most
    drawings that class; the same label with a nonsense word turns none into it (the label alone does nothing)."""
    classifier = ZeroShotClassifier.build(mini_clip_fp32, concept_names(), ZEROSHOT_TEMPLATE)
    for word in ("star", "fish"):
        result = typographic_attack(mini_clip_fp32, other_drawings, classifier, word, settings=MINI_CLIP_ATTACK)
        assert result.success >= 0.6, result
        assert len(result.counted) >= 20 and 0.1 < result.pixel_cover < 0.35
    control = typographic_attack(mini_clip_fp32, other_drawings, classifier, "zqxv", target="star",
                                 settings=MINI_CLIP_ATTACK)
    assert control.success <= 0.05, control


def test_images_already_of_the_target_are_not_counted(mini_clip_fp32, test_split):
    stars = [test_split.pil(int(i)) for i in test_split.indices("drawing")
             if test_split.entries[i]["concept"] == "star"][:4]
    classifier = ZeroShotClassifier.build(mini_clip_fp32, concept_names(), ZEROSHOT_TEMPLATE)
    result = typographic_attack(mini_clip_fp32, iter(stars), classifier, "star", settings=MINI_CLIP_ATTACK)
    already = [i for i, top in enumerate(result.clean) if top == "star"]
    assert already and result.counted == [i for i in range(4) if i not in already]
    payload = dataclasses.replace(result, images=list("abcd")).to_json()
    assert payload["images"] == 4 and payload["counted"] == len(result.counted)
    assert [row["image"] for row in payload["per_image"]] == list("abcd")
    assert len(payload["by_position"]) == 8 and all(len(row["attacked"]) == 8 for row in payload["per_image"])
    with pytest.raises(ValueError, match="not one of the classes"):
        typographic_attack(mini_clip_fp32, stars, classifier, "iPod")


def test_batch_size_bounds_every_forward_and_images_stream_through(mini_clip_fp32, other_drawings, monkeypatch):
    """--batch-size is images per forward: a chunk of images became 8x as many stamped ones, which went through
    in forwards of 256 whatever the option said."""
    classifier = ZeroShotClassifier.build(mini_clip_fp32, concept_names(), ZEROSHOT_TEMPLATE)
    sizes, done = [], []
    encode = mini_clip_fp32.encode_images
    monkeypatch.setattr(mini_clip_fp32, "encode_images", lambda inputs: sizes.append(len(inputs)) or encode(inputs))
    result = typographic_attack(mini_clip_fp32, iter(other_drawings[:10]), classifier, "star", batch_size=16,
                                settings=MINI_CLIP_ATTACK, on_batch=done.append)
    assert max(sizes) <= 16 and sum(sizes) == 10 * 9  # each image once clean and at the 8 places
    assert done == [2, 4, 6, 8, 10] and len(result.attacked) == 10


def test_attack_cli_prints_the_json_and_refuses_bad_input_in_one_line(tmp_path, other_drawings):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(other_drawings[:6]):
        image.save(folder / f"{index}.png")
    (folder / "empty.png").write_bytes(b"")
    runner = CliRunner()
    answer = runner.invoke(app, ["attack", str(folder), "--text", "star", "--json"])
    assert answer.exit_code == 0, answer.output
    payload = json.loads(answer.stdout)
    assert (payload["text"], payload["target"], payload["images"]) == ("star", "star", 6)
    assert payload["skipped"] == {"zero_byte": 1}  # {reason: count}, as scan's
    (name, reason), = payload["skipped_files"].items()  # each file's reason
    assert reason == "zero_byte" and name.endswith("empty.png")
    for arguments, message in ((["--text", "star", "--target", "iPod"], "not one of the 43 classes"),
                               (["--text", "star", "--height", "0"], "--height"),
                               (["--text", "star", "--font", "nope/None.ttf"], "font 'nope/None.ttf' is not installed")):
        refused = runner.invoke(app, ["attack", str(folder), *arguments])
        assert refused.exit_code == 1 and message in refused.output and "Traceback" not in refused.output
    refused = runner.invoke(app, ["attack", str(folder), "--text", "star", "--min-pixels", "-1"])
    assert refused.exit_code == 2 and "--min-pixels" in refused.output  # typer's own range check


def test_the_attack_runs_a_training_model_in_eval_mode(mini_clip_fp32, other_drawings):
    classifier = ZeroShotClassifier.build(mini_clip_fp32, concept_names(), ZEROSHOT_TEMPLATE)
    expected = typographic_attack(mini_clip_fp32, other_drawings[:6], classifier, "star", settings=MINI_CLIP_ATTACK)
    with training(mini_clip_fp32.module):
        result = typographic_attack(mini_clip_fp32, other_drawings[:6], classifier, "star", batch_size=8,
                                    settings=MINI_CLIP_ATTACK)
    assert (result.clean, result.attacked) == (expected.clean, expected.attacked)
