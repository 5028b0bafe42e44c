"""The bundled mini CLIP: loads offline, reproduces its card, and its multimodal units are real."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from neuronscope.analysis.multimodality import multimodality
from neuronscope.cli import app
from neuronscope.models.bundled import bundled_dir
from neuronscope.world.concepts import concept_names
from neuronscope.world.evaluate import (
    split_responses,
    untrained_model,
    zeroshot_scores,
)
from tests.helpers import rng_states, same_rng

CARD = "mini_clip_card.json"


@pytest.fixture(scope="module")
def mini_clip(mini_clip_fp32):
    return mini_clip_fp32


@pytest.fixture(scope="module")
def split(test_split):
    return test_split


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((bundled_dir() / CARD).read_text())


def test_loads_offline_with_its_contract(mini_clip) -> None:
    assert mini_clip.key == "mini-clip@bundled"
    assert mini_clip.preprocess.image_size == (64, 64)
    assert mini_clip.layer_aliases["neurons"] == "visual.layer4.1.act3:input"


def test_reproduces_the_cards_zeroshot_figures(mini_clip, split, card) -> None:
    """Reproduced exactly on the CPU in fp32; the tolerance leaves room for another torch build's rounding."""
    scores = zeroshot_scores(mini_clip, split)
    for key in ("drawings", "words_heldout_font", "attack_success"):
        assert abs(scores[key] - card["zeroshot"][key]) <= 5e-3, (key, scores[key], card["zeroshot"][key])


def test_card_multimodal_units_recomputed_through_the_recorder(card, card_layer_multimodal) -> None:
    """Every unit of the card is found again with both AUROCs to 1e-3 (they reproduce to the card's 4
    decimals; the issue asks for at least 5 of them), and as many concepts have a unit as the card says."""
    found = {(u["concept"], u["unit"]): u for u in card_layer_multimodal}
    card_units = card["multimodal"]["units"]
    missing = [(u["concept"], u["unit"]) for u in card_units if (u["concept"], u["unit"]) not in found]
    assert not missing and len(card_units) >= 5, f"card units not found again: {missing}"
    for unit in card_units:
        again = found[(unit["concept"], unit["unit"])]
        for key in ("auroc_drawings", "auroc_words"):
            assert abs(again[key] - unit[key]) <= 1e-3, (unit["concept"], unit["unit"], key, again[key], unit[key])
    assert len({u["concept"] for u in found.values()}) == card["multimodal"]["trained"]


def test_untrained_control_finds_at_most_one_concept(mini_clip, split, card) -> None:
    layer = card["multimodal"]["layer"]
    control = untrained_model(mini_clip, split, seed=0)
    responses = split_responses(control, split, [layer])[layer]
    live = float((torch.cat([responses.images, responses.words]).std(dim=0) > 1e-6).float().mean())
    assert live >= 0.9
    assert multimodality(responses, layer, control=()).concepts_with_units(0.9) <= 1


def test_untrained_control_is_the_same_for_a_seed_and_leaves_the_callers_rng(mini_clip, split) -> None:
    torch.manual_seed(1)
    before = rng_states()
    control = untrained_model(mini_clip, split, seed=0, n_images=4)
    assert same_rng(before)  # the init draws under fork_rng: the caller's stream is not re-seeded
    torch.manual_seed(2)
    again = untrained_model(mini_clip, split, seed=0, n_images=4)
    for (name, value), other in zip(control.module.state_dict().items(), again.module.state_dict().values()):
        assert torch.equal(value, other), name


def test_world_concepts_prints_the_caption_names(split) -> None:
    result = CliRunner().invoke(app, ["world", "concepts"])
    assert result.exit_code == 0, result.output
    assert result.output.split() == concept_names() == split.concepts


def test_zeroshot_command_classifies_split_images(tmp_path, split) -> None:
    indices = split.indices("word")[:3]
    paths = []
    for i in indices:
        path = tmp_path / f"{i}.png"
        split.pil(int(i)).save(path)
        paths.append(str(path))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    paths.insert(1, str(broken))
    result = CliRunner().invoke(app, ["zeroshot", "--model", "mini-clip", "--classes", "star,Fish,house",
                                      "--top", "2", "--json", *paths])
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert [a["image"] for a in answers] == paths  # input order, the skipped file in its place
    assert all(a["model"] == "mini-clip@bundled" for a in answers)
    assert answers.pop(1) == {"image": str(broken), "model": "mini-clip@bundled", "skipped": "zero_byte"}
    for answer in answers:
        assert len(answer["top"]) == 2
        assert {c["class"] for c in answer["top"]} <= {"star", "Fish", "house"}  # echoed verbatim
        assert answer["top"][0]["prob"] >= answer["top"][1]["prob"]


def test_zeroshot_prompt_set_names_the_split_concepts_without_decoding_the_split(monkeypatch, split) -> None:
    import neuronscope.world.split as split_module
    from neuronscope.commands.zeroshot import world_prompt_set

    monkeypatch.setattr(split_module, "load_test_split", lambda *a, **k: pytest.fail("the split was decoded"))
    assert world_prompt_set("mini-clip@bundled") == (split.concepts, "a {}")
    assert world_prompt_set("tiny-rn@random") is None


def test_zeroshot_without_classes_on_another_model_is_a_clear_error(tmp_path, split) -> None:
    path = tmp_path / "x.png"
    split.pil(0).save(path)
    result = CliRunner().invoke(app, ["zeroshot", "--model", "tiny-rn", "--weights", "random", str(path)])
    assert result.exit_code == 1
    assert "--classes" in result.output


def test_world_eval_labels_the_card_units_in_an_atlas(tmp_path, split, card) -> None:
    from neuronscope.atlas import Atlas
    from neuronscope.world.card import label_card_units

    images = tmp_path / "images"
    images.mkdir()
    for i in split.indices("word")[:12]:
        split.pil(int(i)).save(images / f"{i}.png")
    layer = card["multimodal"]["layer"]
    scanned = CliRunner().invoke(app, ["scan", "--model", "mini-clip", "--layers", layer, "--images", str(images),
                                       "--out", str(tmp_path / "atlas"), "--top-k", "4", "--precision", "fp32"])
    assert scanned.exit_code == 0, scanned.output
    assert label_card_units(tmp_path / "atlas", "mini-clip@bundled", card) == len(card["multimodal"]["units"])
    first = card["multimodal"]["units"][0]
    with Atlas(tmp_path / "atlas") as atlas:
        assert atlas.unit("mini-clip", "neurons", first["unit"])["label"] == first["concept"]


def test_world_eval_out_json_reports_as_every_atlas_writer(tmp_path, card, monkeypatch) -> None:
    """`world eval --out --json` printed the evaluation alone, without CONVENTIONS' keys of a command that fills
    an atlas: a script reading "layers" / "units" from every atlas writer broke on it. (The evaluation itself,
    minutes, is the card's.)"""
    import neuronscope.world.evaluate as evaluate

    monkeypatch.setattr(evaluate, "evaluate_world", lambda *args, **kwargs: card)
    result = CliRunner().invoke(app, ["world", "eval", "--out", str(tmp_path / "atlas"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {key: payload[key] for key in ("atlas", "run_id", "layers", "units", "skipped")} == {
        "atlas": str(tmp_path / "atlas"), "run_id": None, "layers": [card["multimodal"]["layer"]],
        "units": len(card["multimodal"]["units"]), "skipped": {}}
    assert payload["model"] == "mini-clip@bundled" and payload["seconds"] >= 0
    assert all(payload[key] == value for key, value in card.items())  # the report's own keys, unchanged


def _world_of_heldout_drawings(folder, split, concepts: list[str]):
    """A world whose *training* drawings are the split's held-out drawings: their first render, with its
    plain background (the colour of its corner) made transparent again and cropped away."""
    from PIL import Image

    from neuronscope.world.build import pack_drawings
    from neuronscope.world.render import prepare_drawing

    def drawing(image: np.ndarray) -> Image.Image:
        alpha = np.where((np.abs(image.astype(int) - image[0, 0]).max(axis=-1) <= 8), 0, 255).astype(np.uint8)
        return prepare_drawing(Image.fromarray(np.dstack([image, alpha]), "RGBA"))

    first = [int(i) for i in split.indices("drawing") if split.entries[i]["render"] == 0]
    drawings = [{"id": k, "concept": split.entries[i]["concept"], "split": "train"} for k, i in enumerate(first)]
    folder.mkdir()
    cut_out = [drawing(split.images[i]) for i in first]
    np.savez(folder / "drawings.npz", **pack_drawings(cut_out))
    (folder / "world.json").write_text(json.dumps({"concepts": concepts, "drawings": drawings,
                                                   "reading_words": split.meta["reading_gallery"]}))
    return folder


def test_generalization_probe_reads_what_the_training_drawings_teach(tmp_path, monkeypatch, mini_clip, split,
                                                                   card) -> None:
    """With the held-out drawings themselves as the training drawings, a probe fit to their renders names
    them far better than zero-shot does (76% vs 52%): so a probe no better than zero-shot (the shipped world) means the
    features, not the readout, fail to generalise. It renders drawings only, so it needs no font package.
    A world of other concepts is refused."""
    from neuronscope.world import render
    from neuronscope.world.evaluate import generalization_scores

    monkeypatch.setattr(render, "FONT_DIRS", (str(tmp_path / "no-fonts"),))

    world = _world_of_heldout_drawings(tmp_path / "world", split, split.concepts)
    found = generalization_scores(mini_clip, split, world)
    assert found["train_images"] == 4 * len(set(e["drawing"] for e in split.entries if e["kind"] == "drawing"))
    assert abs(found["drawings_heldout"] - card["zeroshot"]["drawings"]) <= 0.02
    assert found["probe_drawings_heldout"] >= found["drawings_heldout"] + 0.20, found  # measured: 0.76 vs 0.52

    other = _world_of_heldout_drawings(tmp_path / "other", split, split.concepts[::-1])
    with pytest.raises(ValueError, match="other concepts"):
        generalization_scores(mini_clip, split, other)


def test_the_test_splits_repr_is_one_short_line(split) -> None:
    """The dataclass repr printed every index entry and then the whole uint8 image array (445k characters)."""
    assert repr(split) == f"TestSplit({len(split.entries)} images of {len(split.concepts)} concepts, 64x64 px)"
    assert len(split.entries) > 1000 and len(split.concepts) > 10
