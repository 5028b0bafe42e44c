"""``neuronscope demo``: the main job (``make demo``).

Builds (or completes) an atlas of the bundled mini CLIP over its bundled test
split: scan, labels, multimodality scores, feature visualization of every unit of ``neurons``,
faceted renders, rastered words, families and text-side texts; then serves it in the
microscope (``--no-serve`` only builds; ``--site DIR`` also writes a static site).
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from neuronscope.commands.common import (
    BatchSizeOpt,
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    ProgressBars,
    SeedOpt,
    WeightsOpt,
    cli_command,
    fill_report,
    load_cli_model,
    print_json,
)
from neuronscope.commands.microscope import WEB_MODULES, _web
from neuronscope.demo import STAGES, DemoSettings, build_demo_atlas


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="The atlas to build or complete.")] = Path("demo-atlas"),
    steps: Annotated[int, typer.Option("--steps", min=1, help="Feature-vis optimiser steps (Lucid: 512).")] = 128,
    units: Annotated[str, typer.Option("--units", "-u", help="Units to render: all or 0-31,40.")] = "all",
    images: Annotated[Optional[int], typer.Option("--images", min=1, help="Scan an evenly spaced subset of this "
                                                                          "many split images (default: all).")] = None,
    vocab: Annotated[str, typer.Option("--vocab", help="Rastered-word vocabulary: english-10k, ... or a FILE.")]
    = "english-10k",
    skip: Annotated[str, typer.Option("--skip", help=f"Stages not to run, comma-separated: {', '.join(STAGES)}.")]
    = "",
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the microscope when built.")] = True,
    site: Annotated[Optional[Path], typer.Option("--site", help="Also export a static site to DIR.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address the microscope binds.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="The microscope's port.")] = 8000,
    model: ModelOpt = "mini-clip",
    weights: WeightsOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    batch_size: BatchSizeOpt = 32,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Build an atlas of the bundled mini CLIP (scan, labels, multimodality, feature vis, facets, words, families,
    texts) and browse it.

    Started again, it reuses what the atlas already holds and goes on where it stopped. The labels, multimodality and
    facets stages need the bundled card's model (mini-clip@bundled); on another --model they are skipped."""
    from neuronscope.runtime import seed_everything

    # a missing web extra fails now, not after the build (a static --site alone needs only jinja2)
    web = _web(WEB_MODULES if serve else ("jinja2",)) if serve or site is not None else None
    seed_everything(seed)
    settings = DemoSettings(steps=steps, units=units, images=images, vocabulary=vocab,
                            skip=tuple(s.strip() for s in skip.split(",") if s.strip()), batch_size=batch_size,
                            seed=seed)
    loaded = load_cli_model(model, weights, device, precision)
    quiet = json_out and not sys.stderr.isatty()  # a script's captured streams hold the JSON alone
    if not quiet:
        typer.echo(f"building {out} from {loaded.key} ({loaded.precision.name}: {loaded.precision.reason})",
                   err=True)
    bars = ProgressBars(quiet=quiet, every_s=15.0)
    try:
        outcome = build_demo_atlas(loaded, out, settings, progress=bars)
    finally:
        bars.close()
    # run_id: the scan's run; then the settings and each stage's report
    summary = fill_report(out, outcome.scan_run, outcome.model, [outcome.layer], outcome.units, outcome.seconds,
                          outcome.skipped, settings=asdict(outcome.settings),
                          stages=[asdict(stage) for stage in outcome.stages])
    if site is not None:
        exported = web.export_site(out, site)
        summary["site"] = str(site)
        if not quiet:
            typer.echo(f"static site: {exported.pages} pages in {site}; open {site / 'index.html'}", err=True)
    if json_out:
        print_json(summary)
    else:
        for stage in outcome.stages:
            typer.echo(f"  {stage.stage:<11} {stage.status:<8} {stage.seconds:7.1f} s  {stage.summary}")
        typer.echo(f"atlas {out}: {outcome.model} {outcome.layer}, built in {outcome.seconds:.0f} s")
    if serve:
        web.serve(out, host=host, port=port)


def register(app: typer.Typer) -> None:
    app.command("demo")(cli_command(demo))
