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
from neuronscope.visualize.facets import FACET_L2, FACET_LR

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
        renders = [run["config"] for run in atlas.runs() if run["config"].get("render_version")]
    assert run_status == {"finished"}
    # each render job records the recipe it ran (a facet's is the paper's lr and L2) and its pass composition
    assert sorted(config["kind"] for config in renders) == ["facet:drawing", "facet:text", "plain"]
    assert all(config["batch_size"] == 32 for config in renders)
    assert all((config["lr"], config["l2"], config["facet_l2"]) == (FACET_LR, 0.0, FACET_L2)
               for config in renders if config["kind"] != "plain")
    for record in records:
        assert len(record["top"]) == 48 and record["histogram"]["counts"]
        assert [render["kind"] for render in record["featurevis"]] == ["plain"]
        assert {word["word"] for word in record["words"]} == set(WORDS)
        assert record["texts"] and record["texts"][0]["score"] >= record["texts"][-1]["score"]
    assert card_unit["label"] == "star"
    assert card_unit["multimodality"]["concept"] == "star" and card_unit["multimodality"]["multimodal"]
    with Atlas(root / "atlas") as atlas:  # five words hold no family's 10: none scored, no unit lexical
        assert atlas.artifact("mini-clip", "neurons", "families", "auto:words")["data"]["family_words"] == {}
    assert {render["kind"] for render in card_unit["featurevis"]} == {"facet:text", "facet:drawing"}
    assert (root / "atlas" / card_unit["featurevis"][0]["path"]).stat().st_size > 0
    index = (root / "site" / "index.html").read_text()
    assert re.search(r'href="[^"]+"', index)


def test_a_second_run_reuses_every_stage(demo_run):
    _, first, second = demo_run
    assert second.exit_code == 0, second.output
    report = json.loads(second.stdout)
    assert {stage["stage"]: stage["status"] for stage in report["stages"]} == {stage: "reused" for stage in STAGES}
    assert report["run_id"] == json.loads(first.stdout)["run_id"]  # the scan's run, found again


def test_the_json_report_is_the_fill_report_of_conventions(demo_run):
    _, first, _ = demo_run
    report = json.loads(first.stdout)
    assert {"atlas", "run_id", "model", "layers", "units", "seconds", "skipped"} <= set(report)
    assert report["model"] == "mini-clip@bundled" and report["layers"] == ["visual.layer4.1.act3:input"]
    assert report["units"] == 512 and not any(report["skipped"].values()) and isinstance(report["run_id"], int)


def test_a_missing_font_stops_the_demo_before_its_first_stage(mini, tmp_path, monkeypatch):
    import neuronscope.world.render as render
    from neuronscope.demo import build_demo_atlas
    from neuronscope.probing.raster import FontMissingError

    monkeypatch.setattr(render, "FONT_DIRS", (str(tmp_path / "no-fonts"),))
    with pytest.raises(FontMissingError, match="fonts-dejavu-core"):
        build_demo_atlas(mini, tmp_path / "atlas")
    assert not (tmp_path / "atlas").exists()
    build_demo_atlas(mini, tmp_path / "atlas", DemoSettings(skip=STAGES))  # without the words stage: no font


class _Stop(Exception):
    """Raised by a stand-in for a stage's compute once it has seen its arguments."""


@pytest.fixture(scope="module")
def mini():
    from neuronscope.models import load_model

    return load_model("mini-clip")


def test_the_texts_stage_attributes_over_the_seeds_sample_in_the_demos_batches(mini, tmp_path, monkeypatch):
    import neuronscope.demo as demo
    import neuronscope.probing.attribution as attribution

    seen = {}

    def basis(model, layer, sample, *, batch_size):
        seen.update(names=sample.names, batch_size=batch_size)
        raise _Stop

    monkeypatch.setattr(attribution, "compute_basis", basis)
    with Atlas(tmp_path / "atlas") as atlas, pytest.raises(_Stop):
        demo._texts(mini, atlas, "visual.layer4.1.act3:input", DemoSettings(seed=3, batch_size=8),
                    lambda *_: None)
    assert seen == {"names": attribution.default_image_sample(seed=3).names, "batch_size": 8}


def test_the_words_stage_reuses_only_a_probe_rastered_with_its_settings(mini, tmp_path, monkeypatch):
    import neuronscope.demo as demo
    import neuronscope.probing.word_store as word_store
    import neuronscope.probing.words as words
    from neuronscope.probing.raster import RasterSettings
    from neuronscope.probing.word_store import save_word_probe

    layer, vocab = "visual.layer4.1.act3:input", tmp_path / "few.txt"
    vocab.write_text("star\nhat\n")
    other = words.probe_words(mini, layer, ["star", "hat"], settings=RasterSettings(sizes=(0.8,)), workers=0)
    seen = {}

    def probe(model, layer, vocabulary, *, settings, batch_size, **_):
        seen.update(settings=settings, batch_size=batch_size)
        raise _Stop

    with Atlas(tmp_path / "atlas") as atlas:
        save_word_probe(atlas, other, mini, vocabulary="few")
        monkeypatch.setattr(word_store, "probe_words", probe)
        with pytest.raises(_Stop):  # another raster's probe of the same vocabulary is not reused
            demo._words(mini, atlas, layer, DemoSettings(vocabulary=str(vocab)), lambda *_: None)
    assert seen == {"settings": RasterSettings(), "batch_size": demo.WORDS_BATCH}


def test_the_words_stage_probes_again_when_the_vocabulary_file_was_edited(mini, tmp_path, monkeypatch):
    """It reused any probe of the file's stem with its raster settings: words added to the file since were
    never probed (the texts stage, keyed by the words' sha256, did use them)."""
    import neuronscope.demo as demo
    import neuronscope.probing.word_store as word_store
    import neuronscope.probing.words as words
    from neuronscope.probing.vocab import VocabularyRecord
    from neuronscope.probing.word_store import save_word_probe

    layer, vocab = "visual.layer4.1.act3:input", tmp_path / "few.txt"
    vocab.write_text("star\nhat\n")
    probed = words.probe_words(mini, layer, ["star", "hat"], workers=0)

    def probe(*_, **__):
        raise _Stop

    with Atlas(tmp_path / "atlas") as atlas:
        save_word_probe(atlas, probed, mini, vocabulary=VocabularyRecord.of(vocab, ["star", "hat"]))
        monkeypatch.setattr(word_store, "probe_words", probe)
        settings = DemoSettings(vocabulary=str(vocab))
        assert demo._words(mini, atlas, layer, settings, lambda *_: None)[0] == "reused"
        vocab.write_text("star\nhat\ncat\n")
        with pytest.raises(_Stop):
            demo._words(mini, atlas, layer, settings, lambda *_: None)


def test_the_words_stage_reuses_only_a_probe_of_its_precision(mini, tmp_path, monkeypatch):
    """It compared raster settings and words only: a bf16 probe of the same model was taken for its fp32 one.
    It now compares the run config the stage would record (word_run_config), less --top-k."""
    import neuronscope.demo as demo
    import neuronscope.probing.word_store as word_store
    import neuronscope.probing.words as words
    from neuronscope.models import load_model
    from neuronscope.probing.vocab import VocabularyRecord
    from neuronscope.probing.word_store import save_word_probe

    layer, vocab = "visual.layer4.1.act3:input", tmp_path / "few.txt"
    vocab.write_text("star\nhat\n")
    record = VocabularyRecord.of(vocab, ["star", "hat"])
    half = load_model("mini-clip", precision="bf16")

    def probe(*_, **__):
        raise _Stop

    with Atlas(tmp_path / "atlas") as atlas:
        save_word_probe(atlas, words.probe_words(mini, layer, ["star", "hat"], workers=0), mini, vocabulary=record,
                        top_k=1)
        monkeypatch.setattr(word_store, "probe_words", probe)
        settings = DemoSettings(vocabulary=str(vocab))
        assert demo._words(mini, atlas, layer, settings, lambda *_: None)[0] == "reused"  # any --top-k
        save_word_probe(atlas, words.probe_words(half, layer, ["star", "hat"], workers=0), half, vocabulary=record)
        with pytest.raises(_Stop):
            demo._words(mini, atlas, layer, settings, lambda *_: None)


def test_unknown_stages_are_refused_with_the_list():
    with pytest.raises(ValueError, match="scan, labels, multimodality, featurevis, facets, words, families"):
        DemoSettings(skip=("scna",))


def test_the_cards_stages_are_skipped_on_a_model_the_card_does_not_describe(tmp_path):
    args = ["demo", "--out", str(tmp_path / "atlas"), "--model", "tiny-rn", "--weights", "random",
            "--skip", "scan,featurevis,words,texts", "--no-serve", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stages = {stage["stage"]: stage for stage in json.loads(result.stdout)["stages"]}
    for name in ("labels", "multimodality", "facets"):
        assert stages[name]["status"] == "skipped"
        assert "the card describes mini-clip@bundled" in stages[name]["summary"]
    with Atlas(tmp_path / "atlas") as atlas:
        assert atlas.models() == []  # no card label written under tiny-rn's key


def test_a_unit_out_of_range_stops_the_demo_before_its_first_stage(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "atlas"), "--units", "0-999",
                                      "--skip", "scan", "--no-serve"])
    assert result.exit_code == 1 and "out of range" in result.output
    assert not (tmp_path / "atlas").exists()


@pytest.mark.parametrize("where, needs", [([], ("fastapi", "uvicorn", "jinja2")),
                                          (["--no-serve", "--site", "site"], ("jinja2",))])
def test_a_missing_web_extra_stops_the_demo_before_it_builds(tmp_path, monkeypatch, where, needs):
    """Serving needs the whole web extra, a static --site only jinja2 (as `export`); either is checked first."""
    import neuronscope.commands.demo as demo_command
    from neuronscope.errors import NeuronscopeError

    asked = []

    def no_web(modules):
        asked.append(tuple(modules))
        raise NeuronscopeError("the microscope needs the web extra")

    monkeypatch.setattr(demo_command, "_web", no_web)
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "atlas"), *where])
    assert result.exit_code == 1 and "web extra" in result.output and asked == [needs]
    assert not (tmp_path / "atlas").exists()


def test_the_multimodality_stage_reuses_only_the_measurement_its_run_stored(mini, tmp_path, monkeypatch):
    """It reused whenever a run of its config had finished, though another measurement (`multimodal --out` on
    other images) had replaced the stored one since: as the families stage, it now reuses only the artifact that
    run wrote."""
    import neuronscope.demo as demo
    import neuronscope.probing.multimodal_store as multimodal_store
    from neuronscope.probing.raster import RasterSettings

    def measure(*_, **__):
        raise _Stop

    layer = "visual.layer4.1.act3:input"
    config, key = multimodal_store.run_config(mini, layer, None, RasterSettings())
    scores = {"layer": layer, "concepts": ["star"], "threshold": 0.9, "concept": [0], "word_concept": [0],
              "auroc_images": [0.5], "auroc_words": [0.5]}
    monkeypatch.setattr(multimodal_store, "measure_multimodality_into", measure)
    with Atlas(tmp_path / "atlas") as atlas:
        run_id = atlas.start_run(command="demo", config=config, config_key=key, model=mini.key, weights_sha256=None,
                                 layers=[], dataset=None, precision="fp32")
        atlas.write_multimodality(run_id, mini.key, layer, scores)
        atlas.finish_run(run_id)
        assert demo._multimodality(mini, atlas, layer)[0] == "reused"
        atlas.write_multimodality(None, mini.key, layer, scores)  # another measurement replaced the demo's
        with pytest.raises(_Stop):
            demo._multimodality(mini, atlas, layer)
