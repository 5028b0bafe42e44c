"""``neuronscope families``: region, emotion, colour and lexical units, from a stored word probe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from neuronscope.atlas import Atlas
from neuronscope.commands.common import DebugOpt, JsonOpt, LayerOpt, ModelOpt, cli_command, print_json

if TYPE_CHECKING:
    from neuronscope.analysis.families import Families

#: The ``source`` of the families this command writes (a family set from elsewhere is kept).
SOURCE = "auto:words"


def families(
    atlas: Annotated[str, typer.Argument(metavar="ATLAS", help="An atlas with a word probe (`neuronscope words`).")],
    layer: LayerOpt = "neurons",
    model: ModelOpt = None,
    vocab: Annotated[Optional[str], typer.Option("--vocab", help="Which stored probe (omit when one).")] = None,
    threshold: Annotated[float, typer.Option("--threshold", min=0.5, max=1.0,
                                             help="The length-matched AUROC a family needs.")] = 0.85,
    top: Annotated[int, typer.Option("--top", min=1, help="Units printed per family.")] = 10,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Give the units of a layer their family (region, emotion, colour, or lexical) from the atlas's word probe:
    a unit joins the family whose words it answers more than the probe's other words of the same length
    (AUROC >= --threshold), or `lexical` when its top words share a prefix or suffix. Stored in the atlas
    (`show` and the microscope give each unit's family); needs no model."""
    from neuronscope.analysis.families import word_families
    from neuronscope.probing.word_store import load_word_scores

    with Atlas(atlas, create=False) as store:
        model_key, canonical, vocabulary, words, scores = load_word_scores(store, model, layer, vocab)
        found = word_families(words, scores, canonical, threshold=threshold)
        records = family_records(found)
        store.write_families(model_key, canonical, records, source=SOURCE, about=found.about(vocabulary))
    members = found.members()
    best = {name: sorted(units, key=lambda u: -(records[u]["score"] or 0))[:top] for name, units in members.items()}
    if json_out:
        print_json({"model": model_key, "layer": canonical, "vocabulary": vocabulary, "threshold": threshold,
                    "family_words": dict(zip(found.names, found.words_found)),
                    "families": {name: [{"unit": u, "score": records[u]["score"],
                                         **({"affix": records[u]["affix"]} if "affix" in records[u] else {})}
                                        for u in sorted(units, key=lambda u: -(records[u]["score"] or 0))]
                                 for name, units in members.items()}})
        return
    scored = ", ".join(f"{name} ({n} words)" for name, n in zip(found.names, found.words_found)) or "none"
    typer.echo(f"{model_key} {canonical}: families from the {vocabulary} probe (scored: {scored}) into {atlas}")
    for name, units in members.items():
        shown = ", ".join(str(u) if records[u]["score"] is None else f"{u} ({records[u]['score']:.2f})"
                          for u in best[name])
        typer.echo(f"  {name:<8} {len(units):>5} units  {shown}")
    if not members:
        typer.echo("  no unit reaches --threshold in any family")


def family_records(found: Families) -> dict[int, dict]:
    """``{unit: {"family", "score"[, "affix"]}}`` of the units with a family, as the atlas stores them."""
    return {unit: record for unit in range(found.affinity.shape[1]) if (record := found.family(unit)) is not None}


def register(app: typer.Typer) -> None:
    app.command("families")(cli_command(families))
