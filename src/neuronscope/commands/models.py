"""``neuronscope models [PATTERN]``: architectures and the weights each can take."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from neuronscope.commands.common import DebugOpt, JsonOpt, cli_command, print_json

if TYPE_CHECKING:
    from neuronscope.models import Architecture


def _row(arch: Architecture) -> dict[str, Any]:
    from neuronscope.models import default_weights
    from neuronscope.models.download import find_cached

    cached = [tag for tag, cfg in arch.tags.items() if find_cached(cfg) is not None]
    return {"name": arch.name, "weights": arch.weight_choices(), "default": default_weights(arch),
            "cached": cached,
            "source": arch.source, "description": arch.description}


def models(
    pattern: Annotated[Optional[str], typer.Argument(help="Shell pattern or substring, e.g. 'RN50*' or 'vit-b'.")] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List architectures and their weights (default marked *, locally cached marked +)."""
    from neuronscope.models import list_architectures

    rows = [_row(arch) for arch in list_architectures(pattern)]
    if json_out:
        print_json(rows)
        return
    if not rows:
        typer.echo(f"no model matches {pattern!r}", err=True)
        raise typer.Exit(1)
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        marked = [f"{tag}{'*' if tag == row['default'] else ''}{'+' if tag in row['cached'] else ''}"
                  for tag in row["weights"]]
        typer.echo(f"{row['name']:<{width}}  {', '.join(marked)}")
    typer.echo("\n* default when --weights is omitted, + in the local cache; any model also takes --weights PATH",
               err=True)


def register(app: typer.Typer) -> None:
    app.command("models")(cli_command(models))
