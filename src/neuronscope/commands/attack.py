"""``neuronscope attack``: a typographic attack on images against zero-shot CLIP."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Annotated, Optional

import typer
from PIL import Image

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
    load_cli_model,
    print_json,
)
from neuronscope.commands.zeroshot import (
    ClassesFileOpt,
    ClassesOpt,
    ImagesArg,
    TemplateOpt,
    check_template,
    cli_classifier,
    read_classes,
)
from neuronscope.errors import NeuronscopeError
from neuronscope.imagefiles import SkippedFile


def attack(
    images: ImagesArg,
    text: Annotated[str, typer.Option("--text", help="The word written on each image, e.g. iPod.")],
    target: Annotated[Optional[str], typer.Option(
        "--target", help="The class a success turns the top-1 into (default: the text itself).")] = None,
    model: ModelOpt = "mini-clip",
    weights: WeightsOpt = None,
    classes: ClassesOpt = None,
    classes_file: ClassesFileOpt = None,
    template: TemplateOpt = None,
    height: Annotated[Optional[float], typer.Option(
        "--height", help="The label's height as a share of the image's (default 0.15).")] = None,
    min_pixels: Annotated[Optional[int], typer.Option(
        "--min-pixels", min=0, help="The label's least height in pixels (default 20, so that a 64 px model can read "
                             "it; 0: none).")] = None,
    font: Annotated[Optional[str], typer.Option(
        "--font", help="Font file, family_dir/file.ttf or a path (default: DejaVu Sans Bold).")] = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    batch_size: BatchSizeOpt = 64,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write a word on every image at 8 fixed places and count how often the top class becomes the target."""
    from neuronscope.mining.loader import decode_entries
    from neuronscope.mining.sources import check_inputs, list_inputs
    from neuronscope.probing.raster import resolve_font
    from neuronscope.probing.typographic import AttackSettings, typographic_attack
    from neuronscope.runtime import seed_everything

    check_template(template)
    chosen = {"font": font, "height": height, "min_pixels": min_pixels}
    try:  # settings, font and inputs before the model loads: a typo costs no load
        settings = AttackSettings(**{name: value for name, value in chosen.items() if value is not None})
    except ValueError as error:
        raise NeuronscopeError(f"--height: {error}") from None
    resolve_font(settings.font)
    names = read_classes(classes, classes_file)
    check_inputs(images)
    seed_everything(seed)
    loaded = load_cli_model(model, weights, device, precision)
    classifier = cli_classifier(loaded, names, template)
    chosen_target = text if target is None else target
    if chosen_target not in classifier.classes:
        raise NeuronscopeError(f"the target {chosen_target!r} is not one of the {len(classifier.classes)} classes: "
                               f"add it to --classes, or pass --target CLASS")

    names: list[str] = []
    skipped: list[tuple[str, SkippedFile]] = []

    def readable() -> Iterator[Image.Image]:
        """The inputs, decoded one at a time (a folder of any size streams through); bad files set aside."""
        for name, image in decode_entries(entries):
            if isinstance(image, SkippedFile):
                skipped.append((name, image))
                continue
            names.append(name)
            yield image

    entries = list(list_inputs(images))  # listed once: counted for the progress bar, then decoded
    total = len(entries)
    bars = ProgressBars(quiet=json_out and not sys.stderr.isatty())
    track = bars.track("attack (images)")
    try:
        result = typographic_attack(loaded, readable(), classifier, text, target=chosen_target, settings=settings,
                                    batch_size=batch_size, on_batch=lambda done: track(done, total - len(skipped)))
    except ValueError as error:  # every input unreadable
        raise NeuronscopeError(f"{error}: none of the {total} inputs could be read "
                               f"({', '.join(sorted({image.reason for _, image in skipped}))})") from None
    finally:
        bars.close()
    result = replace(result, images=names)
    if json_out:
        print_json({**result.to_json(), "skipped": dict(Counter(image.reason for _, image in skipped)),
                    "skipped_files": {name: image.reason for name, image in skipped}})  # skipped as scan's
    else:
        already = len(result.images) - len(result.counted)
        success = "n/a (every image is already the target)" if result.success is None else f"{result.success:.1%}"
        typer.echo(f"{text!r} -> {chosen_target} on {loaded.key}: success {success} over {len(result.counted)} "
                   f"images x {len(result.positions)} positions ({already} already {chosen_target}, not counted); "
                   f"pixel cover {result.pixel_cover:.1%}")
        for position, share in zip(result.positions, result.success_by_position()):
            typer.echo(f"  label at ({position[0]:g}, {position[1]:g}): "
                       f"{'n/a' if share is None else f'{share:.1%}'}")
    for name, image in skipped:
        typer.echo(f"skipped {name}: {image.reason}", err=True)


def register(app: typer.Typer) -> None:
    app.command("attack")(cli_command(attack))
