"""``neuronscope multimodal``: which units answer one concept both seen and read, and how strongly."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from neuronscope.commands.common import (
    HOW_IT_RUNS,
    BatchSizeOpt,
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
    resumed_note,
)
from neuronscope.commands.words import (DEFAULT_FONTS, DEFAULT_POSITIONS, DEFAULT_SIZES, FontsOpt, PositionsOpt,
                                        SizesOpt, WorkersOpt, raster_settings)
from neuronscope.commands.zeroshot import ClassesFileOpt, ClassesOpt, read_classes
from neuronscope.errors import NeuronscopeError

if TYPE_CHECKING:  # the command imports torch only once it runs
    from neuronscope.models import LoadedModel
    from neuronscope.probing.multimodal import LabelledImages, MultimodalMeasurement, ResponsesHook
    from neuronscope.probing.multimodal_store import MultimodalRun
    from neuronscope.probing.raster import RasterSettings

#: Below this many images, a concept's AUROCs are noisy: the command says so beside the control.
FEW_IMAGES = 10

NamesOpt = Annotated[Optional[Path], typer.Option(
    "--names", help="A FILE of 'category<TAB>name' lines naming categories that are not words (ImageNet's "
                    "n01440764 folders: tench); the names are what gets rastered and reported.")]


def category_names(path: Path | None) -> dict[str, str] | None:
    """``--names``: ``{category: name}`` from tab-separated lines (blank lines and ``#`` comments skipped)."""
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise NeuronscopeError(f"--names {path}: cannot be read as UTF-8 text ({err.__class__.__name__})") from None
    names = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        category, tab, name = line.partition("\t")
        if not tab or not category.strip() or not name.strip():
            raise NeuronscopeError(f"--names {path}: line {number} ({line!r}) is not 'category<TAB>name'")
        names[category.strip()] = name.strip()
    return names


def multimodal(
    ctx: typer.Context,
    images: Annotated[Optional[list[str]], typer.Option(
        "--images", "-i", help="Labelled images: a folder (a subfolder per concept), .tar shard or .txt list whose "
                               "index.json or folders name each image's concept; repeat for several. None: the "
                               "bundled mini CLIP's held-out drawings and words (its card's measurement, fp32).")] = None,
    model: ModelOpt = "mini-clip",
    weights: WeightsOpt = None,
    layer: LayerOpt = "neurons",
    classes: ClassesOpt = None,
    classes_file: ClassesFileOpt = None,
    names: NamesOpt = None,
    per_concept: Annotated[Optional[int], typer.Option(
        "--per-concept", min=1, help="Measure a sample of at most N images a concept, drawn with --seed (the "
                                     "responses take 4 bytes an image and unit in memory).")] = None,
    seed: SeedOpt = 0,
    threshold: Annotated[float, typer.Option("--threshold", min=0.5, max=1.0, help="Both AUROCs must reach it "
                                             "for a unit to count as multimodal.")] = 0.9,
    sizes: SizesOpt = DEFAULT_SIZES,
    positions: PositionsOpt = DEFAULT_POSITIONS,
    fonts: FontsOpt = DEFAULT_FONTS,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Store the scores in this atlas (unit pages "
                                               "and `show` then give each unit's concept and score).")] = None,
    label: Annotated[bool, typer.Option("--label", help="With --out: label each multimodal unit with its "
                                        "concept (a label from elsewhere is kept).")] = False,
    top: Annotated[int, typer.Option("--top", min=1, help="Units printed.")] = 20,
    batch_size: BatchSizeOpt = 32,
    workers: WorkersOpt = 1,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Score how multimodal every unit of a layer is: its concept is the one it answers most among labelled
    images; its score is the weaker of two AUROCs for that concept against the others, among the images and
    among the concept names rastered as words. A unit is multimodal when both reach --threshold and the words'
    top concept is the same. The same measurement with the images' labels shuffled says how many pass by
    chance. Resumable with --out: the same command after a kill continues."""
    from neuronscope.atlas import check_atlas_target
    from neuronscope.probing.multimodal import folder_like_names, labelled_images

    require_model(model)
    if label and not out:
        raise NeuronscopeError("--label writes labels into an atlas: give --out ATLAS too")
    if out:
        check_atlas_target(out)  # before the model loads
    chosen = read_classes(classes, classes_file)
    settings = raster_settings(sizes, positions, fonts)
    if images:
        labelled = labelled_images(images, chosen or None, names=category_names(names), per_concept=per_concept,
                                   seed=seed)
        folders = folder_like_names(labelled.concepts)
        if folders:
            typer.echo(f"{len(folders)} concept name(s) read as folder names, not words ({', '.join(folders[:6])}"
                       f"{', ...' if len(folders) > 6 else ''}): they are rastered as written; give them words with "
                       "--names FILE", err=True)
    else:
        _check_bundled(chosen, names, per_concept, precision, settings)
        labelled, precision = None, "fp32"  # the card's measurement ran in fp32
    quiet = json_out and not sys.stderr.isatty()
    started = time.perf_counter()
    loaded = load_cli_model(model, weights, device, precision)
    canonical = loaded.resolve_layer(layer)
    bars = ProgressBars(quiet=quiet)
    on_batch = None if labelled is None else (lambda state: bars("images", state.done, len(labelled)))
    try:
        run = _measure(ctx, loaded, canonical, labelled, settings, threshold, label, out, batch_size, workers,
                       on_batch, quiet)
    finally:
        bars.close()
    measured = run.measurement
    result = measured.scores
    units = result.units(threshold)
    chance = result.chance(threshold)
    few = sorted(c for c, n in zip(result.concepts, result.images_per_concept) if n < FEW_IMAGES)
    if json_out:
        extra = {"labelled": list(run.labelled)} if label else {}
        if measured.dropped:
            extra["dropped_concepts"] = list(measured.dropped)
        print_json(fill_report(out, run.run_id, loaded.key, [canonical], len(result.concept), time.perf_counter() - started,
                               measured.skipped, threshold=threshold, concepts=list(result.concepts),
                               images_per_concept=list(result.images_per_concept),
                               images=sum(result.images_per_concept) if labelled is not None else None,
                               concepts_with_units=result.concepts_with_units(threshold), multimodal_units=units,
                               best_per_concept=result.best_units(threshold), chance=chance,
                               resumed_from=run.resumed_from, **extra))
        return
    typer.echo(f"{loaded.key} {canonical}: {len(units)} of {len(result.concept)} units multimodal at {threshold:g}, "
               f"for {result.concepts_with_units(threshold)} of {len(result.concepts)} concepts"
               + (f" (stored in {out}, run {run.run_id})" if out else ""))
    typer.echo(f"  with the images' labels shuffled: {', '.join(map(str, chance['units']))} units "
               f"(for {', '.join(map(str, chance['concepts']))} concepts): what chance gives on these images")
    for record in units[:top]:
        typer.echo(f"  unit {record['unit']:>5}  {record['concept']:<20} {record['score']:.3f}  "
                   f"(images {record['auroc_images']:.3f}, words {record['auroc_words']:.3f})")
    _report_left_out(labelled, measured, few)


def _check_bundled(classes: list[str], names: Path | None, per_concept: int | None, precision: str,
                   settings: RasterSettings) -> None:
    """Without --images the card's measurement runs as the card's did: refuse what it would ignore or change."""
    from neuronscope.probing.raster import RasterSettings

    if classes or names is not None or per_concept is not None:
        raise NeuronscopeError("--classes, --names and --per-concept are about the categories of --images: give "
                               "the images too")
    if settings != RasterSettings():
        raise NeuronscopeError("--sizes, --positions and --fonts raster the concept names of --images; without "
                               "--images the card's held-out-font words are used: give --images, or leave them out")
    if precision not in ("auto", "fp32"):
        raise NeuronscopeError(f"without --images the card's measurement runs in fp32 (its units are found in fp32), "
                               f"not --precision {precision}: leave --precision out, or give --images")


def _measure(ctx: typer.Context, loaded: LoadedModel, layer: str, labelled: LabelledImages | None,
             settings: RasterSettings, threshold: float, label: bool, out: str | None, batch_size: int, workers: int,
             on_batch: ResponsesHook | None, quiet: bool) -> MultimodalRun:
    """Measure, into the atlas with --out (resumable), else in memory (a run without an id)."""
    from neuronscope.atlas import Atlas
    from neuronscope.probing.multimodal import measure_multimodality
    from neuronscope.probing.multimodal_store import MultimodalRun, measure_multimodality_into

    if not out:
        return MultimodalRun(measure_multimodality(loaded, layer, labelled, settings=settings, batch_size=batch_size,
                                                   workers=workers, on_batch=on_batch))
    # --top changes what is printed, not what is stored: left out of the command the run records
    # without --images the card's own words are rastered: the raster flags (refused if given) are not in effect
    raster = {"sizes", "positions", "fonts"} if labelled is None else set()
    command = recorded_command(ctx, loaded, layer=layer, paths=("images", "classes_file", "names"),
                               leave_out=HOW_IT_RUNS | {"top"} | raster)
    with Atlas(out) as atlas:
        return measure_multimodality_into(atlas, loaded, layer, labelled, settings=settings, threshold=threshold,
                                          label=label, command=command, batch_size=batch_size, workers=workers,
                                          on_batch=on_batch, on_resume=None if quiet else resumed_note("image"))


def _report_left_out(labelled: LabelledImages | None, measured: MultimodalMeasurement, few: list[str]) -> None:
    """On stderr: unreadable files, images and concepts left out, concepts with few images."""
    if measured.skipped:
        typer.echo("skipped files: " + ", ".join(f"{n} {reason}" for reason, n in measured.skipped.items()), err=True)
    if labelled is not None and labelled.left_out:
        typer.echo("images left out: " + ", ".join(f"{n} ({reason})" for reason, n in labelled.left_out.items()),
                   err=True)
    if measured.dropped:
        typer.echo(f"concepts left out (no readable image): {', '.join(measured.dropped)}", err=True)
    if few and labelled is not None:
        typer.echo(f"{len(few)} concept(s) have fewer than {FEW_IMAGES} images ({', '.join(few[:5])}"
                   f"{', ...' if len(few) > 5 else ''}): their AUROCs are noisy; compare the units found with the "
                   "shuffled-label count above", err=True)


def register(app: typer.Typer) -> None:
    app.command("multimodal")(cli_command(multimodal))
