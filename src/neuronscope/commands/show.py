"""``neuronscope show`` and ``neuronscope label``: read a unit from an atlas, or label it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from neuronscope.atlas import Atlas
from neuronscope.atlas.families import family_text
from neuronscope.atlas.store import open_reader
from neuronscope.atlas.export import EXPORTERS, export_layer
from neuronscope.commands.common import AtlasArg, DebugOpt, JsonOpt, LayerOpt, ModelOpt, cli_command, print_json
from neuronscope.units import parse_units


def show(
    atlas: AtlasArg,
    layer: LayerOpt = "neurons",
    unit: Annotated[str, typer.Option("--unit", "-u", help="Unit(s): 7, 0-3,9 or all.")] = "0",
    model: ModelOpt = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Examples printed per unit (text output).")] = 8,
    export: Annotated[Optional[Path], typer.Option(
        "--export", help="Write the whole layer's stats, histogram counts and top/bottom examples to this .npz "
                         "(NumPy) or "
                         ".parquet (one row per unit) instead.")] = None,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show units of an atlas: top examples with the firing cell, stats, label, words, texts, multimodality,
    family.

    With --json: the unit's object (see CONVENTIONS.md); for a list of units, a list of objects."""
    if export is not None and export.suffix.lower() not in EXPORTERS:
        raise typer.BadParameter(f"name a .npz (NumPy) or .parquet (Parquet) file, not {export.name!r}",
                                 param_hint="--export")
    with open_reader(atlas) as store:  # read-only: a shared atlas on a read-only mount shows
        model_key = store.resolve_model(model)
        entry = store.resolve_layer(model_key, layer)
        if export is not None:
            written = export_layer(store, model_key, entry["layer"], export)
            typer.echo(f"{model_key} {entry['layer']}: {entry['units']} units written to {written}", err=json_out)
            if json_out:
                print_json({"model": model_key, "layer": entry["layer"], "units": entry["units"],
                            "path": str(written)})
            return
        records = [store.unit(model_key, entry["layer"], index) for index in parse_units(unit, entry["units"])]
    if json_out:
        # One unit asked (``--unit 7``): its object, the web API's shape; a list or range: a list of them.
        print_json(records[0] if unit.strip().isdigit() else records)
        return
    for record in records:
        stats = record["stats"] or {}
        label = f'  "{record["label"]}"' if record["label"] else ""
        typer.echo(f"{record['model']} {record['layer']} unit {record['unit']}{label}")
        if stats and stats["count"]:
            typer.echo(f"  mean {_number(stats['mean'])}  std {_number(stats['std'])}  min {_number(stats['min'])}  "
                       f"max {_number(stats['max'])}  over {stats['count']} images")
        elif stats:
            typer.echo("  no images were scanned, or none gave a finite activation (see the run's skipped counts)")
        for example in record["top"][:top]:
            typer.echo(f"  {_number(example['activation'], '10.4f'):>10}  cell {tuple(example['cell'])}  "
                       f"{example['image']}")
        if record["words"]:
            typer.echo("  words: " + ", ".join(w["word"] for w in record["words"][:top]))
        if record["texts"]:
            typer.echo("  texts: " + ", ".join(repr(t["text"]) for t in record["texts"][:top]))
        if record["multimodality"]:
            typer.echo("  " + multimodality_line(record["multimodality"]))
        if record["family"]:
            family = record["family"]
            score = "" if family["score"] is None else f" {family['score']:.3f}"
            typer.echo(f"  family: {family_text(family)}{score} ({family['source']})")


def multimodality_line(scores: dict) -> str:
    """A unit's stored multimodality in one line: its concept, score and both AUROCs."""
    verdict = "multimodal" if scores["multimodal"] else f"not multimodal at {scores['threshold']:g}"
    if scores["concept"] is None:
        return f"{verdict}: no concept (answers every concept alike among the images)"
    line = (f"{verdict}: {scores['concept']!r} {scores['score']:.3f} (images {scores['auroc_images']:.3f}, "
            f"words {scores['auroc_words']:.3f})")
    if scores["word_concept"] in (None, scores["concept"]):
        return line
    return f"{line}; words answer most to {scores['word_concept']!r}"


def _number(value: float | None, spec: str = ".4g") -> str:
    """A stat or activation for the text output; None (NULL: no finite value) as "n/a"."""
    return "n/a" if value is None else format(value, spec)


def label(
    atlas: AtlasArg,
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The label, e.g. \"cat (drawn or written)\".")],
    # No default: a forgotten --unit would silently replace unit 0's label.
    unit: Annotated[int, typer.Option("--unit", "-u", min=0, help="The unit to label (required).")],
    layer: LayerOpt = "neurons",
    model: ModelOpt = None,
    source: Annotated[str, typer.Option("--source", help="Who wrote the label.")] = "user",
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Set a unit's label in an atlas (replaces the previous one)."""
    with Atlas(atlas, create=False) as store:
        model_key = store.resolve_model(model)
        entry = store.resolve_layer(model_key, layer)
        store.check_unit(model_key, entry, unit)
        store.set_label(model_key, entry["layer"], unit, text, source=source)
    if json_out:
        print_json({"model": model_key, "layer": entry["layer"], "unit": unit, "label": text.strip(),
                    "source": source})
    else:
        typer.echo(f"{model_key} {entry['layer']} unit {unit}: \"{text.strip()}\"")


def register(app: typer.Typer) -> None:
    app.command("show")(cli_command(show))
    app.command("label")(cli_command(label))
