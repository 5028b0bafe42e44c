"""Multimodality scores: the criterion, labelled image sources, the measurement on a model, the atlas, the CLI."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zlib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from neuronscope.analysis.multimodality import NO_CONCEPT, ConceptResponses, Multimodality, multimodality
from neuronscope.atlas import Atlas
from neuronscope.cli import app
from neuronscope.errors import NeuronscopeError
from neuronscope.probing.multimodal import labelled_images, measure_multimodality
from neuronscope.probing.multimodal_store import LABEL_SOURCE, measure_multimodality_into
from neuronscope.probing.raster import RasterSettings
from tests.helpers import noise

#: The held-out font families of the mini CLIP's world: words it never read in training.
HELDOUT_FONTS = RasterSettings(fonts=("liberation/LiberationSerif-Regular.ttf", "freefont/FreeSerif.ttf"))


def _responses(per_concept: int = 6) -> ConceptResponses:
    """Unit 0 answers concept 2 seen and read; unit 1 only sees concept 1; unit 2 sees 0 but reads 3."""
    labels = torch.arange(4).repeat_interleave(per_concept)
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(len(labels), 3, generator=generator) * 0.1
    words = torch.rand(len(labels), 3, generator=generator) * 0.1
    images[labels == 2, 0] += 1.0
    words[labels == 2, 0] += 1.0
    images[labels == 1, 1] += 1.0
    images[labels == 0, 2] += 1.0
    words[labels == 3, 2] += 1.0
    return ConceptResponses(images, labels, words, labels.clone(), ("a", "b", "c", "d"))


def test_a_unit_is_multimodal_only_when_it_sees_and_reads_the_same_concept() -> None:
    result = multimodality(_responses(), "layer")
    assert result.is_multimodal().tolist() == [True, False, False]
    assert result.unit(0) == {"unit": 0, "concept": "c", "score": 1.0, "auroc_images": 1.0, "auroc_words": 1.0,
                              "word_concept": "c", "threshold": 0.9, "multimodal": True}
    # the record's verdict (the atlas's, torch-free) and the tensors' agree on every unit and threshold
    for threshold in (0.5, 0.9, 1.0):
        assert [result.unit(u, threshold)["multimodal"] for u in range(3)] == result.is_multimodal(threshold).tolist()
    assert result.unit(1)["auroc_images"] == 1.0 and result.unit(1)["score"] < 0.9  # sees, does not read
    assert result.unit(2)["concept"] == "a" and result.unit(2)["word_concept"] == "d"
    assert result.concepts_with_units() == 1
    assert [r["unit"] for r in result.units()] == [0] and [r["concept"] for r in result.best_units()] == ["c"]


def test_a_concept_without_words_gives_chance_not_nan() -> None:
    responses = _responses()
    keep = responses.word_labels != 2
    result = multimodality(ConceptResponses(responses.images, responses.image_labels, responses.words[keep],
                                            responses.word_labels[keep], responses.concepts))
    assert result.auroc_words[0] == 0.5 and not result.is_multimodal()[0]


def test_scores_round_trip_through_json() -> None:
    result = multimodality(_responses(), "layer")
    again = Multimodality.from_dict(json.loads(json.dumps(result.to_dict(0.8))))
    assert [again.unit(u) for u in range(3)] == [result.unit(u) for u in range(3)]


# ---------------------------------------------------------------------------- labelled sources


def test_folders_name_the_concepts_and_the_rest_is_counted(tmp_path: Path) -> None:
    for concept, count in (("cat", 5), ("dog", 4), ("owl", 1)):
        _images(tmp_path / "animals" / concept, count)
    noise().save(tmp_path / "top.png")
    images = labelled_images([str(tmp_path)])
    assert images.concepts == ("cat", "dog")  # the folder's last name names the concept
    assert images.labels.tolist() == [0] * 5 + [1] * 4
    assert images.left_out == {"no category": 1, "fewer than 4 images in their concept": 1}
    chosen = labelled_images([str(tmp_path)], ["dog", "owl"])
    assert chosen.concepts == ("dog", "owl") and chosen.left_out["not one of the concepts asked for"] == 5


def test_two_folders_that_would_share_a_name_are_refused(tmp_path: Path) -> None:
    for thing in ("star", "clock"):
        for place in ("indoor", "outdoor"):
            _images(tmp_path / thing / place, 4)
    with pytest.raises(NeuronscopeError, match=r"2 concept name\(s\) would pool different categories \('indoor': "
                                               r"clock/indoor, star/indoor; 'outdoor': clock/outdoor, star/outdoor\)"):
        labelled_images([str(tmp_path)])  # every collision, so that one --names file mends them all
    names = {"star/indoor": "star inside", "clock/indoor": "clock inside", "star/outdoor": "star outside",
             "clock/outdoor": "clock outside"}
    assert labelled_images([str(tmp_path)], names=names).concepts == ("clock inside", "clock outside",
                                                                      "star inside", "star outside")
    with pytest.raises(NeuronscopeError, match="pool"):  # two categories named alike by --names
        labelled_images([str(tmp_path)], names={**names, "clock/indoor": "star inside"})


def test_names_turn_category_ids_into_words(tmp_path: Path) -> None:
    for synset in ("n01440764", "n02102040", "n03000134"):
        _images(tmp_path / "val" / synset, 4)
    names = tmp_path / "names.tsv"
    names.write_text("# ImageNet\nn01440764\ttench\nn02102040\tEnglish springer\n")
    images = labelled_images([str(tmp_path / "val")], names={"n01440764": "tench", "n02102040": "English springer"})
    assert images.concepts == ("English springer", "n03000134", "tench")
    result = CliRunner().invoke(app, ["multimodal", "--model", "tiny-rn", "--weights", "random", "--names", str(names),
                                      "--classes", "tench,English springer", "--sizes", "0.8", "--positions",
                                      "0.5:0.5", "--json", "--images", str(tmp_path / "val")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["concepts"] == ["tench", "English springer"]
    names.write_text("n01440764 tench\n")
    bad = CliRunner().invoke(app, ["multimodal", "--model", "tiny-rn", "--names", str(names), "--images",
                                   str(tmp_path / "val")])
    assert bad.exit_code == 1 and "line 1" in bad.output and "category<TAB>name" in bad.output


def test_a_tar_shard_index_names_the_concepts(tmp_path: Path) -> None:
    shard = tmp_path / "shard.tar"
    index = {"images": [{"file": f"{i}.png", "category": "round" if i < 4 else "square"} for i in range(8)]}
    with tarfile.open(shard, "w") as tar:
        for name, data in [("index.json", json.dumps(index).encode()),
                           *((f"{i}.png", _png(i)) for i in range(8))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    images = labelled_images([str(shard)])
    assert images.concepts == ("round", "square") and images.labels.tolist() == [0] * 4 + [1] * 4


def _images(folder: Path, count: int) -> None:
    """``count`` noise PNGs right in ``folder``, none the same as another folder's (a copy is a duplicate)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        noise(seed=index + 100 * zlib.crc32(folder.name.encode())).save(folder / f"{index}.png")


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    noise(seed=seed).save(buffer, "PNG")
    return buffer.getvalue()


def test_one_concept_or_a_missing_one_is_refused_with_what_to_do(tmp_path: Path) -> None:
    _images(tmp_path / "cat", 3)
    with pytest.raises(NeuronscopeError, match="folder per concept"):
        labelled_images([str(tmp_path)])
    _images(tmp_path / "dog", 3)
    with pytest.raises(NeuronscopeError, match="no images of fox"):
        labelled_images([str(tmp_path)], ["cat", "fox"])


# ---------------------------------------------------------------------------- on the mini CLIP


@pytest.fixture(scope="module")
def drawings_folder(tmp_path_factory, test_split) -> Path:
    """The split's held-out drawings (one render each) as a folder per concept: what a user brings."""
    root = tmp_path_factory.mktemp("drawings")
    for index in test_split.indices("drawing"):
        entry = test_split.entries[index]
        if entry["render"] == 0:
            (root / entry["concept"]).mkdir(exist_ok=True)
            test_split.pil(int(index)).save(root / entry["concept"] / entry["file"])
    return root


def test_the_bundled_measurement_finds_the_cards_units(mini_clip_fp32) -> None:
    card = json.loads((Path(__file__).parents[1] / "src/neuronscope/data/mini_clip/mini_clip_card.json").read_text())
    measured = measure_multimodality(mini_clip_fp32, card["multimodal"]["layer"], None)
    result, threshold = measured.scores, card["multimodal"]["threshold"]
    assert measured.skipped == {} and result.concepts_with_units(threshold) == card["multimodal"]["trained"]
    # the label-shuffle control is the card's own derangement control: the same seeds, the same counts
    assert result.chance(threshold)["concepts"] == card["multimodal"]["shuffled_seeds"]
    for unit in card["multimodal"]["units"]:
        record = result.unit(unit["unit"])
        assert record["concept"] == unit["concept"] and record["word_concept"] == unit["concept"]
        assert abs(record["auroc_images"] - unit["auroc_drawings"]) <= 1e-3
        assert abs(record["auroc_words"] - unit["auroc_words"]) <= 1e-3


def test_drawings_a_user_brings_find_the_cards_units_again(mini_clip_fp32, drawings_folder, test_split) -> None:
    """From a plain folder per concept and concept names rastered in fonts the model never read: every card
    unit answers its concept most among the drawings, and most pass the whole criterion (the card's needs
    both modalities on the split's own renders; one render and unseen fonts are harder)."""
    card = json.loads((Path(__file__).parents[1] / "src/neuronscope/data/mini_clip/mini_clip_card.json").read_text())
    images = labelled_images([str(drawings_folder)])
    assert sorted(images.concepts) == sorted(test_split.concepts)
    result = measure_multimodality(mini_clip_fp32, "neurons", images, settings=HELDOUT_FONTS, batch_size=64).scores
    records = [result.unit(u["unit"]) for u in card["multimodal"]["units"]]
    assert [r["concept"] for r in records] == [u["concept"] for u in card["multimodal"]["units"]]
    assert all(r["auroc_images"] >= 0.85 for r in records)
    assert sum(result.is_multimodal()[u["unit"]].item() for u in card["multimodal"]["units"]) >= 7


# ---------------------------------------------------------------------------- the atlas


def test_stored_scores_read_back_per_unit_and_label_only_unlabelled_units(tmp_path: Path, mini_clip_fp32) -> None:
    with Atlas(tmp_path / "atlas") as atlas:
        layer = mini_clip_fp32.resolve_layer("neurons")
        atlas.register_layer(mini_clip_fp32.key, layer, aliases=["neurons"], units=512, grid=(2, 2))
        atlas.set_label(mini_clip_fp32.key, layer, 473, "my star")
        run = measure_multimodality_into(atlas, mini_clip_fp32, "neurons", None, label=True)
        assert atlas.run(run.run_id)["status"] == "finished"
        for unit in (473, 18, 0):
            stored = atlas.unit(None, "neurons", unit)["multimodality"]
            expected = run.measurement.scores.unit(unit)
            assert {k: stored[k] for k in expected if k != "unit"} == {k: v for k, v in expected.items() if k != "unit"}
            assert stored["multimodal"] == bool(run.measurement.scores.is_multimodal()[unit])
        assert atlas.label(mini_clip_fp32.key, layer, 473) == "my star"  # a user's label is kept
        assert 473 not in run.labelled and 18 in run.labelled
        assert atlas.label(mini_clip_fp32.key, layer, 18) == "puzzle"
        assert atlas.db.execute("SELECT source FROM labels WHERE unit = 18").fetchone()["source"] == LABEL_SOURCE
        assert set(run.labelled) == {r["unit"] for r in run.measurement.scores.units()} - {473}


def test_a_killed_measurement_resumes_from_its_checkpoint(tmp_path: Path, tiny_rn) -> None:
    for concept in ("a", "b", "c"):
        _images(tmp_path / "images" / concept, 4)
    images = labelled_images([str(tmp_path / "images")])
    settings = RasterSettings(sizes=(0.8,), positions=((0.5, 0.5),))

    class Killed(Exception):
        pass

    def kill_after_two(state) -> None:
        if state.done >= 8:
            raise Killed

    with Atlas(tmp_path / "atlas") as atlas:
        with pytest.raises(Killed):
            measure_multimodality_into(atlas, tiny_rn, "neurons", images, settings=settings, batch_size=4,
                                       checkpoint_every=4, on_batch=kill_after_two)
        (interrupted,) = atlas.runs()
        assert interrupted["status"] == "interrupted"
        said = []
        resumed = measure_multimodality_into(atlas, tiny_rn, "neurons", images, settings=settings, batch_size=4,
                                             on_resume=lambda done, total: said.append((done, total)))
        assert resumed.run_id == interrupted["id"] and resumed.resumed_from == 8 and said == [(8, 12)]
        assert atlas.run(resumed.run_id)["images"] == 12  # the images measured
    whole = measure_multimodality(tiny_rn, "neurons", images, settings=settings, batch_size=4).scores
    assert torch.equal(resumed.measurement.scores.concept, whole.concept)
    assert torch.allclose(resumed.measurement.scores.auroc_images, whole.auroc_images)


# ---------------------------------------------------------------------------- the command


def test_cli_measures_stores_and_show_prints_it(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "atlas"
    result = runner.invoke(app, ["multimodal", "--out", str(out), "--label", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["concepts_with_units"] == 11 and report["units"] == 512
    scores = [u["score"] for u in report["multimodal_units"]]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.9
    assert set(report["labelled"]) == {u["unit"] for u in report["multimodal_units"]}
    shown = runner.invoke(app, ["show", str(out), "--unit", "473"])
    assert "multimodal: 'star'" in shown.stdout and '"star"' in shown.stdout


def test_cli_refuses_label_without_an_atlas_and_concepts_without_images() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["multimodal", "--label"])
    assert result.exit_code != 0 and "--out ATLAS" in result.output
    for option in ("--classes", "--names", "--per-concept"):
        result = runner.invoke(app, ["multimodal", option, "cat,dog" if option != "--per-concept" else "8"])
        assert result.exit_code != 0 and "give the images too" in result.output


# ---------------------------------------------------------------------------- review findings


def test_a_unit_that_answers_every_concept_alike_has_no_concept() -> None:
    responses = _responses()
    images, words = responses.images.clone(), responses.words.clone()
    images[:, 1] = 0.0  # dead
    words[:, 1] = 0.0
    result = multimodality(ConceptResponses(images, responses.image_labels, words, responses.word_labels,
                                            responses.concepts))
    assert int(result.concept[1]) == NO_CONCEPT and result.unit(1)["concept"] is None
    assert result.unit(1)["word_concept"] is None  # not the first concept by a tie
    assert result.score[1] == 0.5 and not result.is_multimodal()[1]
    assert result.to_dict()["concept"][1] == -1


def test_with_few_images_chance_passes_units_and_the_control_says_how_many() -> None:
    """Noise units, 10 concepts of 2 images: the concept is chosen and scored on the same images, so some pass;
    the label-shuffle control passes about as many, which is what the command prints beside the count."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(2)
    word_labels = torch.arange(10).repeat_interleave(9)
    word_effect = torch.randn(10, 2560, generator=generator)[word_labels]  # a word's renders share its effect
    responses = ConceptResponses(torch.randn(20, 2560, generator=generator), labels,
                                 word_effect + 0.1 * torch.randn(90, 2560, generator=generator), word_labels,
                                 tuple("abcdefghij"))
    result = multimodality(responses)
    found, chance = int(result.is_multimodal().sum()), result.chance()["units"]
    assert found > 10 and len(chance) == 3 and min(chance) > found / 4


def _folders(root: Path, concepts: dict[str, int]) -> Path:
    for concept, count in concepts.items():
        _images(root / concept, count)
    return root


def test_concept_names_the_fonts_cannot_draw_are_refused_before_any_image_is_read(tmp_path: Path, tiny_rn) -> None:
    images = labelled_images([str(_folders(tmp_path / "cjk", {"星": 4, "flower": 4, "planet": 4}))])
    with Atlas(tmp_path / "atlas") as atlas, pytest.raises(NeuronscopeError, match="cannot be drawn.*--names"):
        measure_multimodality_into(atlas, tiny_rn, "neurons", images)
    with Atlas(tmp_path / "atlas") as atlas:
        assert atlas.runs() == []


def test_a_concept_without_readable_images_is_left_out(tmp_path: Path, tiny_rn) -> None:
    root = _folders(tmp_path / "images", {"cat": 4, "dog": 4, "owl": 4})
    (root / "ghost").mkdir()
    for index in range(4):
        (root / "ghost" / f"{index}.png").write_bytes(b"")
    measured = measure_multimodality(tiny_rn, "neurons", labelled_images([str(root)]),
                                     settings=RasterSettings(sizes=(0.8,), positions=((0.5, 0.5),)))
    assert measured.dropped == ("ghost",) and measured.scores.concepts == ("cat", "dog", "owl")
    assert measured.skipped and sum(measured.skipped.values()) == 4


def test_a_rerun_at_a_stricter_threshold_leaves_no_stale_labels(tmp_path: Path, mini_clip_fp32) -> None:
    with Atlas(tmp_path / "atlas") as atlas:
        first = measure_multimodality_into(atlas, mini_clip_fp32, "neurons", None, label=True)
        second = measure_multimodality_into(atlas, mini_clip_fp32, "neurons", None, label=True, threshold=0.97)
        layer = mini_clip_fp32.resolve_layer("neurons")
        labelled = {unit for unit in range(512) if atlas.label(mini_clip_fp32.key, layer, unit) is not None}
    assert second.run_id != first.run_id and len(second.labelled) < len(first.labelled)
    assert labelled == set(second.labelled) == {r["unit"] for r in second.measurement.scores.units(0.97)}


def test_a_checkpoint_taken_before_any_image_was_read_resumes(tmp_path: Path, tiny_rn) -> None:
    root = _folders(tmp_path / "images", {"a": 4, "b": 4})
    for index in range(4):  # the listing starts with unreadable files: the first checkpoint holds no rows
        (root / "a" / f"0{index}.png").write_bytes(b"")
    settings = RasterSettings(sizes=(0.8,), positions=((0.5, 0.5),))

    def kill(state) -> None:
        if state.done >= 4:
            raise KeyboardInterrupt

    images = labelled_images([str(root)])
    with Atlas(tmp_path / "atlas") as atlas:
        with pytest.raises(KeyboardInterrupt):
            measure_multimodality_into(atlas, tiny_rn, "neurons", images, settings=settings, batch_size=4,
                                       checkpoint_every=4, on_batch=kill)
        run = measure_multimodality_into(atlas, tiny_rn, "neurons", images, settings=settings, batch_size=4)
    assert run.resumed_from == 4 and run.measurement.skipped == {"zero_byte": 4}


def test_a_changed_source_abandons_the_interrupted_run_and_its_checkpoint(tmp_path: Path, tiny_rn) -> None:
    root = _folders(tmp_path / "images", {"a": 4, "b": 4, "c": 4})
    settings = RasterSettings(sizes=(0.8,), positions=((0.5, 0.5),))

    def kill(state) -> None:
        if state.done >= 8:
            raise KeyboardInterrupt

    with Atlas(tmp_path / "atlas") as atlas:
        with pytest.raises(KeyboardInterrupt):
            measure_multimodality_into(atlas, tiny_rn, "neurons", labelled_images([str(root)]), settings=settings,
                                       batch_size=4, checkpoint_every=4, on_batch=kill)
        assert atlas.checkpoints.files("multimodality-")
        noise(seed=99).save(root / "a" / "new.png")  # a source with one file more
        run = measure_multimodality_into(atlas, tiny_rn, "neurons", labelled_images([str(root)]), settings=settings,
                                         batch_size=4)
        statuses = [r["status"] for r in atlas.runs()]
        assert run.resumed_from == 0 and statuses == ["abandoned", "finished"]
        assert atlas.checkpoints.files("multimodality-") == []


def test_the_recorded_command_names_the_images_and_reruns_the_same_run(tmp_path: Path) -> None:
    root = _folders(tmp_path / "images", {"a": 6, "b_c": 4})
    (root / "a" / "broken.png").write_bytes(b"")
    args = ["multimodal", "--model", "tiny-rn", "--weights", "random", "--images", str(root), "--sizes", "0.8",
            "--positions", "0.5:0.5", "--per-concept", "5", "--seed", "1", "--out", str(tmp_path / "atlas"), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # the images measured, not the entries listed (one of the five sampled "a" files may be the broken one)
    assert report["images"] == sum(report["images_per_concept"]) == 9 - report["skipped"].get("zero_byte", 0)
    assert "1 concept name(s) read as folder names, not words (b_c)" in result.stderr
    with Atlas(tmp_path / "atlas") as atlas:
        (run,) = atlas.runs()
    # an absolute path by its name, as every recorded command (an atlas holds no absolute paths)
    assert "--images images " in run["command"] and "--top" not in run["command"]
    assert "--per-concept 5" in run["command"]


def test_the_card_measurement_records_no_raster_flags_it_did_not_use(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["multimodal", "--out", str(tmp_path / "atlas")])
    assert result.exit_code == 0, result.output
    with Atlas(tmp_path / "atlas") as atlas:
        (run,) = atlas.runs()
    assert not {"--sizes", "--positions", "--fonts"} & set(run["command"].split()), run["command"]


def test_the_card_measurement_refuses_what_it_would_ignore() -> None:
    runner = CliRunner()
    for extra, message in ((["--sizes", "0.5"], "--sizes"), (["--precision", "bf16"], "fp32")):
        result = runner.invoke(app, ["multimodal", *extra])
        assert result.exit_code == 1 and message in result.output


# ---------------------------------------------------------------------------- scale


def test_a_sample_per_concept_is_seeded_and_counts_what_it_leaves(tmp_path: Path) -> None:
    """A collection too large to hold in memory is measured on a sample: at most N images of each concept, the
    same for the same seed, listing order kept, the rest counted."""
    root = _folders(tmp_path / "images", {"cat": 9, "dog": 5, "owl": 4})
    sample = labelled_images([str(root)], per_concept=5, seed=3)
    assert torch.bincount(torch.from_numpy(sample.labels)).tolist() == [5, 5, 4]
    assert sample.left_out == {"beyond 5 images of their concept": 4}
    names = [entry.name for entry in sample.entries]
    assert names == sorted(names, key=[e.name for e in labelled_images([str(root)]).entries].index)
    assert names == [e.name for e in labelled_images([str(root)], per_concept=5, seed=3).entries]
    cats = {tuple(e.name for e in labelled_images([str(root)], per_concept=5, seed=seed).entries[:5])
            for seed in range(4)}
    assert len(cats) > 1  # another seed, another sample
    with pytest.raises(NeuronscopeError, match="too few: keep at least 4"):
        labelled_images([str(root)], per_concept=2)


def test_a_measurement_that_would_not_fit_in_memory_is_refused_before_any_image_is_read(
        tmp_path: Path, tiny_rn, monkeypatch) -> None:
    import neuronscope.probing.multimodal as measuring
    from neuronscope.analysis.multimodality import RANK_BYTES, RANK_MEMORY

    root = _folders(tmp_path / "images", {"cat": 8, "dog": 8})
    units = tiny_rn.geometry(tiny_rn.resolve_layer("neurons")).units
    monkeypatch.setattr(measuring, "available_memory", lambda: 10 * units * (4 + RANK_BYTES))  # 5 images a concept
    with Atlas(tmp_path / "atlas") as atlas, pytest.raises(NeuronscopeError, match=(
            r"16 images x .* units need .* GiB for their responses and ranks, more than the .* GiB free here: "
            r"measure a sample of at most 5 images a concept \(--per-concept 5")):
        measure_multimodality_into(atlas, tiny_rn, "neurons", labelled_images([str(root)]))
    measured = measure_multimodality(tiny_rn, "neurons", labelled_images([str(root)], per_concept=5),
                                     settings=RasterSettings(sizes=(0.8,), positions=((0.5, 0.5),)))
    assert measured.scores.images_per_concept == (5, 5)
    # the ranks take at most RANK_MEMORY at once (blocks of units): past that, the responses decide
    class Million:  # a million images of two concepts, as listed
        concepts = ("cat", "dog")

        def __len__(self) -> int:
            return 10**6

    assert measuring._measurement_memory(10**6, units) == 4 * 10**6 * units + RANK_MEMORY
    monkeypatch.setattr(measuring, "available_memory", lambda: RANK_MEMORY + 4 * units * 2 * 50_000)
    with pytest.raises(NeuronscopeError, match=r"at most 50000 images a concept"):
        measuring._require_memory(Million(), units)


def test_auroc_blocks_follow_the_sample_count_and_give_the_same_scores(monkeypatch) -> None:
    import neuronscope.analysis.multimodality as scoring
    from neuronscope.analysis.selectivity import auroc_per_class as auroc

    assert scoring.units_per_block(1_000_000) == 10 and scoring.units_per_block(10**12) == 1
    whole = multimodality(_responses(), control=())
    calls = []
    monkeypatch.setattr(scoring, "units_per_block", lambda samples: 1)
    monkeypatch.setattr(scoring, "auroc_per_class", lambda *args: calls.append(args[0].shape) or auroc(*args))
    blocked = multimodality(_responses(), control=())
    assert calls == [(24, 1), (24, 1)] * 3  # images and words of each of the 3 units, one unit at a time
    assert torch.equal(whole.auroc_images, blocked.auroc_images) and torch.equal(whole.auroc_words, blocked.auroc_words)


def _stopped(atlas: Atlas, model, images, settings: RasterSettings, *, at: int, error: type[BaseException],
             checkpoint_every: int) -> None:
    """A measurement into ``atlas`` (batches of 4) that ``error`` stops once ``at`` entries are read."""
    def stop(state) -> None:
        if state.done >= at:
            raise error("stopped")

    with pytest.raises(error):
        measure_multimodality_into(atlas, model, "neurons", images, settings=settings, batch_size=4,
                                   checkpoint_every=checkpoint_every, on_batch=stop)


def test_a_file_filed_under_two_concepts_is_measured_once_also_after_a_resume(tmp_path: Path, tiny_rn) -> None:
    """A collection's symlinks and copies (openclipart files a drawing under two categories) made one image a
    positive of one concept and a negative of another in the same AUROC. As the scan does, a file whose content
    an earlier entry had is skipped as ``duplicate``: measured once, with the first listing's concept; a resumed
    run still knows the contents measured before its checkpoint."""
    root = _folders(tmp_path / "images", {"a": 4, "b": 4, "c": 4})
    shutil.copy(root / "a" / "0.png", root / "c" / "9.png")  # listed last: after the checkpoint below
    (root / "b" / "8.png").symlink_to(root / "a" / "1.png")
    settings = RasterSettings(sizes=(0.8,), positions=((0.5, 0.5),))
    images = labelled_images([str(root)])
    whole = measure_multimodality(tiny_rn, "neurons", images, settings=settings, batch_size=4)
    assert whole.skipped == {"duplicate": 2} and whole.scores.images_per_concept == (4, 4, 4)
    with Atlas(tmp_path / "atlas") as atlas:
        _stopped(atlas, tiny_rn, images, settings, at=8, error=RuntimeError, checkpoint_every=4)
        resumed = measure_multimodality_into(atlas, tiny_rn, "neurons", images, settings=settings, batch_size=4)
    assert resumed.resumed_from == 8 and resumed.measurement.skipped == {"duplicate": 2}
    assert torch.equal(resumed.measurement.scores.auroc_images, whole.scores.auroc_images)


def test_a_ctrl_c_keeps_the_images_read_since_the_last_checkpoint(tmp_path: Path, tiny_rn) -> None:
    root = _folders(tmp_path / "images", {"a": 4, "b": 4, "c": 4})
    settings = RasterSettings(sizes=(0.8,), positions=((0.5, 0.5),))
    images = labelled_images([str(root)])
    with Atlas(tmp_path / "atlas") as atlas:
        _stopped(atlas, tiny_rn, images, settings, at=8, error=KeyboardInterrupt, checkpoint_every=1000)
        resumed = measure_multimodality_into(atlas, tiny_rn, "neurons", images, settings=settings, batch_size=4)
    assert resumed.resumed_from == 8  # no checkpoint was due: the Ctrl-C saved one
    whole = measure_multimodality(tiny_rn, "neurons", images, settings=settings, batch_size=4).scores
    assert torch.equal(resumed.measurement.scores.auroc_images, whole.auroc_images)


def test_a_checkpoint_from_before_duplicates_were_told_apart_starts_over(tmp_path: Path, tiny_rn, caplog) -> None:
    """Its parts hold no content keys: resumed, the duplicates on either side of it would be measured twice
    under the same run (a review's resumed run had 4, 5, 5 images a concept instead of 4, 4, 4)."""
    root = _folders(tmp_path / "images", {"a": 4, "b": 4, "c": 4})
    settings = RasterSettings(sizes=(0.8,), positions=((0.5, 0.5),))
    images = labelled_images([str(root)])
    with Atlas(tmp_path / "atlas") as atlas:
        _stopped(atlas, tiny_rn, images, settings, at=8, error=RuntimeError, checkpoint_every=4)
        for path in atlas.checkpoints.files():  # as an older neuronscope wrote them
            arrays, meta = atlas.load_checkpoint(path.stem)
            atlas.save_checkpoint(path.stem, {k: v for k, v in arrays.items() if k != "keys"}, meta)
        with caplog.at_level("WARNING", logger="neuronscope.probing.multimodal_store"):
            run = measure_multimodality_into(atlas, tiny_rn, "neurons", images, settings=settings, batch_size=4)
    assert run.resumed_from == 0 and "starts over" in caplog.text
