"""`neuronscope demo`: the mini CLIP's atlas built stage by stage, every stage reused on a second run."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from neuronscope.atlas import Atlas
from neuronscope.cli import app
from neuronscope.demo import STAGES, DemoSettings
from neuronscope.models.bundled import load_card

WORDS = ["star", "puzzle", "hat", "planet", "computer"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A small demo (48 images, 4 units, 2 steps, 5 words), run twice into the same atlas."""
    root = tmp_path_factory.mktemp("demo")
    vocab = root / "words.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    args = ["demo", "--out", str(root / "atlas"), "--images", "48", "--units", "0-3", "--steps", "2",
            "--vocab", str(vocab), "--no-serve", "--json"]
    first = CliRunner().invoke(app, [*args, "--site", str(root / "site")])
    second = CliRunner().invoke(app, args)
    return root, first, second


def test_the_demo_fills_every_part_of_the_atlas(demo_run):
    root, first, _ = demo_run
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert [stage["stage"] for stage in report["stages"]] == list(STAGES)
    assert {stage["status"] for stage in report["stages"]} == {"built"}
    card = load_card()["multimodal"]["units"]
    star = next(entry["unit"] for entry in card if entry["concept"] == "star")
    with Atlas(root / "atlas") as atlas:
        run_status = {run["status"] for run in atlas.runs()}
        records = [atlas.unit("mini-clip", "neurons", unit) for unit in range(4)]
        card_unit = atlas.unit("mini-clip", "neurons", star)
    assert run_status == {"finished"}
    for record in records:
        assert len(record["top"]) == 48 and record["histogram"]["counts"]
        assert [render["kind"] for render in record["featurevis"]] == ["plain"]
        assert {word["word"] for word in record["words"]} == set(WORDS)
        assert record["texts"] and record["texts"][0]["score"] >= record["texts"][-1]["score"]
    assert card_unit["label"] == "star"
    assert {render["kind"] for render in card_unit["featurevis"]} == {"facet:text", "facet:drawing"}
    assert (root / "atlas" / card_unit["featurevis"][0]["path"]).stat().st_size > 0
    index = (root / "site" / "index.html").read_text()
    assert re.search(r'href="[^"]+"', index)


def test_a_second_run_reuses_every_stage(demo_run):
    _, _, second = demo_run
    assert second.exit_code == 0, second.output
    report = json.loads(second.stdout)
    assert {stage["stage"]: stage["status"] for stage in report["stages"]} == {stage: "reused" for stage in STAGES}


def test_unknown_stages_are_refused_with_the_list():
    with pytest.raises(ValueError, match="scan, labels, featurevis"):
        DemoSettings(skip=("scna",))
