"""``neuronscope reproduce``: checks of our tools against the article's published results.

``reproduce words --weights RN50x4.pt`` probes RN50x4's ``image_block_4/5/Add_6``
with rastered words and reports how its top words agree with the article's
table, overall and for the 109 units the article names.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from neuronscope.commands.common import (
    HOW_IT_RUNS,
    BatchSizeOpt,
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    PrecisionOpt,
    ProgressBars,
    cli_command,
    fill_report,
    load_cli_model,
    print_json,
    recorded_command,
    resumed_note,
)
from neuronscope.commands.words import (
    DEFAULT_FONTS,
    DEFAULT_POSITIONS,
    DEFAULT_SIZES,
    FontsOpt,
    PositionsOpt,
    SizesOpt,
    VocabOpt,
    WorkersOpt,
    raster_settings,
    undrawable_extra,
)
from neuronscope.errors import NeuronscopeError, WeightsMismatch

if TYPE_CHECKING:
    from neuronscope.models import LoadedModel

app = typer.Typer(help="Compare our results with the article's (needs the real weights).", no_args_is_help=True)


def _recorded_command(ctx: typer.Context, model: LoadedModel) -> str:
    """The command line the run records: this one, with ``--weights`` (it has no ``--model``: the model is
    fixed) and every option that changes the scores; ``--weights`` and ``--vocab`` as
    :func:`~neuronscope.probing.vocab.recorded_path` gives them."""
    from neuronscope.probing.vocab import recorded_path

    return recorded_command(ctx, model, leave_out=HOW_IT_RUNS | {"top"}, paths=("vocab",),
                            weights=recorded_path(ctx.params["weights"]))  # no --model: always the weights


@app.command("words")
@cli_command
def reproduce_words(
    ctx: typer.Context,
    weights: Annotated[Optional[str], typer.Option(
        "--weights", "-w", help="PATH to OpenAI's RN50x4 (RN50x4.pt or an open_clip state dict); "
                                "random gives the chance figure.")] = None,
    vocab: VocabOpt = "english-10k",
    sizes: SizesOpt = DEFAULT_SIZES,
    positions: PositionsOpt = DEFAULT_POSITIONS,
    fonts: FontsOpt = DEFAULT_FONTS,
    top_k: Annotated[int, typer.Option("--top-k", min=3, help="Our top words kept per unit (the paper "
                                                              "top-1 is looked for among them).")] = 20,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Also store the top words in this atlas.")] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="Named units printed (text output).")] = 20,
    batch_size: BatchSizeOpt = 32,
    workers: WorkersOpt = 1,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Probe RN50x4 image_block_4/5/Add_6 with rastered words and compare with the article's top-3 words."""
    from neuronscope.atlas import Atlas, check_atlas_target
    from neuronscope.probing.paper import PAPER_LAYER, PAPER_MODEL, compare_with_paper
    from neuronscope.probing.vocab import VocabularyRecord, load_vocabulary
    from neuronscope.probing.word_store import probe_words_into
    from neuronscope.probing.words import probe_words

    if not weights:
        raise NeuronscopeError("reproduce words needs --weights PATH to OpenAI's RN50x4 weights "
                               "(or --weights random for the chance figure)")
    if out:
        check_atlas_target(out)
    quiet = json_out and not sys.stderr.isatty()  # a script's captured streams hold the JSON alone
    settings = raster_settings(sizes, positions, fonts)
    vocabulary = load_vocabulary(vocab)
    try:
        loaded = load_cli_model(PAPER_MODEL, weights, device, precision)
    except WeightsMismatch as err:  # its advice, "name the architecture", does not apply: this one is fixed
        raise NeuronscopeError(f"reproduce words needs OpenAI's RN50x4 weights; {err.what} holds another "
                               f"architecture's ({err.details})") from None
    bars = ProgressBars(quiet=quiet)
    run_id = resumed_from = None
    try:
        if out:  # into an atlas: resumable, as `words` (an hour or more of RN50x4 on a CPU)
            with Atlas(out) as atlas:
                probe, run_id, resumed_from = probe_words_into(
                    atlas, loaded, PAPER_LAYER, vocabulary, vocabulary=VocabularyRecord.of(vocab, vocabulary),
                    settings=settings, top_k=top_k, batch_size=batch_size, workers=workers,
                    command=_recorded_command(ctx, loaded), on_resume=None if quiet else resumed_note("word"),
                    on_batch=bars.track("words"))
        else:
            probe = probe_words(loaded, PAPER_LAYER, vocabulary, settings=settings, batch_size=batch_size,
                                workers=workers, on_batch=bars.track("words"))
    finally:
        bars.close()
    comparison = compare_with_paper(probe, k=top_k)
    payload = {**comparison.to_dict(), "seconds": round(probe.seconds, 3), **undrawable_extra(probe.undrawable)}
    if out:  # an atlas writer: CONVENTIONS' keys too, beside the comparison's
        payload = {**fill_report(out, run_id, probe.model, [probe.layer], probe.units, probe.seconds),
                   **payload, "resumed_from": resumed_from}
    if json_out:
        print_json(payload)
        return
    for name, stats in (("all units", comparison.overall), ("named units", comparison.named)):
        typer.echo(f"{name} ({stats.units}): top-3 overlap {stats.top3_overlap:.3f}, at least one shared "
                   f"{stats.any_top3:.3f}, paper's top-1 in our top {stats.k} {stats.paper_top1_in_top_k:.3f} "
                   f"(of {stats.top1_units} units with a top-1 word)")
    typer.echo(f"(vocabulary {len(probe.words)} words, holding {comparison.paper_words_in_vocabulary:.1%} of the "
               f"article's; {probe.seconds:.0f} s)")
    for entry in comparison.named_units[:top]:
        typer.echo(f"  {entry['unit']:5d} {entry['label'][:28]:28s} paper: {', '.join(entry['paper']):34s} "
                   f"ours: {', '.join(entry['ours'])}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="reproduce")
