"""Unit families from a word probe: the length control, the lexical family, the atlas and the command."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from neuronscope.analysis.families import builtin_families, null_lists, stratified_auroc, word_families
from neuronscope.probing.family_store import families_into, plan_families
from neuronscope.atlas import Atlas
from neuronscope.cli import app
from neuronscope.probing.vocab import english_words
from neuronscope.probing.word_store import save_word_probe
from neuronscope.probing.words import WordProbe
from neuronscope.probing.raster import RasterSettings


def _probe_scores() -> tuple[list[str], torch.Tensor]:
    """english-10k with four units: 0 answers colour words, 1 short words, 2 nothing, 3 words in -ing."""
    words = english_words()
    colours = {w.lower() for w in builtin_families()["colour"]}
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(len(words), 4, generator=generator) * 0.1
    scores[:, 0] += torch.tensor([w.lower() in colours for w in words], dtype=torch.float32)
    scores[:, 1] -= torch.tensor([len(w) for w in words], dtype=torch.float32)
    scores[:, 3] += torch.tensor([w.endswith("ing") for w in words], dtype=torch.float32) * 3
    return words, scores


def test_a_colour_unit_is_found_and_a_short_word_unit_is_not_taken_for_one() -> None:
    words, scores = _probe_scores()
    found = word_families(words, scores, "layer")
    assert found.family(0) == {"family": "colour", "score": 1.0}
    assert found.family(1) is None and found.family(2) is None
    colours = {c.lower() for c in builtin_families()["colour"]}
    colour = torch.tensor([w.lower() in colours for w in words])
    # without the length control the short-word unit would look like a colour unit (colour words are short)
    assert stratified_auroc(scores, colour, torch.zeros(len(words), dtype=torch.long))[1] > 0.75
    assert found.affinity[found.names.index("colour"), 1] < 0.7
    assert found.family(3) == {"family": "lexical", "score": None, "affix": "-ing"}
    assert found.members() == {"colour": [0], "lexical": [3]}


@pytest.mark.parametrize("family", ["time", "art"])
def test_time_and_art_style_units_are_found_among_noise(family: str) -> None:
    """The paper's season/holiday and art-style neurons: a unit that answers the family's words (months, seasons,
    holidays; painting, sketch, anime) joins it; noise units do not."""
    words = english_words()
    members = set(builtin_families()[family])
    scores = torch.randn(len(words), 50, generator=torch.Generator().manual_seed(2)) * 0.1
    scores[:, 0] += torch.tensor([w in members for w in words], dtype=torch.float32)
    found = word_families(words, scores, "layer")
    assert found.family(0) == {"family": family, "score": 1.0}
    assert set(found.members()) <= {family, "lexical"} and found.members()[family] == [0]


def test_a_small_family_needs_its_null_as_well_as_the_threshold() -> None:
    """Noise units reach a high affinity for 20 colour words by chance: a threshold that lets them into the
    family is not enough; each family's null (random lists of its lengths) keeps them out, not a real unit."""
    words, scores = _probe_scores()
    noise = torch.randn(len(words), 200, generator=torch.Generator().manual_seed(1))
    scores = torch.cat([scores, noise], dim=1)
    found = word_families(words, scores, "layer", threshold=0.6)
    colour = found.names.index("colour")
    assert found.null_draws == 20 and found.names == ("region", "emotion", "colour", "time", "art")
    assert len(found.null_max) == 5
    assert found.affinity[colour, 4:].max() >= 0.6  # a noise unit reaches the threshold...
    assert found.null_max[colour] > 0.6
    assert found.family(0) == {"family": "colour", "score": 1.0}  # ...the colour unit is still found
    assert found.members().get("colour") == [0]  # ...and no noise unit joins the family
    assert word_families(words, scores, "layer", threshold=0.6, null_draws=0).members()["colour"][1:]  # without it
    assert found.about("english-10k")["null"] == found.null_by_family() == {
        name: round(v, 4) for name, v in zip(found.names, found.null_max)}
    assert found.required_affinity().tolist() == pytest.approx([max(found.threshold, v) for v in found.null_max])
    assert found.null_max[colour] > found.null_max[found.names.index("region")]  # a 20-word list reaches higher than 131


def test_the_null_lists_have_the_family_lengths_and_none_of_its_words() -> None:
    words = ["red", "tan", "blue", "pink", "cat", "dog", "sun", "tree", "home", "bird", "wolf", "yellow"]
    positive = torch.tensor([w in {"red", "tan", "blue", "pink"} for w in words])
    strata = torch.tensor([len(w) for w in words])
    lists = null_lists(positive, strata, 50, seed=0)
    assert lists.shape == (50, len(words)) and not (lists & positive).any()
    assert (lists.long() @ (strata == 3).long()).eq(2).all() and (lists.long() @ (strata == 4).long()).eq(2).all()
    assert torch.equal(lists, null_lists(positive, strata, 50, seed=0)) and len(lists.unique(dim=0)) > 1
    several = torch.stack([positive, lists[0]])  # several sets at once give each set's own AUROC
    scores = torch.rand(len(words), 3)
    assert torch.allclose(stratified_auroc(scores, several, strata)[1], stratified_auroc(scores, lists[0], strata))


def test_families_with_too_few_words_in_the_probe_are_not_scored() -> None:
    words = ["red", "blue", "green", "house", "table", "chair"]
    found = word_families(words, torch.rand(len(words), 2), "layer")
    assert found.names == () and found.family(0) is None


def _atlas_with_probe(tmp_path: Path, tiny_rn) -> Path:
    words, scores = _probe_scores()
    layer = tiny_rn.resolve_layer("neurons")
    units = tiny_rn.layer_shape(layer)[0]
    full = torch.zeros(len(words), units)
    full[:, :4] = scores
    probe = WordProbe(model=tiny_rn.key, layer=layer, words=words, scores=full, settings=RasterSettings(),
                      grid=(1, 1), precision="fp32", seconds=0.0)
    with Atlas(tmp_path / "atlas") as atlas:
        save_word_probe(atlas, probe, tiny_rn, vocabulary="english-10k")
        atlas.set_label(tiny_rn.key, layer, 0, "mine")
    return tmp_path / "atlas"


def test_the_command_stores_families_and_keeps_ones_set_elsewhere(tmp_path: Path, tiny_rn) -> None:
    atlas_dir = _atlas_with_probe(tmp_path, tiny_rn)
    layer = tiny_rn.resolve_layer("neurons")
    with Atlas(atlas_dir) as atlas:
        atlas.write_families(tiny_rn.key, layer, {3: {"family": "suffix -ing", "score": None}}, source="user")
    runner = CliRunner()
    result = runner.invoke(app, ["families", str(atlas_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["family_words"] == {"region": 131, "emotion": 76, "colour": 20, "time": 49, "art": 20}
    assert report["families"]["colour"] == [{"unit": 0, "score": 1.0}]
    assert set(report["null"]) == {"region", "emotion", "colour", "time", "art"}
    # the fill report (CONVENTIONS), then the command's own keys
    assert list(report)[:7] == ["atlas", "run_id", "model", "layers", "units", "seconds", "skipped"]
    assert report["layers"] == [layer] and report["layer"] == layer and report["units"] == tiny_rn.layer_shape(layer)[0]
    with Atlas(atlas_dir) as atlas:  # a run, with its provenance, and the artifact under it
        run = atlas.run(report["run_id"])
        probe_run = atlas.artifact(tiny_rn.key, layer, "words", "english-10k")["run_id"]
        assert run["status"] == "finished" and run["config_key"].startswith("families-")
        assert run["command"].startswith("neuronscope families atlas --model")
        assert run["config"]["probe_run"] == probe_run and run["config"]["threshold"] == 0.85
        assert {"families_sha256", "lexical_rule", "null"} <= set(run["config"])
        assert run["weights_sha256"] == atlas.run(probe_run)["weights_sha256"]
        about = atlas.artifact(tiny_rn.key, layer, "families", "auto:words")
        assert about["run_id"] == report["run_id"] and about["data"]["null"] == report["null"]
    with Atlas(atlas_dir) as atlas:
        assert atlas.unit(None, "neurons", 0)["family"] == {"family": "colour", "score": 1.0, "source": "auto:words"}
        assert atlas.unit(None, "neurons", 3)["family"]["source"] == "user"  # a family set elsewhere is kept
        assert atlas.unit(None, "neurons", 2)["family"] is None
    assert "family: colour 1.000 (auto:words)" in runner.invoke(app, ["show", str(atlas_dir), "--unit", "0"]).stdout
    again = runner.invoke(app, ["families", str(atlas_dir), "--threshold", "1.0", "--json"])  # replaces its own
    assert again.exit_code == 0, again.output
    with Atlas(atlas_dir) as atlas:
        assert atlas.unit(None, "neurons", 0)["family"]["family"] == "colour"
        assert json.loads(again.stdout)["run_id"] == report["run_id"] + 1  # another config: another run
        assert atlas.run(report["run_id"] + 1)["config"]["threshold"] == 1.0


def test_families_into_records_a_run_that_reruns_of_its_config_find(tmp_path: Path, tiny_rn) -> None:
    """The demo's reuse: the stored families are those of the latest finished run of this config."""
    atlas_dir = _atlas_with_probe(tmp_path, tiny_rn)
    with Atlas(atlas_dir) as atlas:
        plan = plan_families(atlas, None, "neurons")
        done = families_into(atlas, plan, command="neuronscope demo (families)")
        assert atlas.finished_run(plan.config_key) == done.run_id
        assert atlas.run(done.run_id)["command"] == "neuronscope demo (families)"
        assert done.found.records() == {0: {"family": "colour", "score": 1.0},
                                        3: {"family": "lexical", "score": None, "affix": "-ing"}}
        assert plan_families(atlas, None, "neurons").config_key == plan.config_key  # a key never changes
        assert plan_families(atlas, None, "neurons", threshold=0.9).config_key != plan.config_key


def test_an_atlas_without_a_word_probe_says_how_to_make_one(tmp_path: Path, tiny_rn) -> None:
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.register_layer(tiny_rn.key, tiny_rn.resolve_layer("neurons"), aliases=["neurons"], units=8, grid=(1, 1))
    result = CliRunner().invoke(app, ["families", str(tmp_path / "atlas")])
    assert result.exit_code == 1 and "neuronscope words" in result.output


def test_a_families_run_records_open_clips_version_without_importing_it(tmp_path: Path, tiny_rn) -> None:
    """The run record's versions cost no open_clip import (seconds) to a command that loads no model."""
    atlas_dir = _atlas_with_probe(tmp_path, tiny_rn)
    script = f"""
import json, sys
from typer.testing import CliRunner
from neuronscope.cli import app
result = CliRunner().invoke(app, ["families", {str(atlas_dir)!r}, "--json"])
assert result.exit_code == 0, result.output
print(json.dumps({{"run_id": json.loads(result.stdout)["run_id"], "open_clip": "open_clip" in sys.modules}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["open_clip"] is False
    with Atlas(atlas_dir) as atlas:
        assert atlas.run(report["run_id"])["versions"]["open_clip"] == version("open_clip_torch")


def test_the_nulls_do_not_depend_on_the_order_of_the_probes_words() -> None:
    """The same words in another order (a vocabulary file's lines reversed) drew other random lists: other
    nulls (colour 0.7395 against 0.7004 in a review), and at a lower threshold another member."""
    words, scores = _probe_scores()
    noise = torch.randn(len(words), 100, generator=torch.Generator().manual_seed(3))
    scores = torch.cat([scores, noise], dim=1)
    reverse = torch.arange(len(words) - 1, -1, -1)
    forward = word_families(words, scores, "layer", threshold=0.6)
    backward = word_families([words[i] for i in reverse], scores[reverse], "layer", threshold=0.6)
    assert forward.null_max == pytest.approx(backward.null_max, abs=1e-6)
    assert forward.members() == backward.members()
