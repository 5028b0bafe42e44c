"""The text side on the command line: ``attribute`` (text → units, unit → texts), ``textvis``, ``emotions``."""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from neuronscope.atlas import Atlas, check_atlas_target
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
    require_out,
)
from neuronscope.errors import NeuronscopeError
from neuronscope.probing.vocab import VocabularyRecord

if TYPE_CHECKING:  # torch is imported by the commands that run, not at start-up
    from neuronscope.models import LoadedModel
    from neuronscope.probing.attribution import AttributionBasis, ImageSample
    from neuronscope.probing.textvis import TextVisResult, TextVisSettings

ImagesOpt = Annotated[Optional[str], typer.Option(
    "--images", "-i", help="Images to average attributions over: a folder, .tar shard or .txt list. "
                           "Omitted: the mini CLIP's bundled test split (drawings and rendered words).")]
SampleOpt = Annotated[int, typer.Option("--sample", min=1, help="Images drawn from the sample source.")]
OutOpt = Annotated[str, typer.Option("--out", "-o", help="The atlas directory (created, or added to).")]


def _image_sample(model, images: str | None, count: int, seed: int):
    """``count`` images of ``--images``, or of the bundled split when it is omitted."""
    from neuronscope.probing.attribution import default_image_sample, image_sample_from

    if images:
        return image_sample_from(images, count, seed, preprocess=model.preprocess)
    return default_image_sample(count, seed, preprocess=model.preprocess)


def _load_text_model(model: str, weights: str | None, device: str, precision: str) -> LoadedModel:
    """The model, with its text tower's tokenizer built: one that cannot load fails now, not after the basis."""
    loaded = load_cli_model(model, weights, device, precision)
    _ = loaded.tokenizer
    return loaded


@contextmanager
def _progress(json_out: bool) -> Iterator[ProgressBars]:
    """Progress bars on stderr, quiet under --json unless stderr is a terminal; closed before the output."""
    bars = ProgressBars(quiet=json_out and not sys.stderr.isatty())
    try:
        yield bars
    finally:
        bars.close()


def _atlas_basis(atlas: Atlas, model: LoadedModel, layer: str, sample: ImageSample, batch_size: int,
                 bars: ProgressBars) -> tuple[AttributionBasis, str]:
    """The layer's attribution basis over ``sample`` and its checkpoint key (drop it once the run finished).

    The basis is the costly part (minutes on a real model): one an earlier command kept in this atlas
    and did not finish with is reused; a computed one is kept there until this command finishes, so a
    failure after it (a kill, a full disk at the last write) does not cost it again.
    """
    from neuronscope.probing.attribution import compute_basis
    from neuronscope.probing.text_store import basis_checkpoint_key, keep_basis, load_basis

    key = basis_checkpoint_key(model, layer, sample)
    basis = load_basis(atlas, key)
    if basis is not None:
        typer.echo("reusing the attribution basis an unfinished command kept in the atlas", err=True)
        return basis, key
    basis = compute_basis(model, layer, sample, batch_size=batch_size,
                          on_step=bars.track("attribution basis (backward passes)"))
    keep_basis(atlas, key, basis)
    return basis, key


def _recorded_command(ctx: typer.Context, model: LoadedModel, basis: AttributionBasis, *,
                      leave_out: Collection[str] = HOW_IT_RUNS) -> str:
    """The command line a text-side run records: every option its texts depend on (the image sample's
    ``--images``, ``--sample`` and ``--seed`` among them, and ``--seed`` fixes a random init), so that it
    reruns as the same run; ``--images`` and ``--vocab`` as :func:`~neuronscope.probing.vocab.recorded_path`
    gives them."""
    return recorded_command(ctx, model, leave_out=leave_out, paths=("images", "vocab"), layer=basis.layer)


def _layer_units(model, layer: str, units: str) -> list[int]:
    """``--units`` parsed against the layer's size (one forward of a grey image): a bad list fails before
    the costly attribution basis."""
    from neuronscope.units import parse_units

    return parse_units(units, model.layer_shape(layer)[0])


def attribute(
    ctx: typer.Context,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    layer: LayerOpt = "neurons",
    prompt: Annotated[Optional[list[str]], typer.Option(
        "--prompt", "-p", help="A text, e.g. 'a photo of a spider'; repeat for several.")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Units printed for --prompt.")] = 20,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Store each unit's top texts of --vocab "
                                                                   "in this atlas.")] = None,
    vocab: Annotated[str, typer.Option("--vocab", help="Texts scored for --out: english-10k, countries, cities, "
                                                       "emotions, colours, time, art or a FILE.")] = "english-10k",
    template: Annotated[str, typer.Option("--template", help="Prompt around each vocabulary entry, "
                                                             "with {} for it.")] = "{}",
    units: Annotated[str, typer.Option("--units", help="Units whose texts are stored (0-31,550 or all).")] = "all",
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Texts stored per unit.")] = 20,
    images: ImagesOpt = None,
    sample: SampleOpt = 256,
    batch_size: BatchSizeOpt = 64,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Text -> units: the units of a layer that a prompt reads from (gradient x activation of the image-text
    logit, averaged over an image sample weighted by how much the prompt retrieves each image); --prompt
    may be repeated (--json: a list, one object per prompt). With --out,
    unit -> texts: every vocabulary entry is scored once and each unit's top texts are stored in the atlas."""
    require_model(model)
    if out:  # optional here: without it attribute only prints
        check_atlas_target(out)
    prompts = list(prompt or [])
    if not prompts and not out:
        raise NeuronscopeError("give --prompt TEXT (which units it reads from) and/or --out ATLAS "
                               "(store each unit's top texts of --vocab)")
    if "{}" not in template:
        raise NeuronscopeError(f"--template {template!r} has no {{}} for the vocabulary entry")
    from neuronscope.probing.vocab import load_vocabulary
    from neuronscope.runtime import seed_everything

    entries = load_vocabulary(vocab) if out else []  # a missing file or wordfreq fails before any compute
    started = time.monotonic()
    seed_everything(seed)  # --seed fixes --weights random's init too, not only the image sample
    loaded = _load_text_model(model, weights, device, precision)
    chosen = _layer_units(loaded, layer, units) if out else []
    image_sample = _image_sample(loaded, images, sample, seed)
    if prompts:
        payloads = _attribute_prompts(loaded, layer, prompts, image_sample, top, batch_size)
        # One prompt: its object (as ever); several: a list of them, in the order given (like `show --unit`).
        payload = payloads[0] if len(payloads) == 1 else payloads
        if not out:
            if json_out:
                print_json(payload)
            else:
                _print_prompt_units(payloads)
            return
    from neuronscope.atlas.runs import marked_interrupted
    from neuronscope.probing.text_store import merge_unit_texts, start_text_run, vocabulary_run_config
    from neuronscope.probing.zeroshot import encode_texts

    texts = [template.format(entry) for entry in entries]
    record = VocabularyRecord.of(vocab, entries)
    vocab_name = record.name
    with _progress(json_out) as bars, Atlas(out) as atlas:  # opened first: it keeps the basis for a rerun
        basis, basis_key = _atlas_basis(atlas, loaded, layer, image_sample, batch_size, bars)
        command = _recorded_command(ctx, loaded, basis, leave_out=HOW_IT_RUNS | {"prompt", "top"})
        run_id = start_text_run(atlas, loaded, basis, command=command, kind="attribute",
                                config=vocabulary_run_config(loaded, record, template=template, top_k=top_k,
                                                             seed=seed, sample=sample),
                                dataset=record.dataset())
        with marked_interrupted(atlas, run_id):
            scored = basis.top_texts(texts, encode_texts(loaded, texts), chosen, top_k)
            merge_unit_texts(atlas, run_id, basis.model, basis.layer, scored)
            atlas.finish_run(run_id, images=len(image_sample.pixels))
        atlas.drop_checkpoint(basis_key)
    report = fill_report(out, run_id, basis.model, [basis.layer], len(chosen), time.monotonic() - started,
                         vocabulary=vocab_name, texts=len(texts))
    if prompts:
        report["prompt"] = payload
    if json_out:
        print_json(report)
        return
    typer.echo(f"{basis.model}: top {top_k} of {len(texts)} texts ({vocab_name}) for {len(chosen)} units of "
               f"{basis.layer} into {out} (run {run_id}) in {report['seconds']:.1f} s")


def _attribute_prompts(model, layer: str, prompts: list[str], image_sample, top: int,
                       batch_size: int) -> list[dict]:
    """Each prompt's ``{"model", "layer", "prompt", "units"}``, its ``top`` units best first."""
    from neuronscope.probing.attribution import attribute_texts

    result = attribute_texts(model, layer, prompts, image_sample, batch_size=batch_size)
    return [result.to_json(index, top) for index in range(len(prompts))]


def _print_prompt_units(payloads: list[dict]) -> None:
    for payload in payloads:
        typer.echo(f"{payload['model']} {payload['layer']}: units that {payload['prompt']!r} reads from")
        for entry in payload["units"]:
            typer.echo(f"  unit {entry['unit']:>6}  {entry['score']:+.4f}")


def textvis(
    ctx: typer.Context,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    layer: LayerOpt = "neurons",
    units: Annotated[str, typer.Option("--units", help="Units to visualize (0-31,550 or all).")] = "",
    out: OutOpt = "",
    lengths: Annotated[str, typer.Option("--lengths", help="Text lengths in BPE tokens, comma-separated.")] = "1,2,3",
    restarts: Annotated[int, typer.Option("--restarts", min=1, help="Random starts per length.")] = 2,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Most accepted moves per climb.")] = 24,
    candidates: Annotated[int, typer.Option("--candidates", min=1, help="Tokens tried per position "
                                                                        "and step.")] = 16,
    prior: Annotated[float, typer.Option("--prior", min=0.0, help="Weight of the word-frequency prior "
                                                                  "(x sum of log10 word frequencies; 0: off).")] = 0.0,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Texts stored per unit.")] = 10,
    images: ImagesOpt = None,
    sample: SampleOpt = 256,
    batch_size: BatchSizeOpt = 64,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Text feature visualization: hill-climb short BPE texts that put the most weight on each unit, and
    store them in the atlas's texts (`neuronscope show` lists them under "texts"). Each unit's texts are
    stored as it finishes: the same command run again goes on in its run with the units left (after a kill),
    or climbs none (after it finished); more --units climb only the new ones."""
    from neuronscope.atlas.runs import marked_interrupted
    from neuronscope.probing.text_store import start_text_run
    from neuronscope.probing.textvis import TextVisSettings, require_clip_bpe
    from neuronscope.runtime import seed_everything

    require_model(model)
    require_out(out, "textvis")
    if not units:
        raise NeuronscopeError("textvis needs --units (e.g. 0-31,550 or all): which units' texts to optimize")
    try:
        length_values = tuple(int(v) for v in lengths.split(",") if v.strip())
    except ValueError:
        raise NeuronscopeError(f"--lengths {lengths!r}: give token counts like 1,2,3") from None
    settings = TextVisSettings(lengths=length_values, restarts=restarts, steps=steps, candidates=candidates,
                               prior_weight=prior, keep=top_k, seed=seed)  # refuses lengths below 1
    started = time.monotonic()
    seed_everything(seed)  # --seed fixes --weights random's init too, not only the image sample
    loaded = load_cli_model(model, weights, device, precision)
    require_clip_bpe(loaded)  # before the basis, which takes minutes on a real model
    chosen = _layer_units(loaded, layer, units)
    image_sample = _image_sample(loaded, images, sample, seed)
    with _progress(json_out) as bars, Atlas(out) as atlas:  # opened first: each unit is stored as it finishes
        basis, basis_key = _atlas_basis(atlas, loaded, layer, image_sample, batch_size, bars)
        command = _recorded_command(ctx, loaded, basis)
        # Everything a unit's texts depend on, not which units (each climb is seeded alike, whatever units
        # share the command): as visualize's, a run goes on with whatever units it has not stored yet.
        config = {"lengths": list(length_values), "restarts": restarts, "steps": steps,
                  "candidates": candidates, "prior": prior, "top_k": top_k, "seed": seed, "sample": sample,
                  "sample_key": basis.sample_key, "precision": loaded.precision.name,
                  "weights_sha256": loaded.weights_identity()}
        run_id = start_text_run(atlas, loaded, basis, command=command, kind="textvis", config=config, resume=True)
        with marked_interrupted(atlas, run_id):
            results, kept = _climb_units(atlas, run_id, loaded, basis, chosen, settings, bars)
            atlas.finish_run(run_id, images=len(basis.image_embeddings))
        atlas.drop_checkpoint(basis_key)
    if json_out:
        print_json(fill_report(out, run_id, basis.model, [basis.layer], len(chosen), time.monotonic() - started,
                               already_stored=kept, texts=[{"unit": r.unit, "texts": r.to_json()["texts"]}
                                                           for r in results]))
        return
    for r in results:
        text, score, _ = r.best
        typer.echo(f"unit {r.unit}: {text!r} ({score:+.4f})")
    earlier = f"; {kept} unit(s) it stored earlier kept" if kept else ""
    typer.echo(f"{basis.model}: texts of {len(chosen)} units of {basis.layer} into {out} (run {run_id}{earlier})")


def _climb_units(atlas: Atlas, run_id: int, model: LoadedModel, basis: AttributionBasis, units: list[int],
                 settings: TextVisSettings, bars: ProgressBars) -> tuple[list[TextVisResult], int]:
    """Climb each of ``units`` that run ``run_id`` has no texts of yet, storing each unit's texts as it
    finishes (hours for all units of a real model: a kill keeps the units done). Returns the new
    :class:`~neuronscope.probing.textvis.TextVisResult` s and how many units were already stored."""
    from neuronscope.probing.text_store import merge_unit_texts, units_with_texts
    from neuronscope.probing.textvis import optimize_text

    stored = units_with_texts(atlas, run_id, basis.model, basis.layer)
    todo = [unit for unit in units if unit not in stored]
    progress = bars.track("textvis (units)")
    results = []
    for number, unit in enumerate(todo):
        result = optimize_text(model, basis, unit, settings)
        merge_unit_texts(atlas, run_id, basis.model, basis.layer, {unit: [(t, s) for t, s, _ in result.texts]})
        results.append(result)
        progress(number + 1, len(todo))
    return results, len(units) - len(todo)


def emotions(
    ctx: typer.Context,
    model: ModelOpt = None,
    weights: WeightsOpt = None,
    layer: LayerOpt = "neurons",
    out: OutOpt = "",
    vocab: Annotated[str, typer.Option("--vocab", help="Emotion words: emotions (the feeling wheel) "
                                                       "or a FILE.")] = "emotions",
    max_units: Annotated[int, typer.Option("--max-units", min=1, help="The most units per emotion's "
                                                                      "code.")] = 5,
    drop_lexical: Annotated[bool, typer.Option("--drop-lexical", help="Leave out units whose top "
                                                                      "english-10k texts share a prefix or "
                                                                      "suffix.")] = False,
    images: ImagesOpt = None,
    sample: SampleOpt = 256,
    batch_size: BatchSizeOpt = 64,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    seed: SeedOpt = 0,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Emotion codes: feeling-wheel words x the paper's 3 prompts -> unit attributions -> sparse L1 logistic
    regression (each emotion as a few units) and NMF atlases (2 and 7 factors), stored in the atlas with a
    PNG of the map."""
    from neuronscope.analysis.emotion_plot import plot_emotion_atlas
    from neuronscope.analysis.emotions import ATLAS_FACTORS, check_emotion_words, emotion_atlas, text_lexical_units
    from neuronscope.atlas.runs import marked_interrupted
    from neuronscope.probing.text_store import start_text_run, vocabulary_run_config
    from neuronscope.probing.vocab import load_vocabulary
    from neuronscope.runtime import seed_everything

    require_model(model)
    require_out(out, "emotions")
    words = load_vocabulary(vocab)  # the words (and wordfreq for --drop-lexical) are checked before any compute
    check_emotion_words(words)
    english = load_vocabulary("english-10k") if drop_lexical else []
    started = time.monotonic()
    seed_everything(seed)  # --seed fixes --weights random's init too, not only the image sample
    loaded = _load_text_model(model, weights, device, precision)
    image_sample = _image_sample(loaded, images, sample, seed)
    record = VocabularyRecord.of(vocab, words)
    with _progress(json_out) as bars, Atlas(out) as atlas:  # opened first: it keeps the basis for a rerun
        basis, basis_key = _atlas_basis(atlas, loaded, layer, image_sample, batch_size, bars)
        command = _recorded_command(ctx, loaded, basis)
        # Recorded before the codes (minutes on a real model), as the other text commands do: a Ctrl-C there
        # leaves the run `interrupted`.
        run_id = start_text_run(atlas, loaded, basis, command=command, kind="emotions",
                                config=vocabulary_run_config(loaded, record, max_units=max_units,
                                                             drop_lexical=drop_lexical, seed=seed, sample=sample),
                                dataset=record.dataset())
        with marked_interrupted(atlas, run_id):
            dropped = text_lexical_units(loaded, basis, english) if drop_lexical else {}
            result = emotion_atlas(loaded, basis, words, max_units=max_units, drop_units=dropped, seed=seed,
                                   on_step=bars.track("emotion codes (emotions)"))
            png = plot_emotion_atlas(result)
            codes = atlas.save_artifact(basis.model, basis.layer, "emotions", "codes", data=result.to_json(),
                                        run_id=run_id)
            plot = atlas.save_artifact(basis.model, basis.layer, "emotions", "atlas", file_bytes=png,
                                       suffix=".png", data={"factors": list(ATLAS_FACTORS)}, run_id=run_id)
            atlas.finish_run(run_id, images=len(basis.image_embeddings))
        atlas.drop_checkpoint(basis_key)
    if json_out:
        print_json(fill_report(out, run_id, basis.model, [basis.layer], basis.units, time.monotonic() - started,
                               emotions=len(words), dropped_units=len(dropped), plot=plot["path"],
                               codes=codes["data"]["codes"]))
        return
    for entry in result.to_json()["codes"][:10]:
        units_text = ", ".join(f"{u['unit']} ({u['weight']:+.2f})" for u in entry["units"]) or "-"
        typer.echo(f"{entry['class']:>14}: {units_text}")
    typer.echo(f"{basis.model}: codes of {len(words)} emotions at {basis.layer} into {out} (run {run_id}); "
               f"plot {plot['path']}")


def register(app: typer.Typer) -> None:
    app.command("attribute")(cli_command(attribute))
    app.command("textvis")(cli_command(textvis))
    app.command("emotions")(cli_command(emotions))
