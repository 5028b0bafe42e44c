"""``neuronscope serve`` and ``neuronscope export``: browse an atlas in the microscope, or write it as a site."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Optional

import typer

from neuronscope.atlas import Atlas
from neuronscope.commands.common import (AtlasArg, DebugOpt, DeviceOpt, JsonOpt, PrecisionOpt, ProgressBars,
                                         WeightsOpt, cli_command, load_cli_model, print_json)
from neuronscope.errors import NeuronscopeError


#: What the server needs at run time (a static export needs only jinja2). neuronscope.web imports them lazily
#: (inside create_app and serve), so importing it succeeds without them: each is looked up here instead.
WEB_MODULES = ("fastapi", "uvicorn", "jinja2")


def _web(needs: tuple[str, ...] = WEB_MODULES) -> ModuleType:
    """:mod:`neuronscope.web`, or an error that says how to install the web extra (``demo`` calls it too)."""
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        raise NeuronscopeError(f"the microscope needs the web extra ({', '.join(missing)} missing): "
                               "pip install 'neuronscope[web]'")
    import neuronscope.web as web

    return web


def serve(
    atlas: AtlasArg,
    host: Annotated[str, typer.Option("--host", help="Address to bind; 0.0.0.0 exposes the atlas to the network.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8000,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Load the atlas's model (NAME or NAME@WEIGHTS) so that search also attributes "
                              "new prompts to units through its text tower.")] = None,
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    debug: DebugOpt = False,
) -> None:
    """Serve the microscope over ATLAS (read-only) until Ctrl-C; prints the URL.

    Without --model the microscope needs no model: search matches the atlas's stored words, labels and texts."""
    web = _web()
    Atlas(atlas, create=False, read_only=True).close()  # a wrong ATLAS fails now, not after loading the model
    loaded = load_cli_model(model, weights, device, precision) if model else None
    web.serve(atlas, host=host, port=port, model=loaded, log_level="info" if debug else "warning")


def export(
    atlas: AtlasArg,
    site: Annotated[Path, typer.Option(
        "--site", help="Folder for the static site (new, empty, or an earlier export).")],
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Draw each unit's histogram and conditional plot.")]
    = True,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write the microscope's pages of ATLAS as plain HTML + images for any static host (relative links)."""
    web = _web(("jinja2",))
    bars = ProgressBars(quiet=json_out and not sys.stderr.isatty())
    try:
        summary = web.export_site(atlas, site, plots=plots, progress=bars.track("export (units)"))
    finally:
        bars.close()
    if json_out:
        print_json({"atlas": str(atlas), **summary.to_dict()})
    else:
        typer.echo(f"{summary.pages} pages and {summary.files} images for {summary.units} units written to "
                   f"{summary.site} in {summary.seconds:.1f} s; open {summary.site / 'index.html'}")


def register(app: typer.Typer) -> None:
    app.command("serve")(cli_command(serve))
    app.command("export")(cli_command(export))
