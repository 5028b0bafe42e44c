"""``neuronscope families``: region, emotion, colour, time, art and lexical units, from a stored word probe."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from neuronscope.atlas import Atlas
from neuronscope.atlas.families import DEFAULT_THRESHOLD, NULL_DRAWS
from neuronscope.commands.common import DebugOpt, JsonOpt, LayerOpt, ModelOpt, cli_command, fill_report, print_json


def families(
    atlas: Annotated[str, typer.Argument(metavar="ATLAS", help="An atlas with a word probe (`neuronscope words`).")],
    layer: LayerOpt = "neurons",
    model: ModelOpt = None,
    vocab: Annotated[Optional[str], typer.Option("--vocab", help="Which stored probe (omit when one).")] = None,
    threshold: Annotated[float, typer.Option("--threshold", min=0.5, max=1.0,
                                             help=f"The length-matched AUROC a family needs (and its null: the highest any unit "
                                                  f"reaches for {NULL_DRAWS} random word lists).")] = DEFAULT_THRESHOLD,
    top: Annotated[int, typer.Option("--top", min=1, help="Units printed per family.")] = 10,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Give the units of a layer their family (region, emotion, colour, time, art, or lexical) from the atlas's word probe:
    a unit joins the family whose words it answers more than the probe's other words of the same length
    (AUROC >= --threshold, and >= the family's null: the highest any unit reaches for random lists of the same
    lengths), or `lexical` when its top words share a prefix or suffix. Stored in the atlas as a run
    (`show` and the microscope give each unit's family); needs no model."""
    from neuronscope.probing.family_store import families_into, plan_families

    with Atlas(atlas, create=False) as store:
        plan = plan_families(store, model, layer, vocab, threshold=threshold)
        done = families_into(store, plan)
    found, records = done.found, done.found.records()
    members = {name: sorted(units, key=lambda u: -(records[u]["score"] or 0)) for name, units in found.members().items()}
    if json_out:
        print_json(fill_report(atlas, done.run_id, plan.model, [plan.layer], found.affinity.shape[1], done.seconds,
                               layer=plan.layer, vocabulary=plan.vocabulary, threshold=threshold,
                               family_words=dict(zip(found.names, found.words_found)),
                               null=found.null_by_family(),
                               families={name: [{"unit": u, "score": records[u]["score"],
                                                 **({"affix": records[u]["affix"]} if "affix" in records[u] else {})}
                                                for u in units] for name, units in members.items()}))
        return
    scored = ", ".join(f"{name} ({n} words, null {null:.2f})"
                       for name, n, null in zip(found.names, found.words_found, found.null_max)) or "none"
    typer.echo(f"{plan.model} {plan.layer}: families from the {plan.vocabulary} probe (scored: {scored}) into "
               f"{atlas} (run {done.run_id})")
    for name, units in members.items():
        shown = ", ".join(str(u) if records[u]["score"] is None else f"{u} ({records[u]['score']:.2f})"
                          for u in units[:top])
        typer.echo(f"  {name:<8} {len(units):>5} units  {shown}")
    if not members:
        typer.echo("  no unit reaches --threshold and its family's null in any family")


def register(app: typer.Typer) -> None:
    app.command("families")(cli_command(families))
