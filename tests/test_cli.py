"""The command line, in-process (typer's runner): layers, models, errors."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import pytest
import torch
import typer
from typer.testing import CliRunner

from neuronscope.cli import app
from neuronscope.commands import layers as layers_command
from tests.web_atlas import web_atlas  # noqa: F401 (a fixture)

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_layers_rn50x4_json_shows_the_papers_layer(monkeypatch, rn50x4):
    asked = []

    def session_model(name, weights, **kwargs):
        asked.append((name, weights))
        return rn50x4  # RN50x4 is built once per session; the command must ask for random weights

    monkeypatch.setattr("neuronscope.models.load_model", session_model)
    monkeypatch.setattr("neuronscope.models.download.find_cached", lambda cfg, cache_dir=None: None)  # none cached
    result = invoke("layers", "RN50x4", "--json")
    assert result.exit_code == 0, result.output
    assert asked == [("RN50x4", "random")]
    payload = json.loads(result.stdout)  # an object naming the model, as every JSON answer (was a bare list)
    assert set(payload) == {"model", "layers"} and payload["model"] == "RN50x4@random"
    entries = {entry["name"]: entry for entry in payload["layers"]}
    pre_relu = entries["visual.layer4.5.act3:input"]
    assert pre_relu["shape"] == [2560, 9, 9]
    assert "image_block_4/5/Add_6" in pre_relu["aliases"] and "neurons" in pre_relu["aliases"]
    assert entries["visual.layer4.5.act3"]["shape"] == [2560, 9, 9]
    assert entries["visual.layer3.7"]["aliases"] == ["image_block_3/7/Relu_2"]
    assert entries["visual"]["shape"] == [640]
    assert not any(name.startswith("transformer.") for name in entries)  # the text tower does not run


def test_layers_text_output_and_filter():
    result = invoke("layers", "--model", "tiny-vit", "--match", "*resblocks.1.mlp*")
    assert result.exit_code == 0, result.output
    assert "tiny-vit@random" in result.stdout
    assert "visual.transformer.resblocks.1.mlp.gelu" in result.stdout and "= neurons" in result.stdout
    assert "17x256" in result.stdout


def test_layers_of_a_model_that_names_its_weights(tmp_path, tiny_rn):
    # NAME@WEIGHTS and a checkpoint path carry their weights: no "random" may be added beside them.
    from tests.helpers import write_config_dir

    result = invoke("layers", "mini-clip@bundled", "--match", "neurons")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("mini-clip@bundled:")
    folder = write_config_dir(tmp_path / "rn", tiny_rn)
    result = invoke("layers", str(folder), "--match", "neurons")
    assert result.exit_code == 0, result.output
    assert "@sha256:" in result.stdout.splitlines()[0]


def test_layers_of_a_bare_name_use_the_default_weights_when_at_hand(monkeypatch, tmp_path):
    """``mini-clip`` means ``mini-clip@bundled`` (was printed as mini-clip@random); a cached tag is used as
    well; a default that needs a download is never fetched: random then."""
    result = invoke("layers", "mini-clip", "--match", "neurons")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("mini-clip@bundled:")
    assert layers_command._weights_for_layers("tiny-rn", "random") == "random"
    monkeypatch.setattr("neuronscope.models.download.find_cached", lambda cfg, cache_dir=None: None)
    assert layers_command._weights_for_layers("RN50x4", None) == "random"
    monkeypatch.setattr("neuronscope.models.download.find_cached", lambda cfg, cache_dir=None: tmp_path / "w.pt")
    assert layers_command._weights_for_layers("RN50x4", None) == "default"


def test_models_lists_architectures_and_tags():
    result = invoke("models", "RN50x4")
    assert result.exit_code == 0
    assert "RN50x4" in result.stdout and "openai" in result.stdout and "random" in result.stdout
    rows = json.loads(invoke("models", "tiny-*", "--json").stdout)
    assert {row["name"]: row["default"] for row in rows} == {"tiny-rn": "random", "tiny-vit": "random"}


@pytest.mark.parametrize(("args", "message"), [
    (("layers", "RN50x5"), "did you mean RN50x4"),
    (("layers", "tiny-rn", "--weights", "openai"), "PATH"),
    (("layers", "tiny-rn", "--device", "tpu"), "cpu, cuda"),
    (("layers", "tiny-rn", "--precision", "int4"), "auto, fp32"),
    (("demo", "--model", "RN50", "--weights", "openai"), "--weights PATH"),
])
def test_errors_are_one_line_without_traceback(args, message):
    result = invoke(*args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.output


def test_debug_shows_the_real_exception():
    from neuronscope.errors import UnknownModelError

    result = invoke("--debug", "layers", "RN50x5")
    assert result.exit_code != 0 and isinstance(result.exception, UnknownModelError)
    result = invoke("layers", "RN50x5", "--debug")
    assert isinstance(result.exception, UnknownModelError)


def test_threads_sets_torchs_intra_op_threads():
    import torch

    before = torch.get_num_threads()
    try:
        result = invoke("--threads", "2", "models", "tiny-rn")
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_progress_bars_write_a_line_per_label_off_a_terminal(capsys, monkeypatch):
    from neuronscope.commands import common
    from neuronscope.commands.common import ProgressBars

    clock = iter([100.0, 100.0, 100.0, 100.0, 102.0])  # the last report comes 2 s after the label's first
    monkeypatch.setattr(common.time, "monotonic", lambda: next(clock))
    bars = ProgressBars(every_s=3600.0)
    step = bars.track("visualize plain (steps)")
    step(1, 4)  # the first report of a label prints; then nothing until every_s or the end
    step(2, 4)
    bars("words", 10, 10)
    step(3, 4)
    step(4, 4)
    bars.close()
    lines = capsys.readouterr().err.splitlines()
    # No rate where no time has passed (it read 1000000000.0/s); 3 steps in the 2 s after the first report.
    assert lines == ["visualize plain (steps): 1/4", "words: 10/10", "visualize plain (steps): 4/4, 1.5/s, ETA 0 s"]
    ProgressBars(quiet=True)("words", 1, 2)
    assert capsys.readouterr().err == ""


def test_progress_lines_count_the_rate_from_where_a_job_resumed_and_carry_its_detail(capsys, monkeypatch):
    from neuronscope.commands import common
    from neuronscope.commands.common import ProgressBars

    clock = iter([100.0, 110.0])
    monkeypatch.setattr(common.time, "monotonic", lambda: next(clock))
    bars = ProgressBars(every_s=1.0)
    bars("train", 2000, 4500, detail="loss 0.5000")  # resumed at step 2000
    bars("train", 2005, 4500, detail="loss 0.4000")  # 5 steps in 10 s (it read 200.5/s)
    assert capsys.readouterr().err.splitlines() == ["train: 2000/4500, loss 0.5000",
                                                    "train: 2005/4500, 2.00 s each, ETA 4990 s, loss 0.4000"]


def test_a_closed_pipe_ends_the_command_quietly_with_exit_0():
    """``neuronscope models | head -1``: the reader leaving early is not an error (was ``error: BrokenPipeError``)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-m", "neuronscope", "models"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.close()  # the reader is gone before the first line: every write hits a closed pipe
    stderr = child.stderr.read().decode()
    assert child.wait(timeout=120) == 0, stderr
    assert stderr == ""


def test_broken_pipe_in_a_command_exits_0(monkeypatch):
    import io
    import sys

    import typer

    from neuronscope.commands.common import cli_command

    def command(debug: bool = False) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", io.StringIO())  # no descriptor: the test's own stdout stays as it is
    with pytest.raises(typer.Exit) as raised:
        cli_command(command)()
    assert raised.value.exit_code == 0


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise ValueError("cannot read item 0: the disk went away")


def test_an_error_in_a_loader_worker_shows_what_went_wrong(capsys):
    """torch re-raises a worker's error with the traceback as its message; its first line alone
    ("Caught ValueError in DataLoader worker process 0.") does not say what happened."""
    import typer

    from neuronscope.commands.common import cli_command

    def command(debug: bool = False) -> None:
        next(iter(torch.utils.data.DataLoader(_Unreadable(), num_workers=1)))

    with pytest.raises(typer.Exit) as raised:
        cli_command(command)()
    assert raised.value.exit_code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "DataLoader worker" in line and "ValueError: cannot read item 0: the disk went away" in line, line


@pytest.mark.parametrize("command", [
    ["scan", "--model", "mini-clip", "--images", "IMAGES"],
    ["visualize", "--model", "mini-clip", "--units", "0"],
    ["words", "--model", "mini-clip", "--vocab", "colours"],
    ["attribute", "--model", "mini-clip", "--prompt", "a star"],
    ["textvis", "--model", "mini-clip", "--units", "0"],
    ["emotions", "--model", "mini-clip"],
    ["reproduce", "words", "--weights", "random"],
    ["world", "eval"],
])
def test_an_out_that_is_a_file_is_refused_before_the_model_loads(monkeypatch, tmp_path, command):
    """A wrong --out costs nothing computed: every atlas-writing command refuses a file up front, not after
    its basis, probe or evaluation."""
    import neuronscope.models

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(neuronscope.models, "load_model", no_loading)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    args = [str(tmp_path / "images") if arg == "IMAGES" else arg for arg in command]
    result = invoke(*args, "--out", str(target))
    assert result.exit_code == 1 and "is a file, not an atlas folder" in result.output, result.output
    assert target.read_text() == "mine"


@pytest.mark.parametrize("command", [["build", "--root"], ["train", "--world"]])
def test_world_commands_take_the_shared_debug_option(tmp_path, command):
    from neuronscope.errors import WorldFileMissing

    args = ["world", *command, str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 1 and "Traceback" not in plain.output
    assert isinstance(CliRunner().invoke(app, [*args, "--debug"]).exception, WorldFileMissing)  # re-raised whole


def test_the_shared_checks_and_report_of_atlas_writing_commands(tmp_path):
    from neuronscope.commands.common import fill_report, require_model, require_out
    from neuronscope.errors import NeuronscopeError

    with pytest.raises(NeuronscopeError, match="^no model given: pass --model NAME"):
        require_model(None)
    with pytest.raises(NeuronscopeError, match="^textvis needs --out ATLAS"):
        require_out("", "textvis")
    (tmp_path / "file").write_text("")
    with pytest.raises(NeuronscopeError):
        require_out(str(tmp_path / "file"), "textvis")  # a file is no atlas: refused before any model loads
    report = fill_report(None, None, "m@w", ["l"], 3, 1.23456, kind="plain")
    assert report == {"atlas": None, "run_id": None, "model": "m@w", "layers": ["l"], "units": 3, "seconds": 1.235,
                      "skipped": {}, "kind": "plain"}


def test_a_recorded_command_is_every_option_in_effect_and_no_absolute_path(tmp_path):
    """Each command built its recorded line by hand, and the copies left out options their runs depend on.
    The one builder takes the options in effect from the command itself: defaults included, the model's key
    and the precision it ran at, flags (--no-X too), repeated options; none of ``leave_out``, none None."""
    from types import SimpleNamespace

    from neuronscope.commands.common import HOW_IT_RUNS, recorded_command

    toy, recorded = typer.Typer(), []
    loaded = SimpleNamespace(key="m@random", spec=SimpleNamespace(name="m", weights="random"),
                             precision=SimpleNamespace(name="fp32"))

    @toy.callback()
    def root() -> None:
        """A group, as neuronscope is."""

    @toy.command("fill")
    def fill(ctx: typer.Context, model: Annotated[str, typer.Option("--model", "-m")] = "m",
             weights: Optional[str] = None, out: str = "", images: Optional[str] = None, vocab: str = "english-10k", seed: int = 0,
             lr: float = 0.05, thumbnails: Annotated[bool, typer.Option("--thumbnails/--no-thumbnails")] = True,
             drop: Annotated[bool, typer.Option("--drop")] = False,
             prompt: Annotated[Optional[list[str]], typer.Option("--prompt")] = None, device: str = "auto",
             precision: str = "auto", batch_size: int = 8) -> None:
        recorded.append(recorded_command(ctx, loaded, paths=("images", "vocab")))

    photos = tmp_path / "photos"
    args = ["fill", "--model", "m", "--out", str(tmp_path / "atlas"), "--images", str(photos), "--seed", "3",
            "--no-thumbnails", "--drop", "--prompt", "a cat", "--prompt", "b", "--device", "cpu"]
    for given, images in ((args, "photos"), ([*args, "--images", "data/photos", "--vocab", "my words.txt"],
                                             "data/photos")):
        assert CliRunner().invoke(toy, given).exit_code == 0
        vocab = "'my words.txt'" if "--vocab" in given else "english-10k"
        assert recorded.pop() == (f"neuronscope fill --model m@random --out atlas --images {images} --vocab {vocab} "
                                  "--seed 3 --lr 0.05 --no-thumbnails --drop --prompt 'a cat' --prompt b "
                                  "--precision fp32")
    assert HOW_IT_RUNS >= {"device", "batch_size", "json_out", "debug"}
    # weights from a file: a NAME@sha256:... key cannot be loaded, so the architecture and the file as given
    loaded.key, loaded.spec.weights = "m@sha256:0123456789ab", "sha256:0123456789ab"
    assert CliRunner().invoke(toy, ["fill", "--model", "m", "--weights", str(tmp_path / "w.pt")]).exit_code == 0
    assert recorded.pop().startswith("neuronscope fill --model m --weights w.pt --out '' --vocab english-10k")
    assert CliRunner().invoke(toy, ["fill", "--model", "ckpt/run"]).exit_code == 0  # a checkpoint folder
    assert recorded.pop().startswith("neuronscope fill --model ckpt/run --out '' --vocab english-10k")


def test_zeroshot_refuses_a_template_without_braces_before_the_model_loads(monkeypatch, tmp_path):
    from neuronscope.commands import zeroshot as zeroshot_command

    monkeypatch.setattr(zeroshot_command, "load_cli_model", lambda *a: pytest.fail("the model loaded first"))
    result = invoke("zeroshot", "--template", "a photo", "--classes", "cat,dog", str(tmp_path))
    assert result.exit_code == 1 and "--template 'a photo' has no {}" in result.output


@pytest.mark.parametrize("bad", ["nothere.png", "notes.md"])
def test_zeroshot_refuses_a_bad_input_anywhere_in_the_list_before_the_model_loads(monkeypatch, tmp_path, bad):
    """Inputs are decoded lazily: a typo last in the list used to surface after every image before it had gone
    through the model, and nothing was printed; the message named --images, an option zeroshot has not."""
    from PIL import Image

    from neuronscope.commands import zeroshot as zeroshot_command
    from neuronscope.errors import NeuronscopeError
    from neuronscope.mining.loader import iter_decoded

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "notes.md").write_text("not an image")
    monkeypatch.setattr(zeroshot_command, "load_cli_model", lambda *a: pytest.fail("the model loaded first"))
    result = invoke("zeroshot", "--classes", "cat,dog", str(tmp_path / "a.png"), str(tmp_path), str(tmp_path / bad))
    assert result.exit_code == 1 and f"{tmp_path / bad}: " in result.output and "--images" not in result.output
    with pytest.raises(NeuronscopeError, match=bad):  # the API refuses before the first image too
        next(iter_decoded([str(tmp_path / "a.png"), str(tmp_path / bad)]))


@pytest.mark.parametrize(("failure", "line"), [
    (OSError(28, "No space left on device", "atlas/checkpoints/k.npz"),
     "error: no space left on the device writing atlas/checkpoints/k.npz: free some space and run the same "
     "command again (scan resumes from its last checkpoint)"),
    (OSError(122, "Disk quota exceeded"),
     "error: over the disk quota: free some space and run the same command again (scan resumes from its last "
     "checkpoint)"),
])
def test_a_full_disk_says_to_free_space_and_run_the_command_again(monkeypatch, tmp_path, failure, line):
    """Was "error: OSError: [Errno 28] No space left on device (run with --debug ...)"."""
    from neuronscope.atlas import Atlas
    from tests.helpers import make_images

    def disk_full(*args, **kwargs) -> None:
        raise failure

    monkeypatch.setattr(Atlas, "write_scan", disk_full)
    make_images(tmp_path / "images")
    result = invoke("scan", "--model", "tiny-rn", "--weights", "random", "--layers", "neurons", "--images",
                    str(tmp_path / "images"), "--out", str(tmp_path / "atlas"), "--device", "cpu", "--no-thumbnails")
    assert result.exit_code == 1 and result.stderr.strip().splitlines()[-1] == line, result.stderr


def test_a_full_atlas_database_and_a_wrapped_write_failure_are_read_as_a_full_disk(capsys):
    """sqlite says "database or disk is full"; a write failure re-raised as another error keeps its cause."""
    import sqlite3

    import typer

    from neuronscope.commands.common import cli_command, disk_full_message

    def words(debug: bool = False) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with pytest.raises(typer.Exit) as raised:
        cli_command(words)()
    assert raised.value.exit_code == 1
    assert capsys.readouterr().err == ("error: no space left on the device writing the atlas database: free some "
                                       "space and run the same command again (words resumes from its last "
                                       "checkpoint)\n")
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("PytorchStreamWriter failed writing file data/0")  # noqa: B904 - as torch does
    except RuntimeError as wrapped:
        assert disk_full_message(wrapped, "visualize").endswith("(visualize renders only the missing units)")
    assert disk_full_message(OSError(28, "No space left on device"), "label").endswith("run the same command again")
    assert disk_full_message(OSError(13, "Permission denied")) is None


@pytest.mark.parametrize(("command", "line"), [
    ("scan", "interrupted: run the same command again to resume (scan resumes from its last checkpoint)"),
    ("emotions", "interrupted: run the same command again to resume (emotions reuses the attribution basis it "
                 "kept)"),
    ("label", "interrupted"),  # nothing to resume
])
def test_ctrl_c_says_to_run_the_command_again_where_that_resumes(capsys, command, line):
    """Ctrl-C printed only "interrupted": not the one thing a user then needs, that the same command resumes."""
    import typer

    from neuronscope.commands.common import cli_command

    def stopped(debug: bool = False) -> None:
        raise KeyboardInterrupt

    stopped.__name__ = command
    with pytest.raises(typer.Exit) as raised:
        cli_command(stopped)()
    assert raised.value.exit_code == 130 and capsys.readouterr().err == line + "\n"


def test_demo_json_off_a_terminal_writes_the_json_alone(tmp_path):
    """The README's rule for --json with a non-tty stderr: it wrote "building ... from ..." there."""
    args = ["demo", "--out", str(tmp_path / "atlas"), "--model", "tiny-rn", "--weights", "random", "--device", "cpu",
            "--skip", "scan,labels,featurevis,facets,words,texts", "--no-serve", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and json.loads(result.stdout)["model"].startswith("tiny-rn")
    result = runner.invoke(app, [arg for arg in args if arg != "--json"])
    assert result.stderr.startswith(f"building {tmp_path / 'atlas'} from tiny-rn")  # without --json: as before


def test_help_and_the_commands_that_read_an_atlas_start_without_torch(tmp_path, web_atlas):
    """Every ``--help``, ``show`` and ``export`` import neither torch nor open_clip (3-4 s of start-up before
    anything is printed): the commands import what they run when they run. So does the microscope serving a
    scanned unit's page and conditional plot, and an export with plots (the plot's bucketing imported torch
    through ``neuronscope.mining``'s ``__init__``: 3-5 s and 500 MB on the first plot)."""
    import subprocess
    import sys

    from tests.web_atlas import FAM_LAYER, HUB_MODEL, LAYER, build_family_atlas, build_hub_atlas

    atlas = build_hub_atlas(tmp_path / "atlas")
    families = build_family_atlas(tmp_path / "families")  # the family filter, tags and unit block: atlas reads only
    unit_url = f"/m/tiny-rn/l/{LAYER}/u/2"
    family_url = f"/m/fam-model/l/{FAM_LAYER}"
    script = f"""
import json, sys
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from neuronscope.cli import app
from neuronscope.web import create_app

runner = CliRunner()
commands = [[command.name] for command in app.registered_commands]
commands += [[group.name, command.name or command.callback.__name__] for group in app.registered_groups
             for command in group.typer_instance.registered_commands]
calls = [["--help"], *[[*command, "--help"] for command in commands],
         ["show", {str(atlas)!r}, "--model", {HUB_MODEL!r}, "--layer", "neurons", "--unit", "1", "--json"],
         ["export", {str(atlas)!r}, "--site", {str(tmp_path / "site")!r}],
         ["export", {str(web_atlas)!r}, "--site", {str(tmp_path / "plots")!r}],
         ["export", {str(families)!r}, "--site", {str(tmp_path / "families-site")!r}]]
for args in calls:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
with TestClient(create_app({str(web_atlas)!r})) as client:
    for url in ({unit_url!r}, {unit_url + "/conditional.svg"!r}):
        assert client.get(url).status_code == 200, url
with TestClient(create_app({str(families)!r})) as client:
    for url in ("/", {family_url + "?family=lexical"!r}, {family_url + "/u/1?family=lexical"!r}):
        assert "lexical" in client.get(url).text, url
print(json.dumps({{"calls": len(calls), "heavy": sorted(name for name in sys.modules
                                                        if name.split(".")[0] in ("torch", "open_clip"))}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["calls"] > 20 and report["heavy"] == []
    assert "<svg" in next((tmp_path / "plots").rglob("conditional.svg")).read_text()


def _assert_wrapped_evenly(rows: list[str], width: int) -> None:
    """No row of a paragraph could have taken the next row's first word (Rich wrapped it, not the source)."""
    for previous, row in zip(rows, rows[1:]):
        if previous.strip() and row.strip():
            assert len(previous.rstrip()) + 1 + len(row.split()[0]) > width, (previous, row)


def test_help_wraps_each_paragraph_evenly_and_lists_each_commands_first_sentence():
    """Rich --help kept docstrings' line breaks in the command list and in a page's later paragraphs, so rows
    broke where the source did ("stats" alone, then "and a histogram"); each paragraph is now one line that
    Rich wraps, the list shows each command's first sentence, and the command's own --help keeps the rest."""
    rows = runner.invoke(app, ["--help"]).output.splitlines()
    panel = rows[next(i for i, row in enumerate(rows) if "Commands" in row) + 1:]
    panel = [row[1:-1] for row in panel[:next(i for i, row in enumerate(panel) if row.startswith("╰"))]]
    column = panel[0].index("List architectures")  # where descriptions start
    for start, row in enumerate(panel):
        if row[:column].strip():  # a command's first row: check its entry
            entry = [row[column:]]
            entry += [r[column:] for r in panel[start + 1:][:next((i for i, r in enumerate(panel[start + 1:])
                                                                   if r[:column].strip()), None)]]
            _assert_wrapped_evenly(entry, len(panel[0]) - column - 1)
    assert not any("A killed scan" in row for row in panel)
    assert "A killed scan, started again" in " ".join(runner.invoke(app, ["scan", "--help"]).output.split())
    page = runner.invoke(app, ["demo", "--help"]).output.splitlines()
    prose = page[page.index(next(row for row in page if "Started again" in row)):]
    _assert_wrapped_evenly([row[1:] for row in prose[:prose.index("")]], len(page[0]) - 2)
