"""``neuronscope layers MODEL``: every hookable layer with its aliases and shape."""

from __future__ import annotations

import fnmatch
import os
from typing import Annotated, Optional

import typer

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

    Runs one dummy forward; without --weights: the default weights when they need
    no download (bundled, or in the local cache), else random (shapes do not
    depend on them), so nothing is ever downloaded.
    """
    from neuronscope.activations import list_layers
    from neuronscope.models import load_model
    from neuronscope.runtime import seed_everything

    seed_everything(seed)
    chosen = choose_model(model_arg, model)
    loaded = load_model(chosen, weights=_weights_for_layers(chosen, weights), device=device, precision=precision)
    infos = list_layers(loaded)
    if match:
        infos = [info for info in infos if fnmatch.fnmatchcase(info.name, match)
                 or any(fnmatch.fnmatchcase(alias, match) for alias in info.aliases)]
    if json_out:  # an object that names the model, as every JSON answer does (a bare list named none)
        print_json({"model": loaded.key, "layers": [info.to_dict() for info in infos]})
        return
    height, width = loaded.preprocess.image_size
    typer.echo(f"{loaded.key}: {len(infos)} layers at {height}x{width} (shape without the batch dim)")
    name_width = max((len(info.name) for info in infos), default=0)
    for info in infos:
        shape = "x".join(str(size) for size in info.shape)
        aliases = f"  = {', '.join(info.aliases)}" if info.aliases else ""
        typer.echo(f"{info.name:<{name_width}}  {shape}{aliases}")


def _weights_for_layers(model: str, weights: str | None) -> str:
    """``--weights`` as given; omitted: the model's default weights when they are at hand (bundled or in the
    local cache), else random: shapes do not depend on weights, and nothing is ever downloaded for them.

    ``NAME@WEIGHTS`` and a checkpoint path already say which weights they are,
    so passing ``random`` beside them would be a conflict, not a default.
    """
    from neuronscope.models import DEFAULT, RANDOM, split_model_name

    if weights:
        return weights
    name, inline = split_model_name(model)
    if inline is not None or os.path.exists(model):
        return DEFAULT
    return DEFAULT if _default_weights_at_hand(name) else RANDOM


def _default_weights_at_hand(name: str) -> bool:
    """Whether an omitted ``--weights`` loads without a download (``mini-clip`` means ``mini-clip@bundled``)."""
    from neuronscope.models import default_weights, download, get_architecture

    if name.startswith("hf-hub:"):
        return download.find_cached_repo(name[len("hf-hub:"):]) is not None
    return default_weights(get_architecture(name)) is not None  # an unknown name fails here, with close matches


def register(app: typer.Typer) -> None:
    app.command("layers")(cli_command(layers))
