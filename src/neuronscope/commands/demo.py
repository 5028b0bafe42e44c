"""``neuronscope demo``: the interim main job (``make demo``).

Loads the bundled mini CLIP (or, until it ships, ``tiny-rn`` with random
weights, saying so), prints its main layers and a summary of its ``neurons``
layer over a few images of the shipped test split (or synthetic images).
"""

from __future__ import annotations

from typing import Annotated

import typer

from neuronscope.commands.common import (
    BatchSizeOpt,
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    SeedOpt,
    WeightsOpt,
    cli_command,
    load_cli_model,
    print_json,
)
from neuronscope.demo import DemoReport, demo_report, images_from_tar, synthetic_images
from neuronscope.errors import BundledModelMissing
from neuronscope.models import RANDOM, LoadedModel, load_model
from neuronscope.models.bundled import TEST_SPLIT_FILE, bundled_dir
from neuronscope.runtime import seed_everything

FALLBACK = "tiny-rn"


def _load(model: str | None, weights: str | None, device: str, precision: str) -> tuple[LoadedModel, str | None]:
    if model is not None:
        return load_cli_model(model, weights, device, precision), None
    try:
        return load_cli_model("mini-clip", weights, device, precision), None
    except BundledModelMissing as missing:
        note = f"{missing}. Showing {FALLBACK} with random weights instead."
        return load_model(FALLBACK, weights=RANDOM, device=device, precision=precision), note


def _print(report: DemoReport) -> None:
    echo = typer.echo
    echo(f"model {report.model}  precision {report.precision} ({report.precision_reason})")
    main = [info for info in report.layers if info.aliases or info.name.count(".") <= 2 and ":" not in info.name]
    echo(f"\n{len(report.layers)} hookable layers; the main ones (`neuronscope layers {report.model}` lists all):")
    width = max(len(info.name) for info in main)
    for info in main:
        aliases = f"  = {', '.join(info.aliases)}" if info.aliases else ""
        echo(f"  {info.name:<{width}}  {'x'.join(map(str, info.shape))}{aliases}")
    stats = report.stats
    echo(f"\n{report.layer} over {stats['images']} images ({report.image_source}): "
         f"mean {stats['mean']:.4f}  std {stats['std']:.4f}  max {stats['max']:.4f}  min {stats['min']:.4f}  "
         f"({stats['units']} units)")
    echo("top units by mean activation: " + ", ".join(f"{u.unit} ({u.score:.3f})" for u in report.top_units))
    echo("per image, top units by max activation (unit: value @ row,col):")
    for item in report.images:
        tops = ", ".join(f"{t['unit']}: {t['activation']:.3f} @ {t['cell'][0]},{t['cell'][1]}" for t in item.top)
        echo(f"  {item.image}: {tops}")


def demo(
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    batch_size: BatchSizeOpt = 8,
    seed: SeedOpt = 0,
    images: Annotated[int, typer.Option("--images", min=1, help="How many images to summarise.")] = 8,
    top: Annotated[int, typer.Option("--top", min=1, help="How many units to print.")] = 5,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Load the mini CLIP, print its layers and a summary of its neurons on a few images."""
    seed_everything(seed)
    loaded, note = _load(model, weights, device, precision)
    if note:
        typer.echo(f"note: {note}", err=True)
    split = bundled_dir() / TEST_SPLIT_FILE
    if split.is_file():
        pictures, source = images_from_tar(split, images), f"test split {split.name}"
    else:
        size = loaded.preprocess.image_size[0]
        pictures, source = synthetic_images(images, size, seed), "synthetic shapes (no test split shipped)"
    report = demo_report(loaded, pictures, image_source=source, top=top, batch_size=batch_size, note=note)
    if json_out:
        print_json(report.to_dict())
    else:
        _print(report)


def register(app: typer.Typer) -> None:
    app.command("demo")(cli_command(demo))
