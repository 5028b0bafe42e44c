"""``neuronscope visualize``: feature visualizations of units (plain, diverse or faceted), into an atlas or PNGs."""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from neuronscope.atlas import Atlas, check_atlas_target
from neuronscope.atlas.runs import marked_interrupted
from neuronscope.commands.common import (
    HOW_IT_RUNS,
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    LayerOpt,
    ModelOpt,
    PrecisionOpt,
    ProgressBars,
    SeedOpt,
    WeightsOpt,
    cli_command,
    fill_report,
    load_cli_model,
    print_json,
    recorded_command,
    require_model,
)
from neuronscope.errors import NeuronscopeError
from neuronscope.units import parse_units

if TYPE_CHECKING:
    from neuronscope.models import LoadedModel
    from neuronscope.visualize import RenderConfig, UnitRender


def _png_name(render: UnitRender, multiple: bool) -> str:
    if render.kind == "plain":
        return f"{render.unit}.png"
    if render.kind == "diverse":
        return f"{render.unit}_{render.index}.png"
    facet = render.kind.split(":", 1)[1]
    return f"{render.unit}_{facet}_{render.index}.png" if multiple else f"{render.unit}_{facet}.png"


def _recorded_command(ctx: typer.Context, model: LoadedModel, layer: str, config: RenderConfig, facet: str | None,
                      generic: str | None, facet_strengths: int | None) -> str:
    """The command line a run records: every option that changes the images, the batch size and (on a CPU)
    torch's thread count among them (other passes or kernels, other float rounding, which 512 steps amplify
    into another image), as the render ran them (the faceted render's own learning rate,
    its number of strengths); facet sources (folders, shards, lists) by name, never a path."""
    def folder_or_name(value: str | None) -> str | None:
        return Path(value).name if value and Path(value).exists() else value

    return recorded_command(ctx, model, leave_out=HOW_IT_RUNS - {"batch_size"} | {"png"}, threads=True,
                            layer=layer, lr=config.lr, facet=folder_or_name(facet), generic=folder_or_name(generic),
                            facet_strengths=facet_strengths)


def visualize(
    ctx: typer.Context,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    layer: LayerOpt = "neurons",
    units: Annotated[str, typer.Option("--units", "-u", help="Units: 0-31,550 or all.")] = "",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimiser steps (Lucid: 512).")] = 512,
    size: Annotated[Optional[int], typer.Option("--size", min=8, help="Image side (default: the model's input "
                                                                      "size; never resized to fit).")] = None,
    param_size: Annotated[Optional[int], typer.Option("--param-size", min=4, help="Optimise the image at this "
                                                      "side and upsample it (Lucid's lowres_tensor): no detail "
                                                      "finer than its pixels (default: the image's side).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per pass.")] = 16,
    lr: Annotated[Optional[float], typer.Option("--lr", min=0.0, help="Adam learning rate (default: Lucid's 0.05; "
                                                                     "facets the paper's 0.02).")] = None,
    l2: Annotated[float, typer.Option("--l2", min=0.0, help="Weight of an L2 penalty on the image (times its RMS "
                                                           "distance from grey; a faceted render also has the "
                                                           "paper's own 10 x mean square).")] = 0.0,
    tv: Annotated[float, typer.Option("--tv", min=0.0, help="Weight of a total-variation penalty.")] = 0.0,
    facet: Annotated[Optional[str], typer.Option(
        "--facet", help="Faceted render: a built-in facet (text, drawing) or a folder, .tar shard or .txt list "
                        "of facet images.")] = None,
    generic: Annotated[Optional[str], typer.Option(
        "--generic", help="Folder, .tar shard or .txt list of generic images (with --facet SRC).")] = None,
    facet_strengths: Annotated[Optional[int], typer.Option("--facet-strengths", min=1,
                                                           help="Images per unit, facet strength ramped 0.1 to 5 "
                                                                "(default 1: strength 5 only).")] = None,
    diverse: Annotated[int, typer.Option("--diverse", min=0, help="N different images per unit (Lucid's "
                                                                  "diversity objective); 0: off.")] = 0,
    diversity_weight: Annotated[float, typer.Option(
        "--diversity-weight", min=0.0, help="With --diverse: the diversity term's weight against the unit's "
                                            "(Lucid's 1e2 is 100 x (N - 1) here).")] = 1.0,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Atlas directory to store renders in.")] = None,
    png: Annotated[Optional[str], typer.Option("--png", help="Folder for <unit>.png files (no atlas needed).")
                   ] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Render feature visualizations: images optimised to make each unit fire (Lucid's recipe), one image per
    unit, many units per pass. --diverse N: N different images per unit. --facet: steered towards a facet."""
    import torch

    from neuronscope.runtime import seed_everything
    from neuronscope.visualize import RenderConfig, render_diverse, render_units
    from neuronscope.visualize import facets
    from neuronscope.visualize.store import (FeatureVisWriter, facet_name, facet_probe, load_facet_images,
                                             render_entry)

    if not out and not png:
        raise NeuronscopeError("visualize needs --out ATLAS, --png DIR, or both")
    if not units:
        raise NeuronscopeError("no units given: pass --units, e.g. 0-31,550 or all")
    if facet and diverse:
        raise NeuronscopeError("--facet and --diverse are separate renders; run them one at a time")
    if not facet and (generic or facet_strengths is not None):
        raise NeuronscopeError(f"{'--generic' if generic else '--facet-strengths'} goes with --facet NAME|SRC; "
                               f"add --facet or leave it out")
    if diverse == 1:
        raise NeuronscopeError("--diverse needs at least 2 images per unit (or 0 for a plain render)")
    if diversity_weight != 1.0 and not diverse:
        raise NeuronscopeError("--diversity-weight weighs the diversity of --diverse N renders: add --diverse")
    kind = f"facet:{facet_name(facet, generic)}" if facet else ("diverse" if diverse else "plain")
    strengths = facets.facet_strengths(facet_strengths or 1)
    require_model(model)
    if out:
        check_atlas_target(out)
    seed_everything(seed)
    loaded = load_cli_model(model, weights, device, precision)
    canonical = loaded.resolve_layer(layer)
    n_units, _ = loaded.layer_shape(canonical)
    chosen = parse_units(units, n_units)
    side = size or max(loaded.preprocess.image_size)
    if param_size is not None and param_size > side:
        raise NeuronscopeError(f"--param-size {param_size} is larger than the image ({side} px): the "
                               f"parameterization is only ever upsampled; give at most {side}")
    if facet:
        facets.check_probe_layers(loaded, canonical)
    config = RenderConfig(steps=steps, lr=0.05 if lr is None else lr, size=size, param_size=param_size, l2=l2, tv=tv,
                          seed=seed)
    # A faceted render runs the paper's lr unless --lr replaces it, and the paper's squared-L2 term (10);
    # --l2 adds its own RMS penalty, as for any render.
    facet_settings = facets.FacetSettings(lr=facets.FACET_LR if lr is None else lr)
    if facet:
        config = facet_settings.apply(config)
    png_dir = Path(png) if png else None
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)

    # Loaded before the atlas is opened: a facet whose images fail leaves no new, empty atlas behind.
    facet_images = load_facet_images(loaded, facet, generic) if facet else None
    started = time.perf_counter()
    written: list[dict] = []
    atlas = Atlas(out) if out else None
    bars = ProgressBars(quiet=json_out and not sys.stderr.isatty())
    progress = bars.track(f"visualize {kind} (steps)")
    writer = None
    already = 0  # units found rendered with these settings in the atlas
    multiple = len(strengths) > 1
    try:
        # Trained (or read from the atlas) before the run starts: a facet that fails leaves no run behind.
        probe = facet_probe(loaded, facet, generic, atlas, images=facet_images) if facet else None
        if atlas is not None:
            command = _recorded_command(ctx, loaded, canonical, config, facet, generic,
                                        len(strengths) if facet else None)
            settings = {**config.to_dict(), **(facet_settings.job_settings() if facet else {"facet_l2": None}),
                        "facet_strengths": len(strengths) if facet else None,
                        "facet_probe": probe.key if probe else None, "diverse": diverse}
            if diversity_weight != 1.0:  # only then: the runs of the default weight keep their keys (and resume)
                settings["diversity_weight"] = diversity_weight
            if loaded.device.type == "cpu":  # another thread count renders other images: another run, as the
                settings["threads"] = torch.get_num_threads()  # batch size makes one (and the command says it)
            writer = FeatureVisWriter.start(atlas, loaded, canonical, kind=kind, settings=settings,
                                            batch_size=batch_size, command=command)
            if png_dir is None:  # atlas only: units this job rendered before (killed or finished) are kept
                todo = writer.missing(chosen)
                already, chosen = len(chosen) - len(todo), todo

        def store(batch: list[UnitRender]) -> None:
            """Write each pass as soon as it is done: a killed render keeps what it finished."""
            entries = writer(batch) if writer is not None else [render_entry(render, None) for render in batch]
            for render, entry in zip(batch, entries):
                if png_dir is not None:
                    file = png_dir / _png_name(render, multiple)
                    file.write_bytes(render.png())
                    entry = {**entry, "png": str(file)}
                written.append(entry)

        # The job's run is marked `interrupted` (resumable) if a render fails or is killed.
        with marked_interrupted(writer.atlas, writer.run_id) if writer is not None else nullcontext():
            if probe is not None:
                facets.render_faceted(loaded, canonical, chosen, probe, strengths=strengths, batch_size=batch_size,
                                      config=config, settings=facet_settings, on_step=progress, on_pass=store)
            elif diverse:
                for number, unit in enumerate(chosen):
                    def step_hook(done: int, total: int, n: int = number) -> None:
                        progress(n * total + done, len(chosen) * total)
                    store(render_diverse(loaded, canonical, unit, diverse, weight=diversity_weight, config=config,
                                         on_step=step_hook))
            else:
                render_units(loaded, canonical, chosen, batch_size=batch_size, config=config, on_step=progress,
                             on_pass=store)
            if writer is not None:
                writer.finish()
    finally:
        bars.close()
        if atlas is not None:
            atlas.close()
    run_id = writer.run_id if writer is not None else None
    seconds = time.perf_counter() - started
    if json_out:
        print_json(fill_report(out, run_id, loaded.key, [canonical], len(chosen), seconds, kind=kind,
                               already_rendered=already, renders=written))
        return
    where = " and ".join(filter(None, [f"{out} (run {run_id})" if out else None, png]))
    earlier = f" ({already} unit(s) rendered earlier with these settings kept)" if already else ""
    typer.echo(f"{loaded.key}: {len(written)} {kind} render(s) of {len(chosen)} unit(s) of {canonical} "
               f"in {seconds:.1f} s ({steps} steps) -> {where}{earlier}")


def register(app: typer.Typer) -> None:
    app.command("visualize")(cli_command(visualize))
