"""`neuronscope world ...`: build the mini CLIP's world, train, evaluate."""

from __future__ import annotations

import json
import time
from dataclasses import astuple
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from ..commands.common import DebugOpt, DeviceOpt, JsonOpt, ProgressBars, SeedOpt, cli_command
from .recipe import Mix, TrainConfig

if TYPE_CHECKING:
    from .train import TrainProgress

_DEFAULTS = TrainConfig()


def _mix_text(mix: Mix) -> str:
    return ",".join(f"{share:g}" for share in astuple(mix))


def _parse_mix(text: str) -> Mix:
    try:
        shares = [float(part) for part in text.split(",")]
        if len(shares) != 4 or min(shares) < 0 or sum(shares) <= 0:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"--mix takes four non-negative shares, drawing,word,composite,reading "
                                 f"(e.g. {_mix_text(Mix())}); got {text!r}") from None
    return Mix(*shares)

app = typer.Typer(help="The mini CLIP's clipart-and-words world: build, train, eval, concepts.", no_args_is_help=True)


@app.command()
def concepts() -> None:
    """Print the world's concept names, exactly as the captions use them, one a line."""
    from .concepts import concept_names

    for name in concept_names():
        typer.echo(name)


@app.command()
@cli_command
def build(
    out: Path = typer.Option(Path("world"), help="Directory to write the world into."),
    seed: int = typer.Option(0, help="Seed of the split and of every rendered image."),
    size: int = typer.Option(64, help="Image size of the test split, in pixels."),
    root: Path = typer.Option(Path("/usr/share/openclipart/png"), help="Root of Debian's openclipart-png."),
    max_pixels: int = typer.Option(16_000_000, help="Skip files with more pixels than this (read from the header)."),
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Collect, clean and split the clipart, and render the held-out test split."""
    from .build import build_world

    world = build_world(out, seed=seed, size=size, root=root, max_pixels=max_pixels)
    summary = {"world": str(out), "concepts": len(world["concepts"]), "drawings": len(world["drawings"]),
               "reading_words": len(world["reading_words"]), "skipped": world["skipped"]}
    typer.echo(json.dumps(summary) if json_output else
               f"world at {out}: {summary['concepts']} concepts, {summary['drawings']} drawings, "
               f"{summary['reading_words']} reading words; skipped {world['skipped']}")


@app.command()
@cli_command
def train(
    world: Path = typer.Option(Path("world"), help="A directory made by `world build`."),
    out: Path = typer.Option(Path("runs/mini-clip"), help="Run directory (checkpoints; resumes if present)."),
    steps: int = typer.Option(_DEFAULTS.steps),
    batch_size: int = typer.Option(_DEFAULTS.batch_size),
    lr: float = typer.Option(_DEFAULTS.lr),
    seed: SeedOpt = 0,
    precision: str = typer.Option("fp32", help="fp32 or bf16 (autocast; only faster on CPUs with native bf16)."),
    mix: str = typer.Option(_mix_text(_DEFAULTS.mix), help="Shares of drawings, words, composites and reading "
                                                          "text in a batch (need not sum to 1)."),
    vision_width: int = typer.Option(_DEFAULTS.vision_width, help="Width of the ResNet's first stage (each "
                                                                  "later stage doubles it)."),
    augment: bool = typer.Option(_DEFAULTS.augment, help="Mirror, stretch (0.8-1.25) and tilt (+-15 degrees) "
                                                         "training drawings."),
    export: Optional[Path] = typer.Option(None, help="Also export the final weights to this directory."),
    device: DeviceOpt = "cpu",
    loader_workers: int = typer.Option(1, help="Processes rendering batches (about 0.25 s of one core a batch)."),
    debug: DebugOpt = False,
) -> None:
    """Train the mini CLIP (seeded; resumes after a kill; progress with loss and ETA).

    A GPU (--device cuda) trains the same batches faster; its weights are close to, not bit-equal to, the
    CPU's (the shipped ones are the CPU's). Threads: `neuronscope --threads 1 world train` on a busy machine."""
    from .train import export_weights
    from .train import train as run_training

    from ..runtime import resolve_device

    device = str(resolve_device(device))  # a clear error for a GPU this machine does not have
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, precision=precision,
                         mix=_parse_mix(mix), vision_width=vision_width, augment=augment)
    bars = ProgressBars(every_s=30.0)
    reported: list[int] = []  # steps trained by this command: none when the run had finished already

    def on_step(report: TrainProgress) -> None:
        reported.append(report.step)
        bars("train", report.step, report.steps, detail=f"loss {report.loss:.4f}")

    try:
        checkpoint = run_training(world, out, config, device=device, loader_workers=loader_workers, on_step=on_step)
    finally:
        bars.close()
    if not reported:
        typer.echo(f"{out} is already trained to step {steps}; nothing to do")
    if export is not None:
        export_weights(checkpoint, export)
        typer.echo(f"exported weights to {export}")


def _load_for_eval(weights: Optional[str]):
    """The bundled mini CLIP, a model folder, a weights file, or a training checkpoint (exported to a
    temporary folder, removed once loaded)."""
    import tempfile

    from ..models import DEFAULT, load_model

    checkpoint = None
    if weights and Path(weights).is_file() and Path(weights).suffix == ".pt":
        from .train import training_checkpoint

        checkpoint = training_checkpoint(weights)
    if checkpoint is not None:
        from .train import write_model_folder

        with tempfile.TemporaryDirectory(prefix="mini-clip-") as folder:  # the loaded module holds the weights
            write_model_folder(checkpoint, folder)
            return load_model(folder, precision="fp32", name="mini-clip")
    return load_model("mini-clip", weights=weights or DEFAULT, precision="fp32")  # None would mean random


@app.command("eval")
@cli_command
def eval_command(
    weights: Optional[str] = typer.Option(None, help="A model folder, a state-dict file (.pt, .safetensors) or "
                                                     "a training checkpoint.pt; default: the bundled weights."),
    split: Optional[Path] = typer.Option(None, help="A test split tar; default: the one shipped with the package."),
    seeds: int = typer.Option(3, help="Seeds of each control (untrained network, deranged labels)."),
    world: Optional[Path] = typer.Option(None, help="The world the split was built with (`world build`'s folder): "
                                                    "also score the training drawings and a linear probe fit to "
                                                    "them (where drawing accuracy is lost)."),
    card_images: Optional[Path] = typer.Option(None, help="Also write PNG sheets of the top multimodal units here."),
    out: Optional[Path] = typer.Option(None, "--out", help="An atlas to label the multimodal units in (label = concept)."),
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Evaluate the mini CLIP on the held-out split (fp32 on the CPU, through the recorder; --seeds seeds its
    controls, so it takes no --model, --device, --precision or --seed)."""
    from .card import card_tables, label_card_units, write_unit_sheets
    from .evaluate import evaluate_world
    from .split import load_test_split

    if out is not None:
        from neuronscope.atlas import check_atlas_target

        check_atlas_target(out)  # before the evaluation's minutes, not after
    started = time.monotonic()
    model = _load_for_eval(weights)
    test_split = load_test_split(split)
    report = evaluate_world(model, test_split, control_seeds=tuple(range(seeds)), world_dir=world)
    if card_images is not None:
        write_unit_sheets(model, test_split, report, card_images)
    if out is not None:
        labelled = label_card_units(out, model.key, report)
        if json_output:  # an atlas writer: CONVENTIONS' keys too, beside the report's
            report = {**_labels_report(out, model.key, report, labelled, time.monotonic() - started), **report}
    typer.echo(json.dumps(report, indent=1) if json_output else card_tables(report))


def _labels_report(out: Path, model_key: str, report: dict, labelled: int, seconds: float) -> dict:
    """CONVENTIONS' report of an atlas writer for the card's labels: no run (labels are not a run's results);
    ``units``: the labels written (a unit already labelled keeps its label)."""
    from ..commands.common import fill_report

    layers = sorted({entry["layer"] for entry in report["multimodal"]["units"]})
    return fill_report(out, None, model_key, layers, labelled, seconds)

