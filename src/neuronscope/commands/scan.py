"""``neuronscope scan``: dataset examples, histograms and stats of every unit of some layers, into an atlas."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from neuronscope.atlas import Atlas, check_atlas_target
from neuronscope.commands.common import (
    HOW_IT_RUNS,
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
    recorded_command,
    require_model,
)
from neuronscope.errors import NeuronscopeError
from neuronscope.imagefiles import PILLOW_MAX_PIXELS

if TYPE_CHECKING:
    from neuronscope.mining import ScanProgress
    from neuronscope.models import LoadedModel


class ProgressReport:
    """The scan's progress (files done, images, skipped; then the thumbnails drawn from the originals, a
    phase of its own that would otherwise look like a hang after ``ETA 0 s``) as the shared
    :class:`ProgressBars` shows it."""

    def __init__(self, *, quiet: bool = False, every_s: float = 10.0) -> None:
        self.bars = ProgressBars(quiet=quiet, every_s=every_s)

    def __call__(self, progress: ScanProgress) -> None:
        self.bars("scan (files)", progress.done, progress.total,
                  detail=f"{progress.images} images, {progress.skipped} skipped")

    def thumbnails(self, done: int, total: int) -> None:
        """The thumbnails drawn of those to draw (the reused ones left out)."""
        self.bars("thumbnails", done, total)

    def close(self) -> None:
        self.bars.close()


def _recorded_command(ctx: typer.Context, model: LoadedModel, source_name: str) -> str:
    """The command as a run records it: the source by name (no absolute paths), without the options that
    change only how the scan runs (same results). The batch size and (on a CPU) torch's thread count are kept:
    a model's forward rounds floats differently with another of either (up to ~1e-5 relative on a CPU), which
    can swap images tied that closely, and the recorded command must give back the stored run exactly."""
    return recorded_command(ctx, model, leave_out=HOW_IT_RUNS - {"batch_size"} | {"thumbnails", "backend",
                                                                                  "ray_address"},
                            threads=True, images=source_name)


def scan(
    ctx: typer.Context,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    layers: Annotated[str, typer.Option("--layers", "-l", help="Layers: names, aliases (neurons) or wildcards, "
                                                                "comma-separated; all in one forward.")] = "neurons",
    images: Annotated[str, typer.Option("--images", "-i", help="A folder (recursive), a .tar shard or a .txt "
                                                                "list of paths.")] = "",
    out: Annotated[str, typer.Option("--out", "-o", help="The atlas directory (created, or added to).")] = "",
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Top (and bottom) examples kept per unit.")] = 48,
    batch_size: BatchSizeOpt = 32,
    workers: Annotated[int, typer.Option("--workers", min=0, help="local: decoding processes (0: in the main one); "
                                                                  "ray: model replicas (0: one per GPU, or per CPU "
                                                                  "without GPUs).")] = 2,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1,
                                                  help="Files between checkpoints (also every 5 minutes).")] = 2048,
    max_pixels: Annotated[int, typer.Option("--max-pixels", min=1,
                                            help="Skip larger images (read from the header).")] = PILLOW_MAX_PIXELS,
    thumbnails: Annotated[bool, typer.Option("--thumbnails/--no-thumbnails",
                                             help="Draw top-example thumbnails.")] = True,
    backend: Annotated[str, typer.Option("--backend", help="local, or ray: the same scan by model replicas on a "
                                                           "Ray cluster (same results).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray).")] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Scan images through a model: per unit the top-k images (with the cell that fired), bottom-k, stats
    and a histogram, stored in an atlas. A killed scan, started again with the same command, resumes.
    `--backend ray` runs it on Ray (pip install 'neuronscope\\[distributed]')."""
    # The docstring's "\\[" keeps Rich's --help from reading [distributed] as markup and dropping it.
    from neuronscope.activations.names import resolve_layers, split_layer_list
    from neuronscope.mining import ScanSettings, open_source, scan as run_scan
    from neuronscope.mining.ray_backend import import_ray, scan_ray
    from neuronscope.runtime import seed_everything

    if not images or not out:
        raise NeuronscopeError("scan needs --images SRC (folder, .tar or .txt of paths) and --out ATLAS")
    check_atlas_target(out)
    if backend not in ("local", "ray"):
        raise NeuronscopeError(f"--backend {backend}: choose local or ray")
    if backend == "ray":
        import_ray()  # before loading the model: a missing Ray is the first thing to say
    require_model(model)
    seed_everything(seed)
    source = open_source(images)
    if len(source) == 0:
        raise NeuronscopeError(f"--images {images}: no image files found (looked for .jpg .png .webp .gif .bmp .tif)")
    loaded = load_cli_model(model, weights, device, precision)
    # An unknown layer fails here, before the atlas is opened: a refused scan leaves no empty atlas behind.
    canonical = resolve_layers(loaded.module, split_layer_list(layers), loaded.layer_aliases, model_key=loaded.key)
    quiet = json_out and not sys.stderr.isatty()  # a script's captured streams hold the JSON alone
    report = ProgressReport(quiet=quiet)
    settings = ScanSettings(top_k=top_k, bottom_k=top_k, seed=seed)
    try:
        with Atlas(out) as atlas:
            earlier = _layer_runs(atlas, loaded.key, canonical)
            options = dict(settings=settings, batch_size=batch_size, workers=workers,
                           checkpoint_every=checkpoint_every, max_pixels=max_pixels, thumbnails=thumbnails,
                           command=_recorded_command(ctx, loaded, source.name), on_batch=report,
                           on_thumbnails=report.thumbnails)
            if backend == "ray":
                outcome = scan_ray(loaded, source, atlas, canonical, address=ray_address, **options)
            else:
                outcome = run_scan(loaded, source, atlas, canonical, **options)
            replaced = _replaced(earlier, outcome.run_id)
            for line in _unfinished_runs_beside(atlas, outcome.run_id):
                typer.echo(line, err=True)
    finally:
        report.close()
    units = sum(layer.units for layer in outcome.layers)
    if not quiet:  # the names of a few skipped files per reason (with --json, also in the report)
        for line in outcome.skip_counts.lines():
            typer.echo(line, err=True)
    if json_out:
        # "replaced" and "skipped_files" only when there are some: a clean scan's report keeps its documented keys
        extra = {"replaced": sorted(replaced)} if replaced else {}
        if outcome.skip_counts.total:
            extra["skipped_files"] = outcome.skip_counts.files()
        print_json(fill_report(out, outcome.run_id, outcome.model, [layer.layer for layer in outcome.layers], units,
                               outcome.seconds, outcome.skipped, **extra))
        return
    resumed = f" (resumed at file {outcome.resumed_from})" if outcome.resumed_from else ""
    skipped = ", ".join(f"{reason} {count}" for reason, count in outcome.skipped.items() if count) or "none"
    typer.echo(f"{outcome.model}: scanned {outcome.images} images{resumed} into {out} (run {outcome.run_id}), "
               f"{units} units of {', '.join(layer.layer for layer in outcome.layers)} "
               f"in {outcome.seconds:.1f} s; skipped: {skipped}"
               + "".join(f"; replaced run {run_id}'s results for {', '.join(names)}"
                         for run_id, names in sorted(replaced.items())))


def _layer_runs(atlas: Atlas, model: str, layers: list[str]) -> dict[str, int]:
    """``{layer: run id}`` of the scan results the atlas holds for these layers of ``model`` (before a scan);
    a layer only probed so far (words, visualize) has none to replace."""
    return {layer: run_id for layer, run_id in atlas.scan_runs(model).items() if layer in layers}


def _replaced(earlier: dict[str, int], run_id: int) -> dict[int, list[str]]:
    """``{run id: [layers]}``: the earlier runs whose results for a layer the scan ``run_id`` replaced (a
    rescan keeps one result a layer: with another --top-k it would drop examples without a word)."""
    replaced: dict[int, list[str]] = {}
    for layer, earlier_run in earlier.items():
        if earlier_run != run_id:  # a resumed run finishing writes its own layers: nothing replaced
            replaced.setdefault(earlier_run, []).append(layer)
    return replaced


def _unfinished_runs_beside(atlas: Atlas, run_id: int) -> list[str]:
    """A line for each unfinished scan of the same model, layers and images as run ``run_id`` with other
    settings (killed with one --top-k, finished with another), whose checkpoint would otherwise stay unseen."""
    this = _scan_identity(atlas.run(run_id)["config"])
    lines = []
    for run in atlas.runs():
        if run["id"] == run_id or run["status"] not in ("running", "interrupted"):
            continue
        if _scan_identity(run["config"]) != this:
            continue
        files = [str(path) for path in atlas.checkpoints.files(run["config_key"])]
        kept = (f"; its checkpoint stays in {', '.join(files)}: delete it, or finish the run with its settings "
                f"(recorded: `{run['command']}`; its results would replace these)") if files else ""
        lines.append(f"note: run {run['id']} of these layers and images, with other settings, is unfinished "
                     f"(killed, or running now){kept}")
    return lines


def _scan_identity(config: dict) -> tuple:
    """What makes two scans the same scan but for their settings: model, layers, source name."""
    dataset = config.get("dataset")
    return config.get("model"), config.get("layers"), dataset.get("name") if isinstance(dataset, dict) else None


def register(app: typer.Typer) -> None:
    app.command("scan")(cli_command(scan))
