"""The trainer: a run killed mid-way and resumed ends with the weights of an uninterrupted run."""

from __future__ import annotations

import pytest
import torch

from neuronscope.world import build as world_build
from neuronscope.world import render, sampler
from neuronscope.world.build import build_world
from neuronscope.world.train import CHECKPOINT, TrainConfig, train

from tests.helpers import CLIPART_CONCEPTS

DEJAVU = ("dejavu/DejaVuSans.ttf", "dejavu/DejaVuSansMono.ttf")


@pytest.fixture
def small_world(tmp_path, clipart_tree, monkeypatch):
    # Only DejaVu is sure to be on a test machine; the real world uses more fonts.
    monkeypatch.setattr(world_build, "HELDOUT_FONTS", DEJAVU)
    monkeypatch.setattr(sampler, "TRAIN_FONTS", DEJAVU)
    monkeypatch.setattr(render, "TRAIN_FONTS", DEJAVU)
    out = tmp_path / "world"
    build_world(out, seed=0, size=32, root=clipart_tree, concepts=CLIPART_CONCEPTS, n_reading=40)
    return out


def _config() -> TrainConfig:
    return TrainConfig(image_size=32, vision_width=8, vision_layers=(1, 1, 1, 1), embed_dim=16, text_width=32,
                       text_heads=2, text_layers=1, steps=4, batch_size=12, warmup_steps=2, checkpoint_seconds=0.0)


class Killed(Exception):
    pass


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, small_world) -> None:
    straight = torch.load(train(small_world, tmp_path / "straight", _config()), weights_only=True)

    def kill_at_step_three(report) -> None:
        if report.step == 3:
            raise Killed

    with pytest.raises(Killed):
        train(small_world, tmp_path / "resumed", _config(), kill_at_step_three)
    assert torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=True)["step"] == 2
    resumed = torch.load(train(small_world, tmp_path / "resumed", _config()), weights_only=True)

    assert resumed["step"] == straight["step"] == 4
    for name, tensor in straight["model"].items():
        assert torch.allclose(tensor.float(), resumed["model"][name].float(), atol=1e-6), name
    # every step logged once, before and after the kill, with the loss the uninterrupted run logged
    steps_and_losses = lambda state: [(entry["step"], round(entry["loss"], 4)) for entry in state["log"]]  # noqa: E731
    assert steps_and_losses(resumed) == steps_and_losses(straight) and len(straight["log"]) == 4


def test_resuming_with_another_config_is_refused(tmp_path, small_world) -> None:
    with pytest.raises(Killed):
        train(small_world, tmp_path / "run", _config(), lambda report: (_ for _ in ()).throw(Killed()))
    other = _config()
    other.lr, other.mix = 0.1, sampler.Mix(word=0.5)
    with pytest.raises(ValueError, match=r"another config \(lr: 0.0015 in the run, 0.1 given; "
                                         r"mix.word: 0.2 in the run, 0.5 given\)"):
        train(small_world, tmp_path / "run", other)


def test_ctrl_c_saves_the_steps_done_and_the_run_resumes_from_there(tmp_path, small_world, caplog) -> None:
    """Checkpoints are minutes apart: a KeyboardInterrupt saves the steps since, then goes on up."""
    config = _config()
    config.checkpoint_seconds = 1e9  # no timed checkpoint: only the interrupt's
    straight = torch.load(train(small_world, tmp_path / "straight", config), weights_only=True)

    def ctrl_c_at_step_three(report) -> None:
        if report.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(small_world, tmp_path / "run", config, ctrl_c_at_step_three)
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)["step"] == 3
    assert "interrupted: saved step 3 of 4" in caplog.text
    resumed = torch.load(train(small_world, tmp_path / "run", config), weights_only=True)
    assert [entry["step"] for entry in resumed["log"]] == [0, 1, 2, 3]
    for name, tensor in straight["model"].items():
        assert torch.allclose(tensor.float(), resumed["model"][name].float(), atol=1e-6), name


def test_a_ctrl_c_during_the_parameter_update_is_raised_once_the_update_is_done(ctrl_c) -> None:
    """A real Ctrl-C landed inside AdamW's per-parameter loop: saved then, the checkpoint would hold a model
    half a step on."""
    import signal

    from neuronscope.atlas.runs import ctrl_c_held

    updated = []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_held():
            ctrl_c()
            updated.append("the rest of the update")
    assert updated == ["the rest of the update"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_finished_run_started_again_says_so_and_writes_nothing(tmp_path, small_world, monkeypatch) -> None:
    from typer.testing import CliRunner

    from neuronscope.cli import app
    from neuronscope.world import cli as world_cli
    from neuronscope.world import train as train_module

    args = ["world", "train", "--world", str(small_world), "--out", str(tmp_path / "run"), "--steps", "2",
            "--batch-size", "12"]
    config = _config()
    config.steps = 2
    train(small_world, tmp_path / "run", config)
    monkeypatch.setattr(world_cli, "TrainConfig", lambda **given: config)  # the tiny model, not the default
    monkeypatch.setattr(train_module, "_save_atomic", lambda *args: pytest.fail("rewrote the finished checkpoint"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{tmp_path / 'run'} is already trained to step 2; nothing to do"


def test_a_run_is_pinned_to_its_world_and_bad_inputs_are_refused_before_anything_is_written(tmp_path,
                                                                                            small_world) -> None:
    with pytest.raises(FileNotFoundError, match="is not a world"):
        train(tmp_path / "nowhere", tmp_path / "bad", _config())
    with pytest.raises(ValueError, match="--loader-workers 0"):
        train(small_world, tmp_path / "bad", _config(), loader_workers=0)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(Killed):
        train(small_world, tmp_path / "run", _config(), lambda report: (_ for _ in ()).throw(Killed()))
    world = small_world / "world.json"
    world.write_text(world.read_text().replace('"seed": 0', '"seed": 1', 1))  # another world
    with pytest.raises(ValueError, match="another world"):
        train(small_world, tmp_path / "run", _config())


def test_more_loader_workers_render_the_same_batches_in_order(tmp_path, small_world) -> None:
    """Each worker renders every W-th step; the trainer still gets steps 0, 1, 2, ... and the same weights."""
    one = torch.load(train(small_world, tmp_path / "one", _config()), weights_only=True)
    three = torch.load(train(small_world, tmp_path / "three", _config(), loader_workers=3), weights_only=True)
    assert [entry["step"] for entry in three["log"]] == [0, 1, 2, 3]
    assert [entry["loss"] for entry in three["log"]] == [entry["loss"] for entry in one["log"]]
    for name, tensor in one["model"].items():
        assert torch.equal(tensor, three["model"][name]), name


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_train_command_says_when_the_gpu_it_was_given_is_missing(tmp_path) -> None:
    from typer.testing import CliRunner

    from neuronscope.cli import app

    result = CliRunner().invoke(app, ["world", "train", "--out", str(tmp_path / "run"), "--device", "cuda"])
    assert result.exit_code == 1
    assert "no CUDA GPU; use --device cpu" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_eval_loads_a_training_checkpoint_and_leaves_no_export_behind(tmp_path, small_world, monkeypatch) -> None:
    import tempfile

    from neuronscope.world.cli import _load_for_eval

    checkpoint = train(small_world, tmp_path / "run", _config())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    model = _load_for_eval(str(checkpoint))
    assert model.preprocess.image_size == (32, 32) and model.weights_sha256 is not None
    assert list((tmp_path / "tmp").iterdir()) == []  # the exported folder went once the weights were loaded


def test_eval_loads_a_plain_state_dict_as_the_mini_clips_weights(tmp_path) -> None:
    from neuronscope.models import load_model
    from neuronscope.world.cli import _load_for_eval

    bundled = load_model("mini-clip", precision="fp32")
    torch.save(bundled.module.state_dict(), tmp_path / "weights.pt")
    model = _load_for_eval(str(tmp_path / "weights.pt"))  # was KeyError: 'config' (read as a checkpoint)
    loaded, saved = model.module.state_dict(), bundled.module.state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in saved.items())


def test_a_missing_training_font_is_reported_with_its_advice_before_anything_is_written(tmp_path, small_world,
                                                                                        monkeypatch) -> None:
    from typer.testing import CliRunner

    from neuronscope.cli import app
    from neuronscope.errors import WorldFileMissing

    monkeypatch.setattr(sampler, "TRAIN_FONTS", ("nowhere/Missing.ttf",))
    with pytest.raises(WorldFileMissing, match="fonts-dejavu-core"):
        train(small_world, tmp_path / "run", _config())
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(app, ["world", "train", "--world", str(small_world), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "install Debian's fonts-dejavu-core" in result.stderr  # not a worker's line


def test_a_precision_the_trainer_does_not_run_is_refused() -> None:
    from neuronscope.errors import WorldMismatch

    with pytest.raises(WorldMismatch, match="fp32 or bf16"):
        TrainConfig(precision="fp16")  # trained fp32 while config.json said fp16


def test_the_card_labels_keep_a_label_already_there(tmp_path) -> None:
    from neuronscope.atlas import Atlas
    from neuronscope.world.card import label_card_units

    card = {"multimodal": {"units": [{"layer": "l", "unit": 1, "concept": "star"},
                                     {"layer": "l", "unit": 2, "concept": "hat"}]}}
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.set_label("m@w", "l", 1, "my own")
        assert label_card_units(atlas, "m@w", card) == 1
        assert [atlas.label("m@w", "l", unit) for unit in (1, 2)] == ["my own", "hat"]
        assert label_card_units(atlas, "m@w", card, keep_existing=False) == 2
        assert atlas.label("m@w", "l", 1) == "star"


def _torch_save_on_a_full_disk(state, file) -> None:
    """What torch.save does on a real full disk: its writer wraps the file's ENOSPC in a RuntimeError."""
    import errno

    file.write(b"partial")
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904


@pytest.mark.parametrize("full", ["/dev/full", "RuntimeError"])
def test_a_full_disk_while_saving_a_checkpoint_says_to_free_space_and_rerun(tmp_path, monkeypatch, full) -> None:
    """On a full disk torch.save raises the OSError (ENOSPC) of its Python file (/dev/full), or its own
    RuntimeError ("unexpected pos ...") with that OSError as context (a real disk); either way the command line
    finds ENOSPC in the chain and turns it into advice. The partial checkpoint.tmp it had begun is removed."""
    from pathlib import Path

    from neuronscope.commands.common import disk_full_message
    from neuronscope.world import train as train_module

    def full_device(path, mode):
        Path(path).write_bytes(b"partial")  # what a real disk holds once it fills up mid-write
        return open("/dev/full", mode)

    if full == "/dev/full":
        monkeypatch.setattr(train_module, "open", full_device, raising=False)
    else:
        monkeypatch.setattr(torch, "save", _torch_save_on_a_full_disk)
    with pytest.raises((OSError, RuntimeError)) as raised:
        train_module._save_atomic({"weights": torch.zeros(100_000)}, tmp_path / CHECKPOINT)
    assert disk_full_message(raised.value, "train") == ("no space left on the device: free some space and run the "
                                                       "same command again (world train resumes from its last "
                                                       "checkpoint)")
    assert list(tmp_path.iterdir()) == []
