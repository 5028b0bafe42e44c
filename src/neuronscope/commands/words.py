"""``neuronscope words`` (rastered-word probing into an atlas) and ``neuronscope wordvec`` (word embeddings)."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from neuronscope.atlas import Atlas
from neuronscope.atlas.store import open_reader
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
    require_out,
    resumed_note,
)
from neuronscope.errors import NeuronscopeError

VocabOpt = Annotated[str, typer.Option("--vocab", help="english-10k, countries, cities, emotions, colours, time, art, "
                                                       "or a FILE with one word or phrase a line.")]
SizesOpt = Annotated[str, typer.Option("--sizes", help="Text widths as fractions of the input width, "
                                                       "comma-separated (mean over sizes).")]
PositionsOpt = Annotated[str, typer.Option("--positions", help="Text positions x:y in [0, 1], comma-separated "
                                                               "(max over positions).")]
FontsOpt = Annotated[str, typer.Option("--fonts", help="Font files (family_dir/file.ttf under "
                                                       "/usr/share/fonts/truetype, or paths), comma-separated.")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=0, help="Rendering processes (0: in the main one).")]
#: The raster flags' defaults, as typed (``RasterSettings()``'s: 3 sizes x 3 positions in DejaVu Sans).
DEFAULT_SIZES, DEFAULT_POSITIONS, DEFAULT_FONTS = "0.5,0.7,0.9", "0.1:0.1,0.5:0.5,0.9:0.9", "dejavu/DejaVuSans.ttf"


def raster_settings(sizes: str, positions: str, fonts: str):
    """``RasterSettings`` from the command line's comma-separated lists, with a clear error; its fonts are
    checked here, before the model loads."""
    from neuronscope.probing.raster import RasterSettings, resolve_fonts

    try:
        size_values = tuple(float(s) for s in sizes.split(",") if s.strip())
        position_values = tuple(tuple(float(v) for v in p.split(":")) for p in positions.split(",") if p.strip())
        if any(len(p) != 2 for p in position_values):
            raise ValueError("a position is x:y")
        settings = RasterSettings(fonts=tuple(f.strip() for f in fonts.split(",") if f.strip()),
                                  sizes=size_values, positions=position_values)  # type: ignore[arg-type]
    except ValueError as err:
        raise NeuronscopeError(f"bad raster settings ({err}): --sizes 0.5,0.7,0.9 --positions "
                               "0.1:0.1,0.5:0.5,0.9:0.9") from None
    resolve_fonts(settings)
    return settings


def undrawable_extra(undrawable: list[str]) -> dict[str, list[str]]:
    """The ``--json`` report's ``"undrawable"`` key (the probe's words no font could draw, left out by
    :func:`~neuronscope.probing.words.probe_words` with one warning), only when words were left out (as ``scan``'s ``"replaced"``
    and ``"skipped_files"``): a clean run's report keeps its documented keys."""
    return {"undrawable": undrawable} if undrawable else {}


def words(
    ctx: typer.Context,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    layer: LayerOpt = "neurons",
    vocab: VocabOpt = "english-10k",
    sizes: SizesOpt = DEFAULT_SIZES,
    positions: PositionsOpt = DEFAULT_POSITIONS,
    fonts: FontsOpt = DEFAULT_FONTS,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Top words stored per unit.")] = 20,
    out: Annotated[str, typer.Option("--out", "-o", help="The atlas directory (created, or added to).")] = "",
    batch_size: BatchSizeOpt = 64,
    workers: WorkersOpt = 1,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1, help="Words between checkpoints "
                                                  "(also every 5 minutes).")] = 1000,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Raster every word of a vocabulary as images and store each unit's top words in an atlas
    (`neuronscope show ATLAS --layer L --unit U` lists them; `neuronscope wordvec` uses the whole matrix).
    Resumable: the same command after a kill continues from the last checkpoint."""
    from neuronscope.probing.vocab import VocabularyRecord, load_vocabulary, vocabulary_name
    from neuronscope.probing.word_store import probe_words_into

    require_out(out, "words")
    require_model(model)
    quiet = json_out and not sys.stderr.isatty()  # a script's captured streams hold the JSON alone
    settings = raster_settings(sizes, positions, fonts)
    vocabulary = load_vocabulary(vocab)
    name = vocabulary_name(vocab)
    loaded = load_cli_model(model, weights, device, precision)
    canonical = loaded.resolve_layer(layer)
    # --vocab as given (the stem `name` keys the probe but names no file: the command would not rerun)
    command = recorded_command(ctx, loaded, layer=canonical, paths=("vocab",))
    bars = ProgressBars(quiet=quiet)
    try:
        # the atlas is open from the start: the run is recorded first and the scores checkpointed as they come
        with Atlas(out) as atlas:
            outcome = probe_words_into(atlas, loaded, canonical, vocabulary,
                                       vocabulary=VocabularyRecord.of(vocab, vocabulary), settings=settings,
                                       top_k=top_k, command=command, batch_size=batch_size, workers=workers,
                                       checkpoint_every=checkpoint_every,
                                       on_resume=None if quiet else resumed_note("word"),
                                       on_batch=bars.track("words"))
    finally:
        bars.close()
    probe, run_id = outcome.probe, outcome.run_id
    if json_out:
        print_json(fill_report(out, run_id, probe.model, [probe.layer], probe.units, probe.seconds,
                               vocabulary=name, words=len(probe.words), images=len(probe.words) * settings.variants,
                               resumed_from=outcome.resumed_from, **undrawable_extra(probe.undrawable)))
        return
    resumed = f", resumed at word {outcome.resumed_from}" if outcome.resumed_from else ""
    typer.echo(f"{probe.model}: {len(probe.words)} words of {name} x {settings.variants} images into {out} "
               f"(run {run_id}{resumed}), top {top_k} words of {probe.units} units of {probe.layer} "
               f"in {probe.seconds:.1f} s")



def wordvec(
    atlas: Annotated[str, typer.Argument(metavar="ATLAS", help="An atlas with a word probe (`neuronscope words`).")],
    layer: LayerOpt = "neurons",
    model: ModelOpt = None,
    vocab: Annotated[Optional[str], typer.Option("--vocab", help="Which stored probe (omit when one).")] = None,
    nearest: Annotated[Optional[str], typer.Option("--nearest", help="Words nearest to this word.")] = None,
    plus: Annotated[str, typer.Option("--plus", help="Word arithmetic: words to add, comma-separated.")] = "",
    minus: Annotated[str, typer.Option("--minus", help="Word arithmetic: words to subtract.")] = "",
    cosine: Annotated[str, typer.Option("--cosine", help="Two words A,B: their cosine.")] = "",
    units_of: Annotated[Optional[str], typer.Option(
        "--units", help="The units that answer this word most (its z-score among each unit's responses to the "
                        "vocabulary).")] = None,
    mask_lexical: Annotated[bool, typer.Option("--mask-lexical", help="Leave out units whose top words share "
                                                                      "a prefix or suffix (-ing, un-).")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Do not subtract the vocabulary's mean.")] = False,
    top: Annotated[int, typer.Option("--top", min=1, help="Words (or units) printed.")] = 10,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Image-based word embeddings from a stored word probe: nearest words, word arithmetic, cosines
    (the layer's response to a rastered word minus the mean over the vocabulary), and the units a word
    stands out for."""
    from neuronscope.probing.embedding import WordEmbedding, lexical_units
    from neuronscope.probing.word_store import load_word_scores

    plus_words = [w.strip() for w in plus.split(",") if w.strip()]
    minus_words = [w.strip() for w in minus.split(",") if w.strip()]
    pair = [w.strip() for w in cosine.split(",") if w.strip()]
    if sum([nearest is not None, bool(plus_words or minus_words), bool(pair), units_of is not None]) != 1:
        raise NeuronscopeError("give one of --nearest WORD, --plus A,B [--minus C], --cosine A,B or --units WORD")
    if pair and len(pair) != 2:
        raise NeuronscopeError(f"--cosine takes two words A,B, got {cosine!r}")
    with open_reader(atlas) as store:  # read-only, as show: a shared atlas on a read-only mount reads
        model_key, canonical, name, vocabulary, scores = load_word_scores(store, model, layer, vocab)
    masked = lexical_units(vocabulary, scores) if mask_lexical else {}
    embedding = WordEmbedding(vocabulary, scores, center=not raw, mask_units=list(masked))
    try:
        if pair:
            value = embedding.cosine(*pair)
            result = {"cosine": {"a": pair[0], "b": pair[1], "value": round(value, 4)}}
        elif nearest is not None:
            result = {"query": {"nearest": nearest}, "words": embedding.nearest(nearest, top)}
        elif units_of is not None:
            result = {"query": {"units": units_of},
                      "units": [{**u, "z": round(u["z"], 4)} for u in embedding.top_units(units_of, top)]}
        else:
            result = {"query": {"plus": plus_words, "minus": minus_words},
                      "words": embedding.arithmetic(plus_words, minus_words, top)}
    except KeyError as err:
        raise NeuronscopeError(str(err.args[0])) from None
    if "words" in result:
        result["words"] = [{"word": w, "score": round(s, 4)} for w, s in result["words"]]
    payload = {"model": model_key, "layer": canonical, "vocabulary": name, "centered": not raw,
               "masked_units": len(masked), **result}
    if json_out:
        print_json(payload)
        return
    if pair:
        typer.echo(f"cos({pair[0]}, {pair[1]}) = {payload['cosine']['value']:.4f}")
        return
    if "units" in payload:
        for entry in payload["units"]:
            typer.echo(f"{entry['z']:8.2f} SD  unit {entry['unit']:<6d} (its word no. {entry['rank']})")
        return
    for entry in payload["words"]:
        typer.echo(f"{entry['score']:8.4f}  {entry['word']}")


def register(app: typer.Typer) -> None:
    app.command("words")(cli_command(words))
    app.command("wordvec")(cli_command(wordvec))
