"""``neuronscope layers MODEL``: every hookable layer with its aliases and shape."""

from __future__ import annotations

import fnmatch
from typing import Annotated, Optional

import typer

from neuronscope.activations import list_layers
from neuronscope.commands.common import (
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    SeedOpt,
    WeightsOpt,
    choose_model,
    cli_command,
    print_json,
)
from neuronscope.models import RANDOM, load_model
from neuronscope.runtime import seed_everything


def layers(
    model_arg: Annotated[Optional[str], typer.Argument(metavar="MODEL", help="Model name (or use --model).")] = None,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    match: Annotated[Optional[str], typer.Option("--match", help="Only names matching this shell pattern.")] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List layers (outputs and :input entries) with shapes at the model's input size.

    Runs one dummy forward; without --weights the weights are random (shapes do
    not depend on them), so nothing is ever downloaded.
    """
    seed_everything(seed)
    loaded = load_model(choose_model(model_arg, model), weights=weights or RANDOM, device=device, precision=precision)
    infos = list_layers(loaded)
    if match:
        infos = [info for info in infos if fnmatch.fnmatchcase(info.name, match)
                 or any(fnmatch.fnmatchcase(alias, match) for alias in info.aliases)]
    if json_out:
        print_json([info.to_dict() for info in infos])
        return
    height, width = loaded.preprocess.image_size
    typer.echo(f"{loaded.key}: {len(infos)} layers at {height}x{width} (shape without the batch dim)")
    name_width = max((len(info.name) for info in infos), default=0)
    for info in infos:
        shape = "x".join(str(size) for size in info.shape)
        aliases = f"  = {', '.join(info.aliases)}" if info.aliases else ""
        typer.echo(f"{info.name:<{name_width}}  {shape}{aliases}")


def register(app: typer.Typer) -> None:
    app.command("layers")(cli_command(layers))
