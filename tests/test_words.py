"""Rastered-word probing, image-based word embeddings, vocabularies and the paper reproduction.

Behaviour is tested on the bundled mini CLIP: over english-10k plus the
world's concepts (one size, one position: ~10k images a network), the median
rank of each card unit's concept among its rastered words is within the top
2%, with an untrained network of the same architecture reported beside it.
Real architectures run with random weights only for plumbing.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from neuronscope.atlas import Atlas
from neuronscope.cli import app
from neuronscope.errors import NeuronscopeError, UnitsError
from neuronscope.models import DEFAULT, load_model
from neuronscope.models.bundled import bundled_dir
from neuronscope.probing.embedding import LexicalRule, WordEmbedding, lexical_units, shared_affix
from neuronscope.probing.paper import (PAPER_UNITS, compare_with_paper, paper_named_units, paper_top1_words,
                                       paper_top_words)
from neuronscope.probing.raster import RasterSettings, render_word_images, resolve_font
from neuronscope.probing.vocab import VOCABULARIES, VocabularyError, load_vocabulary
from neuronscope.probing.words import WordProbe, _reduce_word_images, probe_words
from neuronscope.world.concepts import concept_names
from neuronscope.world.evaluate import untrained_model
from neuronscope.world.split import load_test_split
from tests.helpers import rng_states, same_rng, training

runner = CliRunner()
#: One size and one position keep the mini CLIP's 10k-word probe near 30 s a network here.
QUICK = RasterSettings(sizes=(0.8,), positions=((0.5, 0.5),))


# --------------------------------------------------------------------------- vocabularies


def test_builtin_vocabularies_load_offline() -> None:
    english = load_vocabulary("english-10k")
    assert len(english) == 10_000 == len(set(english))
    assert english[:3] == ["the", "to", "and"] and all(w.isalpha() and w.isascii() for w in english)
    assert {"France", "Japan", "Brazil"} <= set(load_vocabulary("countries"))
    cities = load_vocabulary("cities")
    assert len(cities) == 1000 and "Tokyo" in cities[:50]
    emotions = load_vocabulary("emotions")
    assert emotions[:7] == ["happy", "sad", "disgusted", "angry", "fearful", "bad", "surprised"]
    assert {"lonely", "out of control", "awe"} <= set(emotions) and len(emotions) == len(set(emotions))
    assert {"red", "yellow", "blue"} <= set(load_vocabulary("colours"))
    assert set(VOCABULARIES) == {"english-10k", "countries", "cities", "emotions", "colours", "time", "art"}


def test_vocabulary_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# my words\nspider man\n\n  cat \ncat\nteddy bear\n", encoding="utf-8")
    assert load_vocabulary(str(path)) == ["spider man", "cat", "teddy bear"]
    with pytest.raises(VocabularyError, match="no vocabulary file"):
        load_vocabulary(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(VocabularyError, match="has no words"):
        load_vocabulary(tmp_path / "empty.txt")


# --------------------------------------------------------------------------- rendering and reduction


def _ink_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the dark pixels of an [H, W, 3] image."""
    rows, cols = np.nonzero(image.mean(axis=-1) < 128)
    return cols.min(), rows.min(), cols.max() + 1, rows.max() + 1


def test_sizes_are_fractions_of_the_width_and_positions_move_the_text() -> None:
    settings = RasterSettings(sizes=(0.7,), positions=((0.0, 0.0), (1.0, 1.0)))
    fonts = [resolve_font(f) for f in settings.fonts]
    shares = []
    for size in (64, 288):
        top_left, bottom_right = render_word_images("elephant", settings, size, fonts)
        left, top, right, _ = _ink_box(top_left)
        shares.append((right - left) / size)
        edge = 2 + 0.02 * size  # anti-aliased glyph edges fall under the ink threshold
        assert left <= edge and top <= 0.1 * size
        assert _ink_box(bottom_right)[2] >= size - edge and _ink_box(bottom_right)[3] >= 0.9 * size
    assert shares[0] == pytest.approx(0.7, abs=0.06) and shares[1] == pytest.approx(0.7, abs=0.03)


def test_per_word_reduction_is_max_over_positions_then_mean_over_sizes() -> None:
    settings = RasterSettings(sizes=(0.5, 0.9), positions=((0.1, 0.1), (0.5, 0.5), (0.9, 0.9)))
    # one word, one unit: size 0.5 gives 1, 5, 2 at the three positions; size 0.9 gives 3, 0, 1
    values = torch.tensor([1.0, 5.0, 2.0, 3.0, 0.0, 1.0]).view(6, 1)
    assert _reduce_word_images(values, settings).item() == pytest.approx((5.0 + 3.0) / 2)


# --------------------------------------------------------------------------- the mini CLIP


@pytest.fixture(scope="module")
def mini_clip_probes():
    """The card; english-10k + the world's concepts probed through the trained mini CLIP, and a seeded
    2,000 of those words + the concepts through an untrained one."""
    card = json.loads((bundled_dir() / "mini_clip_card.json").read_text())
    model = load_model("mini-clip", weights=DEFAULT, precision="fp32")
    words = list(dict.fromkeys(load_vocabulary("english-10k") + concept_names()))
    layer = card["multimodal"]["layer"]
    trained = probe_words(model, layer, words, settings=QUICK, batch_size=256, workers=1)
    # The control's figure is a rank share, so a seeded fifth of the vocabulary (plus the concepts) estimates
    # it at a fifth of the cost.
    rng = np.random.default_rng(0)
    sample = [words[i] for i in sorted(rng.choice(len(words), 2000, replace=False))]
    control = untrained_model(model, load_test_split(), seed=0)
    untrained = probe_words(control, layer, list(dict.fromkeys(sample + concept_names())), settings=QUICK,
                            batch_size=256, workers=1)
    return card, trained, untrained


def _median_rank_share(probe: WordProbe, card_units: list[dict]) -> float:
    """Median over card units of (rank of the unit's concept among its words) / vocabulary size."""
    return statistics.median(probe.rank(u["concept"], u["unit"]) / len(probe.words) for u in card_units)


def test_card_units_rank_their_concept_word_in_the_top_2_percent(mini_clip_probes, record_property) -> None:
    card, trained, untrained = mini_clip_probes
    units = card["multimodal"]["units"]
    trained_share = _median_rank_share(trained, units)
    untrained_share = _median_rank_share(untrained, units)
    record_property("median_rank_share_trained", trained_share)
    record_property("median_rank_share_untrained", untrained_share)
    print(f"median concept rank share: trained {trained_share:.2%} of {len(trained.words)} rastered words, "
          f"untrained {untrained_share:.2%} of {len(untrained.words)}")
    assert trained_share <= 0.02
    assert untrained_share > 0.1  # an untrained network does not read: its figure is near chance (50%)


def test_a_concept_word_finds_its_card_unit_among_the_layers_units(mini_clip_probes, record_property) -> None:
    """The other way round (``wordvec --units WORD``): the units a concept's rastered word stands out for, by
    z-score. The card unit's place among the 512 for its own concept word, median over the card's units, is in
    the top 5%; an untrained network's is not.

    Measured: places 1, 3, 12, 15, 42, 11, 8, 64, 17, 4, 8 (median 11, 2.1% of 512); untrained 177, 242, 123, 124,
    380, 142, 85, 345, 109, 25, 361 (median 142, 28%).
    """
    card, trained, untrained = mini_clip_probes
    units = card["multimodal"]["units"]

    def place(probe: WordProbe, unit: dict) -> int:
        ranked = WordEmbedding.from_probe(probe).top_units(unit["concept"], probe.units)
        return [entry["unit"] for entry in ranked].index(unit["unit"]) + 1

    trained_places = [place(trained, u) for u in units]
    untrained_places = [place(untrained, u) for u in units]
    record_property("concept_word_unit_places", trained_places)
    print(f"the card unit's place among 512 units for its concept word: trained {trained_places}, "
          f"untrained {untrained_places}")
    assert statistics.median(trained_places) <= 0.05 * trained.units
    assert statistics.median(untrained_places) > 0.15 * untrained.units


def test_top_units_rank_by_z_score_not_by_raw_response() -> None:
    responses = torch.tensor([[9.0, 1.0, 0.0], [10.0, 0.0, 0.0], [11.0, 0.0, 0.0], [10.5, 3.0, 0.0]])
    words = ["a", "b", "c", "spider"]
    top = WordEmbedding(words, responses).top_units("spider", 3)
    # unit 0 answers "spider" the most in absolute terms, but it is unit 1's top word by far
    assert [entry["unit"] for entry in top] == [1, 0, 2]
    assert top[0]["rank"] == 1 and top[1]["rank"] == 2 and top[2]["z"] == 0.0  # a constant unit: z 0
    masked = WordEmbedding(words, responses, mask_units=[1]).top_units("spider", 3)
    assert [entry["unit"] for entry in masked] == [0, 2]
    assert WordEmbedding(words, responses).top_units("SPIDER", 1)[0]["unit"] == 1  # else in lower case
    constant = torch.full((2000, 2), 3.3)  # float32 rounding leaves its mean a spread of ~1e-7: still z 0
    constant[:, 1] = torch.rand(2000, generator=torch.Generator().manual_seed(0))
    vocabulary = [f"w{i}" for i in range(2000)]
    assert WordEmbedding(vocabulary, constant, center=False).top_units("w7", 2)[1] == {"unit": 0, "z": 0.0,
                                                                                     "rank": 1}


def test_mean_subtraction_lowers_spurious_cosines(mini_clip_probes) -> None:
    _, trained, _ = mini_clip_probes
    raw = WordEmbedding.from_probe(trained, center=False)
    centred = WordEmbedding.from_probe(trained)
    rng = np.random.default_rng(0)
    pairs = [tuple(rng.choice(len(trained.words), 2, replace=False)) for _ in range(200)]
    raw_cos = [raw.cosine(trained.words[a], trained.words[b]) for a, b in pairs]
    centred_cos = [centred.cosine(trained.words[a], trained.words[b]) for a, b in pairs]
    print(f"mean cosine of 200 random word pairs: raw {statistics.mean(raw_cos):.3f}, "
          f"centred {statistics.mean(centred_cos):.3f}")
    # every rastered word is dark text on white: raw vectors share that, centred ones do not
    assert statistics.mean(raw_cos) > 0.25
    assert abs(statistics.mean(centred_cos)) < 0.05


def test_mean_subtraction_on_a_constructed_case() -> None:
    common = torch.tensor([10.0, 10.0, 10.0, 10.0])  # what every word shares
    responses = common + torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0],
                                       [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    words = ["terrorist", "muslims", "cat", "dog"]
    raw = WordEmbedding(words, responses, center=False)
    centred = WordEmbedding(words, responses)
    assert raw.cosine("terrorist", "muslims") > 0.95
    assert centred.cosine("terrorist", "muslims") < 0.0  # unrelated once the shared part is gone


# --------------------------------------------------------------------------- lexical units


def test_shared_affix_finds_prefixes_and_suffixes() -> None:
    assert shared_affix(["running", "jumping", "singing", "walking", "cat"]) == "-ing"
    assert shared_affix(["unhappy", "unkind", "unfair", "untie", "dog"]) == "un-"
    assert shared_affix(["spider", "web", "insect", "bug", "legs"]) is None


def test_masking_lexical_units_keeps_the_embedding_about_meaning() -> None:
    words = ["running", "jumping", "singing", "walking", "unhappy", "unkind", "unfair", "untrue",
             "sprint", "race", "song", "choir", "cat", "dog", "bird", "fish"]
    n = len(words)
    scores = torch.zeros(n, 4)
    for i, word in enumerate(words):
        scores[i, 0] = 3.0 if word.endswith("ing") else 0.0  # a spelling ("-ing") unit
        scores[i, 1] = 3.0 if word.startswith("un") else 0.0  # a spelling ("un-") unit
    scores[[words.index(w) for w in ("running", "sprint", "race")], 2] = 1.0  # a meaning unit: speed
    scores[[words.index(w) for w in ("singing", "song", "choir")], 3] = 1.0  # a meaning unit: song
    # A fourth word above the zeros: ties now list in vocabulary order, and the first zero word ("running")
    # would make unit 3's top 4 share "-ng" (topk's unspecified order happened to pick another).
    scores[words.index("bird"), 3] = 0.5
    rule = LexicalRule(top_k=4, min_share=0.75)
    assert lexical_units(words, scores, rule) == {0: "-ing", 1: "un-"}

    spelled = WordEmbedding(words, scores)
    assert spelled.nearest("running", k=1)[0][0] in {"jumping", "singing", "walking"}
    meaning = WordEmbedding(words, scores, mask_units=list(lexical_units(words, scores, rule)))
    assert meaning.units.tolist() == [2, 3]
    assert {w for w, _ in meaning.nearest("running", k=2)} == {"sprint", "race"}
    assert meaning.arithmetic(plus=["running", "song"], minus=["race"], k=1)[0][0] in {"singing", "choir"}


# --------------------------------------------------------------------------- CLI and atlas


def test_words_command_fills_the_atlas_and_show_lists_them(tmp_path: Path, monkeypatch) -> None:
    vocab = tmp_path / "small.txt"
    vocab.write_text("\n".join(concept_names() + ["king", "queen", "walking", "running"]))
    out = tmp_path / "atlas"
    result = runner.invoke(app, ["words", "--model", "mini-clip", "--layer", "neurons", "--vocab", str(vocab),
                                 "--sizes", "0.8", "--positions", "0.5:0.5", "--top-k", "5", "--out", str(out),
                                 "--workers", "0", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["layers"] == ["visual.layer4.1.act3:input"] and summary["units"] == 512
    assert summary["words"] == len(concept_names()) + 4 and summary["vocabulary"] == "small"
    assert "undrawable" not in summary  # only when words were left out, as scan's "replaced"

    shown = json.loads(runner.invoke(app, ["show", str(out), "--layer", "neurons", "--unit", "473",
                                           "--json"]).stdout)
    scores = [w["score"] for w in shown["words"]]
    assert len(shown["words"]) == 5 and scores == sorted(scores, reverse=True)
    assert shown["model"] == "mini-clip@bundled"

    nearest = runner.invoke(app, ["wordvec", str(out), "--nearest", "star", "--top", "3", "--json"])
    assert nearest.exit_code == 0, nearest.output
    payload = json.loads(nearest.stdout)
    assert payload["centered"] and len(payload["words"]) == 3 and "star" not in [w["word"] for w in payload["words"]]
    missing = runner.invoke(app, ["wordvec", str(out), "--nearest", "zebra"])
    assert missing.exit_code == 1 and "not in the embedding's vocabulary" in missing.output

    # wordvec only reads: it opened the atlas to write, which a read-only mount refuses
    monkeypatch.setattr(Atlas, "_open_writable", lambda self: pytest.fail("wordvec opened the atlas to write"))
    assert runner.invoke(app, ["wordvec", str(out), "--cosine", "king,queen", "--json"]).exit_code == 0


def test_words_without_its_font_stops_before_the_model_with_the_package_to_install(tmp_path, monkeypatch) -> None:
    import neuronscope.commands.words as words_command
    import neuronscope.world.render as render

    monkeypatch.setattr(render, "FONT_DIRS", (str(tmp_path / "no-fonts"),))
    monkeypatch.setattr(words_command, "load_cli_model", lambda *a: pytest.fail("the model loaded first"))
    result = runner.invoke(app, ["words", "--model", "mini-clip", "--vocab", "colours", "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "fonts-dejavu-core" in result.stderr, result.output
    assert not (tmp_path / "a").exists()


def test_words_a_font_cannot_draw_are_left_out_named_and_reported(tmp_path) -> None:
    """CJK words and emoji were probed as identical .notdef boxes (日本 drew as 本日), scored as if words."""
    from neuronscope.probing.raster import undrawable_words

    font = resolve_font("dejavu/DejaVuSans.ttf")
    boxes = RasterSettings(sizes=(0.8,), positions=((0.5, 0.5),))
    assert (render_word_images("日本", boxes, 64, [font]) == render_word_images("本日", boxes, 64, [font])).all()
    vocab = tmp_path / "odd.txt"
    vocab.write_text("cat\ncafé\n日本\n🙂\nnaïve résumé\n\tTab\n", encoding="utf-8")
    assert undrawable_words(load_vocabulary(vocab), [font]) == {"日本": [font], "🙂": [font]}
    for name in VOCABULARIES:  # the built-in vocabularies are all drawn
        assert undrawable_words(load_vocabulary(name), [font]) == {}, name
    args = ["words", "--model", "mini-clip", "--vocab", str(vocab), "--sizes", "0.8", "--positions", "0.5:0.5",
            "--top-k", "2", "--workers", "0"]
    text = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert text.exit_code == 0, text.output
    assert "4 words of odd" in text.stdout and text.stderr.count("cannot draw") == 1  # checked once, by the probe
    assert ("2 of 6 words have characters DejaVuSans.ttf cannot draw, left out" in text.stderr
            and "日本, 🙂; give fonts that draw them (--fonts" in text.stderr)
    report = json.loads(runner.invoke(app, [*args, "--out", str(tmp_path / "b"), "--json"]).stdout)
    assert report["words"] == 4 and report["undrawable"] == ["日本", "🙂"]
    only = tmp_path / "cjk.txt"
    only.write_text("日本\n中文\n", encoding="utf-8")
    refused = runner.invoke(app, ["words", "--model", "mini-clip", "--vocab", str(only), "--out", str(tmp_path / "c")])
    assert refused.exit_code == 1 and "none of the 2 words" in refused.stderr and "--fonts" in refused.stderr
    with Atlas(tmp_path / "c", create=False) as atlas:  # refused before its run is recorded
        assert atlas.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0


def test_probe_words_from_python_leaves_out_the_words_a_font_cannot_draw(tiny_rn, caplog) -> None:
    """The words command checked each font's cmap itself: a Python caller of probe_words got CJK words and emoji
    probed as identical .notdef boxes. probe_words leaves them out with one warning and names them."""
    words = ["cat", "日本", "dog", "🙂"]
    with caplog.at_level("WARNING", logger="neuronscope.probing.words"):
        probe = probe_words(tiny_rn, "neurons", words, settings=QUICK)
    assert probe.words == ["cat", "dog"] and probe.undrawable == ["日本", "🙂"] and probe.scores.shape[0] == 2
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "2 of 4 words have characters DejaVuSans.ttf cannot draw"]
    clean = probe_words(tiny_rn, "neurons", ["cat", "dog"], settings=QUICK)
    assert clean.undrawable == [] and torch.equal(clean.scores, probe.scores)
    with pytest.raises(NeuronscopeError, match="none of the 2 words can be drawn in DejaVuSans.ttf"):
        probe_words(tiny_rn, "neurons", ["日本", "中文"], settings=QUICK)


def test_top_words_all_equals_top_words_on_ties_and_rank_counts_ties_in_a_words_favour() -> None:
    scores = torch.zeros(40, 3)
    scores[[5, 17, 30], 1] = 2.0  # three words tied for unit 1's best
    probe = WordProbe("m", "l", [f"w{i}" for i in range(40)], scores, QUICK, (1, 1), "fp32")
    everything = probe.top_words_all(5)
    assert everything == {unit: probe.top_words(unit, 5) for unit in range(3)}
    assert [w for w, _ in everything[0]] == ["w0", "w1", "w2", "w3", "w4"]  # ties by vocabulary order
    assert [probe.rank(w, 1) for w in ("w5", "w17", "w30", "w0")] == [1, 1, 1, 4]
    from neuronscope.probing.attribution import TextAttribution
    from neuronscope.probing.ranking import top_k

    for chunked, whole in zip(top_k(scores, 5, chunk=2), top_k(scores, 5)):  # the last chunk is a single unit
        assert torch.equal(chunked, whole)
    # every listing breaks ties alike: text -> units too (topk left their order unspecified)
    assert [u["unit"] for u in TextAttribution("m", "l", ["t"], scores.T[:1].clone()).top(0, 3)] == [0, 1, 2]


# --------------------------------------------------------------------------- the paper


def test_the_paper_tables_ship_with_the_package() -> None:
    table = paper_top_words()
    assert len(table) == PAPER_UNITS and table[550][:1] == ["spider"]
    named = paper_named_units()
    by_unit = {n["unit"]: n for n in named}
    assert len(named) == 109 and by_unit[89]["label"] == "Donald Trump" and by_unit[550]["words"][0] == "spider"


def test_compare_with_paper_scores_a_perfect_and_a_shuffled_probe() -> None:
    table = paper_top_words()
    words = sorted({w for ws in table.values() for w in ws})
    position = {w: i for i, w in enumerate(words)}
    scores = torch.zeros(len(words), PAPER_UNITS)
    for unit, top in table.items():
        for rank, word in enumerate(top):
            scores[position[word], unit] = 3.0 - rank
    perfect = WordProbe("RN50x4@test", "visual.layer4.5.act3:input", words, scores, QUICK, (9, 9), "fp32")
    result = compare_with_paper(perfect)
    assert result.overall.top3_overlap == 1.0 and result.named.units == 109 and result.named.any_top3 == 1.0
    # 39 top-1 cells of the table are blank ("", nature, mature): the word after one is the article's second,
    # not its top-1, so those units are left out of the top-1 share
    assert result.overall.top1_units == 2521 and result.overall.paper_top1_in_top_k == 1.0
    assert result.named.top1_units == 109
    assert 40 not in paper_top1_words() and table[40] == ["nature", "mature"] and paper_top1_words()[107] == "followed"
    shuffled = WordProbe("RN50x4@test", "visual.layer4.5.act3:input", words, scores[:, torch.randperm(PAPER_UNITS,
                         generator=torch.Generator().manual_seed(0))], QUICK, (9, 9), "fp32")
    assert compare_with_paper(shuffled).overall.top3_overlap < 0.05


def test_compare_with_paper_refuses_another_layer_of_the_same_width() -> None:
    other = WordProbe("RN50x4@test", "visual.layer4.4.act3:input", ["spider"], torch.zeros(1, PAPER_UNITS), QUICK,
                      (9, 9), "fp32")
    with pytest.raises(NeuronscopeError, match="visual.layer4.5.act3:input"):
        compare_with_paper(other)


def test_reproduce_words_runs_end_to_end_on_random_rn50x4(tmp_path: Path, monkeypatch) -> None:
    """Plumbing only: random weights, 16 words, one image a word (CONVENTIONS: at most 16 images a test on a
    real architecture; RN50x4 runs ~4 images/s here, so the issue's 200 words would take ~1 min alone). A full
    disk while storing says that `--out` resumes, and the rerun does, saying so in its report alone."""
    from neuronscope.atlas import Atlas
    from neuronscope.runtime import seed_everything

    def disk_full(*args, **kwargs) -> None:
        raise OSError(28, "No space left on device")

    vocab = tmp_path / "words16.txt"
    vocab.write_text("\n".join(load_vocabulary("english-10k")[:16]))
    args = ["reproduce", "words", "--weights", "random", "--vocab", str(vocab), "--sizes", "0.8", "--positions",
            "0.5:0.5", "--workers", "0", "--batch-size", "8", "--out", str(tmp_path / "atlas"), "--json"]
    seed_everything(0)  # the same random init each time, as in a fresh process: the run can resume
    with monkeypatch.context() as patch:
        patch.setattr(Atlas, "save_artifact", disk_full)
        failed = runner.invoke(app, args)
    assert failed.exit_code == 1 and "(reproduce words --out resumes from its last checkpoint)" in failed.stderr
    seed_everything(0)
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and result.stderr == "", result.output  # captured streams: the JSON alone
    payload = json.loads(result.stdout)
    assert payload["resumed_from"] == 16  # the last word's checkpoint, written before the store
    assert "undrawable" not in payload  # every word drawable: no empty extra
    assert payload["model"] == "RN50x4@random" and payload["layer"] == "visual.layer4.5.act3:input"
    # an atlas writer's report (CONVENTIONS) beside the comparison's keys
    assert (payload["atlas"], payload["layers"], payload["units"], payload["skipped"]) == (
        str(tmp_path / "atlas"), ["visual.layer4.5.act3:input"], PAPER_UNITS, {})
    assert payload["overall"]["units"] == PAPER_UNITS and payload["named"]["units"] == 109
    assert 0.0 <= payload["overall"]["top3_overlap"] <= 1.0 and payload["vocabulary_words"] == 16
    assert len(payload["named_units"]) == 109 and all(len(u["ours"]) == 3 for u in payload["named_units"])
    with Atlas(tmp_path / "atlas", create=False) as atlas:  # stored through the resumable word run
        assert [(run["id"], run["status"]) for run in atlas.runs()] == [(payload["run_id"], "finished")]
        # it recorded `neuronscope words --model RN50x4@random ...` without the raster settings or precision
        assert atlas.runs()[0]["command"] == (
            "neuronscope reproduce words --weights random --vocab words16.txt --sizes 0.8 --positions 0.5:0.5 "
            "--fonts dejavu/DejaVuSans.ttf --top-k 20 --out atlas --precision fp32")
    assert not list((tmp_path / "atlas" / "checkpoints").glob("*.npz"))


def test_reproduce_words_needs_weights() -> None:
    result = runner.invoke(app, ["reproduce", "words"])
    assert result.exit_code == 1 and "--weights PATH" in result.output


def test_reproduce_words_with_another_architectures_weights_says_it_needs_rn50x4(tmp_path: Path, tiny_rn) -> None:
    """The generic advice, "name the architecture (--model NAME)", names an option reproduce has not."""
    import torch

    path = tmp_path / "tiny.pt"
    torch.save(tiny_rn.module.state_dict(), path)
    result = runner.invoke(app, ["reproduce", "words", "--weights", str(path)])
    assert result.exit_code == 1
    assert "needs OpenAI's RN50x4 weights" in result.output and "--model" not in result.output, result.output


@pytest.mark.real_weights
@pytest.mark.skipif(not os.environ.get("NEURONSCOPE_RN50X4"), reason="set NEURONSCOPE_RN50X4=PATH to RN50x4 weights")
def test_reproduces_the_papers_top_words_with_real_weights(tmp_path: Path) -> None:
    """Opt-in: the full english-10k probe of OpenAI's RN50x4 (hours on a CPU, minutes on a GPU)."""
    result = runner.invoke(app, ["reproduce", "words", "--weights", os.environ["NEURONSCOPE_RN50X4"], "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    print(json.dumps({k: payload[k] for k in ("overall", "named", "paper_words_in_vocabulary")}, indent=2))
    # Our vocabulary and fonts differ from the article's, so exact top-3 agreement is not expected; the
    # named units' paper top-1 word should be among our top 20 far more often than chance (20/10,000).
    assert payload["named"]["paper_top1_in_top_k"] >= 0.2


def test_a_channels_last_layer_is_probed_unit_by_unit_on_its_grid() -> None:
    """fc1 runs on [B, H, W, C] = [B, 4, 4, 12]: each word scores 12 units (it scored 4 rows), each the
    spatial mean a reduced record reads, on the 4x4 grid."""
    from neuronscope.activations import record
    from neuronscope.models import Preprocess
    from neuronscope.probing.raster import WordImages
    from tests.helpers import ChannelsLastBlock

    torch.manual_seed(0)
    model = load_model(ChannelsLastBlock(), preprocess=Preprocess(image_size=16))
    words = ["cat", "spider"]
    probe = probe_words(model, "fc1", words, settings=QUICK)
    assert probe.scores.shape == (2, 12) and probe.grid == (4, 4)
    images = WordImages(words, QUICK, 16)
    pixels = torch.cat([images[i] for i in range(len(words))]).float().div(255.0)  # [words * variants, 3, 16, 16]
    means = record(model, model.preprocess.normalize(pixels), ["fc1"], reduce="mean")["fc1"]  # [images, 12]
    torch.testing.assert_close(probe.scores, _reduce_word_images(means, QUICK))


# --------------------------------------------------------------------------- the Python API's arguments


def test_a_single_string_is_one_word_not_its_letters() -> None:
    model = load_model("mini-clip", weights=DEFAULT)
    probe = probe_words(model, "neurons", "star", settings=QUICK)
    assert probe.words == ["star"] and probe.scores.shape == (1, probe.units)


def test_a_unit_the_layer_lacks_is_refused_naming_its_range() -> None:
    probe = WordProbe("m", "x", ["cat", "dog"], torch.randn(2, 512), QUICK, (4, 4), "fp32")
    with pytest.raises(UnitsError, match=r"unit 600 is out of range: the layer has 512 units \(0-511\)"):
        probe.top_words(600)
    with pytest.raises(UnitsError, match="start at 0"):
        probe.rank("cat", -1)
    assert probe.rank(probe.top_words(3, k=1)[0][0], 3) == 1


def test_a_word_probes_repr_names_the_model_and_layer_and_stays_short() -> None:
    words = [f"word{i}" for i in range(2000)]
    probe = WordProbe("mini-clip@bundled", "visual.x", words, torch.randn(2000, 512), QUICK, (4, 4), "fp32")
    assert repr(probe) == "WordProbe(mini-clip@bundled visual.x, 2000 words x 512 units, fp32)"


def test_vocabulary_records_name_the_file_as_given_and_hash_the_words(tmp_path: Path) -> None:
    from neuronscope.probing.vocab import VocabularyRecord, vocabulary_source

    assert vocabulary_source("colours") == "colours" and vocabulary_source("lists/my words.txt") == "lists/my words.txt"
    assert vocabulary_source(tmp_path / "vocab.txt") == "vocab.txt"  # an atlas holds no absolute paths
    record = VocabularyRecord.of("lists/v.txt", ["cat", "dog"])
    assert (record.name, record.source, record.entries) == ("v", "lists/v.txt", 2)
    assert record.config() == {"vocab": "v", "vocab_sha256": record.sha256}  # the path is not part of the key
    assert VocabularyRecord.of("./v.txt", ["cat", "dog"]).config() == record.config()
    assert VocabularyRecord.of("lists/v.txt", ["cat", "dogs"]).sha256 != record.sha256


def test_a_words_run_records_a_command_that_reruns(tmp_path: Path, monkeypatch) -> None:
    """`--vocab small.txt` was recorded as `--vocab small` (the file's stem), with no hash of the words:
    rerunning the recorded command failed "no vocabulary file at small"."""
    import shlex

    from neuronscope.atlas import Atlas

    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.txt").write_text("star\nhat\ncat\n")
    options = ["--sizes", "0.8", "--positions", "0.5:0.5", "--top-k", "2", "--workers", "0", "--json"]
    first = runner.invoke(app, ["words", "--model", "mini-clip", "--vocab", "small.txt", "--out", "atlas", *options])
    assert first.exit_code == 0, first.output
    with Atlas(tmp_path / "atlas", create=False) as atlas:
        run = atlas.run(json.loads(first.stdout)["run_id"])
        command = run["command"]
    assert "--vocab small.txt" in command
    from neuronscope.probing.vocab import vocabulary_sha256

    sha256 = vocabulary_sha256(["star", "hat", "cat"])  # the words themselves, as attribute and emotions record
    assert run["dataset"] == {"kind": "vocabulary", "name": "small", "source": "small.txt", "entries": 3,
                              "sha256": sha256} and run["config"]["vocab_sha256"] == sha256
    rerun = runner.invoke(app, [*shlex.split(command)[1:], "--workers", "0", "--json"])
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout)["vocabulary"] == "small"  # still keyed by the stem


# --------------------------------------------------------------------------- resuming a killed probe


class Killed(KeyboardInterrupt):
    """What a Ctrl-C raises, from a progress hook: the probe stops between two batches."""


def _kill_after_first_batch(done: int, total: int) -> None:
    raise Killed


def _stored_words(atlas_path: Path) -> tuple[list[str], torch.Tensor]:
    from neuronscope.atlas import Atlas
    from neuronscope.probing.word_store import load_word_scores

    with Atlas(atlas_path, create=False) as atlas:
        _, _, _, words, scores = load_word_scores(atlas, None, "neurons")
    return words, scores


def test_a_killed_words_probe_resumes_at_its_checkpoint_and_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    """`words` kept everything in memory until the end: a kill lost every score. Now the run is recorded
    first, the scores are checkpointed as they come, and the same probe started again continues there."""
    from neuronscope.atlas import Atlas
    from neuronscope.probing.vocab import VocabularyRecord
    from neuronscope.probing.word_store import probe_words_into

    model = load_model("mini-clip", weights=DEFAULT, precision="fp32")
    words = load_vocabulary("colours")  # 30 words: 8 batches of 4
    options = dict(vocabulary=VocabularyRecord.of("colours", words), settings=QUICK, batch_size=4,
                   checkpoint_every=4, checkpoint_seconds=1e9)
    with Atlas(tmp_path / "whole") as atlas:
        whole = probe_words_into(atlas, model, "neurons", words, **options)
    with Atlas(tmp_path / "killed") as atlas:
        with pytest.raises(Killed):
            probe_words_into(atlas, model, "neurons", words, on_batch=_kill_after_first_batch, **options)
        (run,) = atlas.runs()
        assert run["status"] == "interrupted" and not atlas.artifacts("mini-clip@bundled", whole.probe.layer, "words")
        assert len(list(atlas.checkpoints_dir.glob("*.npz"))) == 1

        resumed, progress = [], []
        again = probe_words_into(atlas, model, "neurons", words, on_resume=lambda *a: resumed.append(a),
                                 on_batch=lambda *a: progress.append(a), **options)
        assert resumed == [(4, 30)] and progress[0] == (8, 30)  # the first batch was not probed again
        assert again.run_id == run["id"] and again.resumed_from == 4
        assert [r["status"] for r in atlas.runs()] == ["finished"]
        assert not list(atlas.checkpoints_dir.glob("*.npz"))  # dropped once the probe is stored
    assert torch.equal(again.probe.scores, whole.probe.scores)
    (killed_words, killed_scores), (whole_words, whole_scores) = (_stored_words(tmp_path / name)
                                                                  for name in ("killed", "whole"))
    assert killed_words == whole_words == words and torch.equal(killed_scores, whole_scores)
    with pytest.raises(ValueError, match="probe again without them"):
        probe_words(model, "neurons", words, settings=QUICK, scored=torch.zeros(4, 7))


def test_a_ctrl_c_keeps_the_words_scored_since_the_last_checkpoint(tmp_path: Path) -> None:
    """Checkpoints are minutes apart: a Ctrl-C sent a review's rerun back to word 1,001 of about 2,000 done.
    On a Ctrl-C the scores so far are saved; a crash (SIGKILL) still goes back to the last checkpoint."""
    from neuronscope.atlas import Atlas
    from neuronscope.probing.vocab import VocabularyRecord
    from neuronscope.probing.word_store import probe_words_into

    model = load_model("mini-clip", weights=DEFAULT, precision="fp32")
    words = load_vocabulary("colours")
    options = dict(vocabulary=VocabularyRecord.of("colours", words), settings=QUICK, batch_size=4,
                   checkpoint_every=1000, checkpoint_seconds=1e9)

    def ctrl_c_after_two_batches(done: int, total: int) -> None:
        if done >= 8:
            raise KeyboardInterrupt

    with Atlas(tmp_path / "atlas") as atlas:
        with pytest.raises(KeyboardInterrupt):
            probe_words_into(atlas, model, "neurons", words, on_batch=ctrl_c_after_two_batches, **options)
        again = probe_words_into(atlas, model, "neurons", words, **options)
    assert again.resumed_from == 8
    with Atlas(tmp_path / "whole") as atlas:
        assert torch.equal(again.probe.scores, probe_words_into(atlas, model, "neurons", words, **options).probe.scores)


def test_an_edited_vocabulary_abandons_the_killed_run_of_its_old_words(tmp_path: Path) -> None:
    """Its key (the words' sha256) never comes back, so its checkpoint would lie in the atlas for good."""
    from neuronscope.atlas import Atlas
    from neuronscope.probing.vocab import VocabularyRecord
    from neuronscope.probing.word_store import probe_words_into

    model = load_model("mini-clip", weights=DEFAULT, precision="fp32")
    before, after = ["red", "green", "blue", "star", "hat"], ["red", "green", "blue", "star", "cat"]
    with Atlas(tmp_path / "atlas") as atlas:
        with pytest.raises(Killed):
            probe_words_into(atlas, model, "neurons", before, vocabulary=VocabularyRecord.of("v.txt", before),
                             settings=QUICK, batch_size=2, checkpoint_every=2, on_batch=_kill_after_first_batch)
        outcome = probe_words_into(atlas, model, "neurons", after, vocabulary=VocabularyRecord.of("v.txt", after),
                                   settings=QUICK, batch_size=2)
        assert outcome.resumed_from == 0
        assert [r["status"] for r in atlas.runs()] == ["abandoned", "finished"]
        assert not list(atlas.checkpoints_dir.glob("*.npz"))


def test_another_file_of_the_same_stem_leaves_the_killed_run_to_resume(tmp_path: Path) -> None:
    """The config keeps only the stem: probing b/nouns.txt abandoned a killed run of a/nouns.txt (its
    checkpoint, hours of RN50x4, dropped) with a warning that a's words had changed."""
    from neuronscope.atlas import Atlas
    from neuronscope.probing.vocab import VocabularyRecord
    from neuronscope.probing.word_store import probe_words_into

    model = load_model("mini-clip", weights=DEFAULT, precision="fp32")
    first, second = ["red", "green", "blue", "star", "hat"], ["cat", "dog"]
    options = dict(settings=QUICK, batch_size=2, checkpoint_every=2)
    with Atlas(tmp_path / "atlas") as atlas:
        with pytest.raises(Killed):
            probe_words_into(atlas, model, "neurons", first, vocabulary=VocabularyRecord.of("a/nouns.txt", first),
                             on_batch=_kill_after_first_batch, **options)
        probe_words_into(atlas, model, "neurons", second, vocabulary=VocabularyRecord.of("b/nouns.txt", second),
                         **options)
        assert [r["status"] for r in atlas.runs()] == ["interrupted", "finished"]
        resumed = probe_words_into(atlas, model, "neurons", first,
                                   vocabulary=VocabularyRecord.of("a/nouns.txt", first), **options)
        assert resumed.resumed_from == 2 and [r["status"] for r in atlas.runs()] == ["finished", "finished"]


def test_random_weights_of_another_seed_are_another_words_run(tmp_path: Path) -> None:
    """Random weights have no file hash: every seed's init had the same run key, so a resumed run could
    mix two models' scores."""
    from neuronscope.probing.vocab import VocabularyRecord
    from neuronscope.probing.word_store import word_run_config
    from neuronscope.runtime import seed_everything

    def key(seed: int) -> str:
        seed_everything(seed)
        model = load_model("tiny-rn", weights="random")
        return word_run_config(model, "visual.layer4.1.act3:input", VocabularyRecord.of("colours", ["red"]),
                               QUICK, 5)[1]

    assert key(0) == key(0) != key(1)


def test_the_words_command_resumes_after_a_ctrl_c_and_says_where(tmp_path: Path, monkeypatch) -> None:
    import neuronscope.commands.words as words_command

    class KillingBars:  # the progress bars' hook is where a test can stop the probe between batches
        def __init__(self, quiet: bool) -> None:
            pass

        def track(self, label: str):
            return _kill_after_first_batch

        def close(self) -> None:
            pass

    args = ["words", "--model", "mini-clip", "--vocab", "colours", "--sizes", "0.8", "--positions", "0.5:0.5",
            "--batch-size", "4", "--checkpoint-every", "4", "--workers", "0", "--precision", "fp32",
            "--out", str(tmp_path / "atlas")]
    with monkeypatch.context() as patch:
        patch.setattr(words_command, "ProgressBars", KillingBars)
        killed = runner.invoke(app, args)
    assert killed.exit_code == 130 and "interrupted" in killed.stderr, killed.output
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0, rerun.output
    assert "resumed at word 4 of 30" in rerun.stderr and "resumed at word 4)" in rerun.stdout
    from neuronscope.atlas import Atlas

    with Atlas(tmp_path / "atlas", create=False) as atlas:
        assert [r["status"] for r in atlas.runs()] == ["finished"]  # the killed run, finished
        assert not list(atlas.checkpoints_dir.glob("*.npz"))
    assert len(_stored_words(tmp_path / "atlas")[0]) == 30
    assert _resumed_json(args, monkeypatch) == 4  # said in the report alone, not on stderr


def _resumed_json(args: list[str], monkeypatch) -> int:
    """Kill ``words ARGS --json`` after its first batch, run it again and return its report's ``resumed_from``:
    with stderr not a terminal (CliRunner's), the captured streams hold the JSON alone."""
    import neuronscope.probing.word_store as word_store

    args = [*args, "--json"]
    with monkeypatch.context() as patch:
        patch.setattr(word_store, "probe_words", _killed_after_first_batch(word_store.probe_words))
        assert runner.invoke(app, args).exit_code == 130
    rerun = runner.invoke(app, args)
    assert rerun.exit_code == 0 and rerun.stderr == "", rerun.output
    return json.loads(rerun.stdout)["resumed_from"]


def _killed_after_first_batch(probe_words):
    """``probe_words`` stopped (as by a Ctrl-C) after its first batch, whatever ``on_batch`` the caller gave."""
    def probe(*args, **kwargs):
        return probe_words(*args, **{**kwargs, "on_batch": _kill_after_first_batch})

    return probe


def test_a_probe_that_failed_while_storing_resumes_at_its_last_word(tmp_path: Path, monkeypatch) -> None:
    """A full disk at the end lost every score: the last word's checkpoint is written before the store."""
    from neuronscope.atlas import Atlas
    from neuronscope.probing.vocab import VocabularyRecord
    from neuronscope.probing.word_store import probe_words_into

    model = load_model("mini-clip", weights=DEFAULT, precision="fp32")
    words = ["red", "green", "blue", "star", "hat"]
    options = dict(vocabulary=VocabularyRecord.of("v.txt", words), settings=QUICK, batch_size=2)

    def disk_full(*args, **kwargs) -> None:
        raise OSError(28, "disk full")

    with Atlas(tmp_path / "atlas") as atlas:
        with monkeypatch.context() as patch:
            patch.setattr(atlas, "save_artifact", disk_full)
            with pytest.raises(OSError, match="disk full"):
                probe_words_into(atlas, model, "neurons", words, **options)
        assert [r["status"] for r in atlas.runs()] == ["interrupted"]
        resumed = []
        outcome = probe_words_into(atlas, model, "neurons", words, workers=1, on_resume=lambda *a: resumed.append(a),
                                   **options)
        assert resumed == [(5, 5)] and outcome.probe.scores.shape == (5, 512)
        assert [r["status"] for r in atlas.runs()] == ["finished"]
    assert _stored_words(tmp_path / "atlas")[0] == words


def test_probe_words_leaves_the_callers_rng(tiny_rn) -> None:
    before = rng_states()
    probe_words(tiny_rn, "neurons", ["star", "fish"], settings=QUICK)
    assert same_rng(before)  # its DataLoader draws from its own generator


def test_probe_words_runs_a_training_model_in_eval_mode(tiny_rn) -> None:
    words = ["star", "fish", "clock"]
    expected = probe_words(tiny_rn, "neurons", words, settings=QUICK, batch_size=3)
    with training(tiny_rn.module):
        alone = probe_words(tiny_rn, "neurons", words, settings=QUICK, batch_size=1)  # one word a forward
    torch.testing.assert_close(torch.as_tensor(alone.scores), torch.as_tensor(expected.scores), rtol=1e-4, atol=1e-5)


def test_a_words_run_under_a_recorders_edits_is_refused_and_records_nothing(tmp_path: Path) -> None:
    """Only scan refused attached edits: a words run stored the ablated scores under the plain model's key,
    which a later plain `words` run then resumed or replaced as its own."""
    from neuronscope.activations import Recorder, zero_units
    from neuronscope.probing.vocab import VocabularyRecord
    from neuronscope.probing.word_store import probe_words_into

    model = load_model("mini-clip", weights=DEFAULT, precision="fp32")
    with Atlas(tmp_path / "atlas") as atlas, Recorder(model, edits=[zero_units("neurons", "0-31")]):
        with pytest.raises(NeuronscopeError, match=r"edits \(neurons: zero\) are attached to mini-clip.*outside"):
            probe_words_into(atlas, model, "neurons", ["red", "blue"], settings=QUICK,
                             vocabulary=VocabularyRecord.of("v.txt", ["red", "blue"]))
        assert atlas.runs() == []
