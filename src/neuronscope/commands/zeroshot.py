"""``neuronscope zeroshot``: the top classes of images by zero-shot CLIP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from neuronscope.commands.common import (
    BatchSizeOpt,
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    ModelOpt,
    PrecisionOpt,
    SeedOpt,
    WeightsOpt,
    cli_command,
    load_cli_model,
    print_json,
)
from neuronscope.errors import NeuronscopeError
from neuronscope.imagefiles import SkippedFile

if TYPE_CHECKING:
    from neuronscope.models.loaded import LoadedModel
    from neuronscope.probing.zeroshot import ZeroShotClassifier


def read_classes(classes: str | None, classes_file: Path | None) -> list[str]:
    """Class names from ``--classes a,b,c`` or ``--classes-file`` (one a line), verbatim."""
    if classes and classes_file:
        raise NeuronscopeError("give --classes or --classes-file, not both")
    if classes_file is not None:
        if not classes_file.is_file():
            raise NeuronscopeError(f"--classes-file {classes_file} does not exist")
        return [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
    return [name.strip() for name in (classes or "").split(",") if name.strip()]


def world_prompt_set(model_key: str) -> tuple[list[str], str] | None:
    """The mini CLIP's own classes and template (its world's concepts, ``a {}``); None for other models."""
    if not model_key.startswith("mini-clip@"):
        return None
    from neuronscope.world.concepts import ZEROSHOT_TEMPLATE, concept_names

    # All the world's concept names, in order: the shipped split holds every one of them (test_mini_clip checks),
    # so this is its class list without decoding the 3,612-image split.
    return concept_names(), ZEROSHOT_TEMPLATE


#: The options of a command that classifies images zero-shot (``zeroshot``, ``attack``).
ImagesArg = Annotated[list[str], typer.Argument(metavar="IMAGE_OR_DIR...",
                                                help="Image files, folders (recursive) or tar shards.")]
ClassesOpt = Annotated[Optional[str], typer.Option("--classes", help="Comma-separated class names.")]
ClassesFileOpt = Annotated[Optional[Path], typer.Option("--classes-file", help="One class name a line.")]
TemplateOpt = Annotated[Optional[str], typer.Option(
    "--template", help="Prompt with {} for the class. Default: the model's own prompt set "
                       "(mini-clip: 'a {}'), else CLIP's 'a photo of a {}.'.")]


def check_template(template: str | None) -> None:
    """Refuse a ``--template`` without ``{}`` (before the model loads, not after)."""
    if template is not None and "{}" not in template:
        raise NeuronscopeError(f"--template {template!r} has no {{}} for the class name, e.g. 'a photo of a {{}}.'")


def cli_classifier(loaded: LoadedModel, names: list[str], template: str | None) -> ZeroShotClassifier:
    """The classifier of ``--classes`` and ``--template``, defaulting to the model's own prompt set (the mini
    CLIP's world) where it has one."""
    from neuronscope.probing.zeroshot import DEFAULT_TEMPLATE, ZeroShotClassifier

    own = world_prompt_set(loaded.key)
    if not names:
        if own is None:
            raise NeuronscopeError("no classes given: pass --classes a,b,c or --classes-file FILE")
        names = own[0]
    return ZeroShotClassifier.build(loaded, names, template or (own[1] if own is not None else DEFAULT_TEMPLATE))


def zeroshot(
    images: ImagesArg,
    model: ModelOpt = "mini-clip",
    weights: WeightsOpt = None,
    classes: ClassesOpt = None,
    classes_file: ClassesFileOpt = None,
    template: TemplateOpt = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Classes printed per image.")] = 5,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    batch_size: BatchSizeOpt = 64,
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Zero-shot classify images; prints the top classes per image with probabilities."""
    from neuronscope.mining.loader import iter_decoded
    from neuronscope.mining.sources import check_inputs
    from neuronscope.runtime import seed_everything

    check_template(template)
    names = read_classes(classes, classes_file)
    check_inputs(images)
    seed_everything(seed)
    loaded = load_cli_model(model, weights, device, precision)
    classifier = cli_classifier(loaded, names, template)

    # One answer per input file, in input order: {"image", "model", "top"}, or {"image", "model", "skipped"}
    # for a file that could not be read; an answer's "top" is filled when its batch runs.
    answers: list[dict] = []
    batch: list[tuple[dict, object]] = []

    def flush() -> None:
        pixels = loaded.preprocess.to_pixels([image for _, image in batch])
        for (answer, _), best in zip(batch, classifier.top(pixels, top)):
            answer["top"] = best
        batch.clear()

    for image_id, image in iter_decoded(images):
        answer = {"image": image_id, "model": loaded.key}
        answers.append(answer)
        if isinstance(image, SkippedFile):
            answer["skipped"] = image.reason
            continue
        batch.append((answer, image))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not answers:
        raise NeuronscopeError(f"no images found in {', '.join(images)}")
    if json_out:
        print_json(answers)
    else:
        for answer in answers:
            if "top" in answer:
                best = ", ".join(f"{c['class']} {c['prob']:.3f}" for c in answer["top"])
                typer.echo(f"{answer['image']}: {best}")
    for answer in answers:
        if "skipped" in answer:
            typer.echo(f"skipped {answer['image']}: {answer['skipped']}", err=True)


def register(app: typer.Typer) -> None:
    app.command("zeroshot")(cli_command(zeroshot))
