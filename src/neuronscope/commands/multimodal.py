"""``neuronscope multimodal``: which units answer one concept both seen and read, and how strongly."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from neuronscope.commands.common import (
    BatchSizeOpt,
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    LayerOpt,
    ModelOpt,
    PrecisionOpt,
    ProgressBars,
    WeightsOpt,
    cli_command,
    fill_report,
    load_cli_model,
    print_json,
    recorded_command,
    require_model,
)
from neuronscope.commands.words import FontsOpt, PositionsOpt, SizesOpt, WorkersOpt, raster_settings
from neuronscope.errors import NeuronscopeError

ConceptsOpt = Annotated[Optional[str], typer.Option(
    "--concepts", help="The concepts to compare, comma-separated or a FILE with one a line, spelled as the "
                       "folders (or index.json categories, or --names) name them. Default: every category with "
                       "2+ images.")]


def concept_list(concepts: str | None) -> list[str] | None:
    """``--concepts`` as a list: a file's lines, or a comma-separated list."""
    if concepts is None:
        return None
    path = Path(concepts).expanduser()
    if path.is_file():
        from neuronscope.probing.vocab import read_vocabulary_file

        names = read_vocabulary_file(path)
    else:
        names = [name.strip() for name in concepts.split(",") if name.strip()]
    if len(names) < 2:
        raise NeuronscopeError(f"--concepts {concepts!r}: give at least two concepts, e.g. --concepts cat,dog,car")
    return names


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
    images: Annotated[Optional[list[str]], typer.Argument(
        metavar="IMAGES", help="Folders (one subfolder per concept), tar shards or lists whose index.json "
                                    "or folders name each image's concept. None: the bundled mini CLIP's "
                                    "held-out drawings and words (its card's measurement).")] = None,
    model: ModelOpt = "mini-clip",
    weights: WeightsOpt = None,
    layer: LayerOpt = "neurons",
    concepts: ConceptsOpt = None,
    names: NamesOpt = None,
    threshold: Annotated[float, typer.Option("--threshold", min=0.5, max=1.0, help="Both AUROCs must reach it "
                                             "for a unit to count as multimodal.")] = 0.9,
    sizes: SizesOpt = "0.5,0.7,0.9",
    positions: PositionsOpt = "0.1:0.1,0.5:0.5,0.9:0.9",
    fonts: FontsOpt = "dejavu/DejaVuSans.ttf",
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
    top concept is the same. Resumable with --out: the same command after a kill continues."""
    from neuronscope.atlas import Atlas, check_atlas_target
    from neuronscope.probing.multimodal import labelled_images, measure_multimodality
    from neuronscope.probing.multimodal_store import MultimodalRun, measure_multimodality_into

    require_model(model)
    if label and not out:
        raise NeuronscopeError("--label writes labels into an atlas: give --out ATLAS too")
    if out:
        check_atlas_target(out)
    settings = raster_settings(sizes, positions, fonts)
    if not images and (concepts is not None or names is not None):
        raise NeuronscopeError("--concepts and --names are about the categories of IMAGES: give the images too")
    labelled = labelled_images(images, concept_list(concepts), names=category_names(names)) if images else None
    quiet = json_out and not sys.stderr.isatty()
    started = time.perf_counter()
    loaded = load_cli_model(model, weights, device, precision)
    canonical = loaded.resolve_layer(layer)
    bars = ProgressBars(quiet=quiet)
    on_batch = None if labelled is None else (lambda state: bars("images", state.done, len(labelled)))
    try:
        if out:
            with Atlas(out) as atlas:
                run = measure_multimodality_into(atlas, loaded, canonical, labelled, settings=settings,
                                                 threshold=threshold, label=label,
                                                 command=recorded_command(ctx, loaded, layer=canonical,
                                                                          paths=("images", "concepts", "names")),
                                                 batch_size=batch_size, workers=workers, on_batch=on_batch)
        else:
            result, skipped = measure_multimodality(loaded, canonical, labelled, settings=settings,
                                                    batch_size=batch_size, workers=workers, on_batch=on_batch)
            run = MultimodalRun(result, None, skipped=skipped)
    finally:
        bars.close()
    result = run.result
    units = result.units(threshold)
    report = {"threshold": threshold, "concepts": list(result.concepts),
              "images": len(labelled) if labelled is not None else None,
              "concepts_with_units": result.concepts_with_units(threshold), "multimodal_units": units,
              "best_per_concept": result.best_units(threshold)}
    if json_out:
        extra = {"labelled": list(run.labelled)} if label else {}
        print_json(fill_report(out, run.run_id, loaded.key, [canonical], len(result.concept),
                               time.perf_counter() - started, run.skipped, **report, **extra))
        return
    typer.echo(f"{loaded.key} {canonical}: {len(units)} of {len(result.concept)} units multimodal at {threshold:g}, "
               f"for {report['concepts_with_units']} of {len(result.concepts)} concepts"
               + (f" (stored in {out}, run {run.run_id})" if out else ""))
    for record in units[:top]:
        typer.echo(f"  unit {record['unit']:>5}  {record['concept']:<20} {record['score']:.3f}  "
                   f"(images {record['auroc_images']:.3f}, words {record['auroc_words']:.3f})")
    if run.skipped:
        typer.echo("skipped files: " + ", ".join(f"{n} {reason}" for reason, n in run.skipped.items()), err=True)
    if labelled is not None and labelled.left_out:
        typer.echo("images left out: " + ", ".join(f"{n} ({reason})" for reason, n in labelled.left_out.items()),
                   err=True)


def register(app: typer.Typer) -> None:
    app.command("multimodal")(cli_command(multimodal))
