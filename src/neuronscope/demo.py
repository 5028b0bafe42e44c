"""The main job: an atlas of the bundled mini CLIP, built stage by stage, then browsed.

    from neuronscope.demo import DemoSettings, build_demo_atlas
    outcome = build_demo_atlas(load_model("mini-clip"), "demo-atlas", DemoSettings(steps=128))

Stages, in order, each storing its results in the atlas as it goes:

    scan        the bundled test split through the ``neurons`` layer: top examples, histograms
    labels      the model card's multimodal units, labelled with their concepts (only on the model
                the card describes, the bundled mini CLIP: on other weights its units mean nothing)
    multimodality  every unit's multimodality score on the card's held-out drawings and words (the same)
    featurevis  a plain feature visualization of every unit
    facets      faceted renders (built-in ``text`` and ``drawing`` facets) of the card's units (as labels)
    words       rastered-word probing over a vocabulary
    families    region, emotion, colour, time, art and lexical units, from the words
    texts       each unit's top texts by text-side attribution

A stage whose results are already in the atlas (from the same settings) is
reused, and the feature-vis stages render only the units still missing, so a
demo that was killed, started again, goes on where it stopped. Compute lives
in the modules each stage calls; this module only orders them.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuronscope.atlas import Atlas
from neuronscope.atlas.families import ARTIFACT as FAMILIES_ARTIFACT
from neuronscope.atlas.multimodality import ARTIFACT as MULTIMODALITY_ARTIFACT
from neuronscope.atlas.words import ARTIFACT as WORDS_ARTIFACT

if TYPE_CHECKING:
    from neuronscope.models import LoadedModel

#: ``progress(stage, done, total)``: the command draws bars from it.
StageProgress = Callable[[str, int, int], None]

STAGES = ("scan", "labels", "multimodality", "featurevis", "facets", "words", "families", "texts")

#: Rastered images per forward in the words stage: small 64 px images, for which a batch of 32 (the renders'
#: default) runs about 4x slower per word on a 2-core CPU. Scores do not depend on it.
WORDS_BATCH = 256

#: Lucid's recipe with a steeper spectrum (decay power 1.5, as the tests render the mini CLIP) and, for the
#: demo's 128 steps instead of 512, twice Lucid's learning rate: at 128 steps the zero-shot head names the
#: unit's concept for 6 and 5 of the card's 11 units (seeds 0, 1) against 2 and 5 at lr 0.05
#: (benchmarks/RESULTS.md, "Feature visualization").
DEMO_RENDER = dict(lr=0.1, decay_power=1.5)


@dataclass(frozen=True)
class DemoSettings:
    """What the demo builds. The defaults take about 10 minutes on a 2-core CPU (see the README).

    Attributes:
        layer: the layer mapped (``neurons``: the last block's pre-ReLU sum).
        steps: optimiser steps per feature visualization (Lucid's 512; 128 keeps the demo short);
            the other render settings are :data:`DEMO_RENDER`.
        units: units rendered (``all`` or ``0-31,40``); scan and words always cover the whole layer.
        images: scan an evenly spaced subset of this many split images (None: all of them).
        vocabulary: the rastered-word vocabulary (``english-10k``, another built-in, or a file).
        facets: built-in facets rendered for the card's units.
        skip: stages not to run.
        batch_size: images per scan and attribution batch, units per render pass (the words stage batches
            :data:`WORDS_BATCH` images).
        seed: seeds renders and sampling.
    """

    layer: str = "neurons"
    steps: int = 128
    units: str = "all"
    images: int | None = None
    vocabulary: str = "english-10k"
    facets: tuple[str, ...] = ("text", "drawing")
    skip: tuple[str, ...] = ()
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.skip) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown demo stage(s) {', '.join(unknown)}; the stages are {', '.join(STAGES)}")


@dataclass(frozen=True)
class StageReport:
    """What one stage did: ``built`` (computed now), ``reused`` (already in the atlas) or ``skipped``."""

    stage: str
    status: str
    seconds: float
    summary: str


@dataclass
class DemoOutcome:
    """The atlas the demo built and what each stage did."""

    atlas: Path
    model: str
    layer: str
    units: int
    settings: DemoSettings
    stages: list[StageReport] = field(default_factory=list)
    scan_run: int | None = None  # the run holding the examples and histograms (None: scan skipped)
    skipped: dict[str, int] = field(default_factory=dict)  # the scan's unreadable files, by reason

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)


def build_demo_atlas(model: LoadedModel, atlas_path: str | Path, settings: DemoSettings = DemoSettings(), *,
                     progress: StageProgress | None = None) -> DemoOutcome:
    """Build (or complete) the demo atlas of ``model`` at ``atlas_path``; see the module docstring."""
    from neuronscope.probing.raster import RasterSettings, resolve_fonts
    from neuronscope.units import parse_units

    if "words" not in settings.skip:
        resolve_fonts(RasterSettings())  # a missing font fails now, not after the scan and the renders
    layer = model.resolve_layer(settings.layer)
    outcome = DemoOutcome(Path(atlas_path), model.key, layer, model.layer_shape(layer)[0], settings)
    units = parse_units(settings.units, outcome.units)  # a bad --units fails now, not after the scan
    report = progress or (lambda stage, done, total: None)
    steps: dict[str, Callable[[Atlas], tuple[str, str]]] = {
        "scan": lambda atlas: _scan(model, atlas, layer, settings, report, outcome),
        "labels": lambda atlas: _labels(model, atlas),
        "multimodality": lambda atlas: _multimodality(model, atlas, layer),
        "featurevis": lambda atlas: _featurevis(model, atlas, layer, units, settings, report),
        "facets": lambda atlas: _facets(model, atlas, layer, settings, report),
        "words": lambda atlas: _words(model, atlas, layer, settings, report),
        "families": lambda atlas: _families(model, atlas, layer, settings),
        "texts": lambda atlas: _texts(model, atlas, layer, settings, report),
    }
    with Atlas(atlas_path) as atlas:
        for stage in STAGES:
            started = time.perf_counter()
            if stage in settings.skip:
                status, summary = "skipped", "--skip"
            else:
                status, summary = steps[stage](atlas)
            outcome.stages.append(StageReport(stage, status, round(time.perf_counter() - started, 3), summary))
    return outcome


# ---------------------------------------------------------------------------------------------- stages


def _scan(model: LoadedModel, atlas: Atlas, layer: str, settings: DemoSettings, report: StageProgress,
          outcome: DemoOutcome) -> tuple[str, str]:
    """Scan (or find the finished scan of) the split; records its run and skipped files on ``outcome``."""
    from neuronscope.imagefiles import PILLOW_MAX_PIXELS
    from neuronscope.mining import ScanSettings, open_source, scan
    from neuronscope.mining.scanner import scan_config
    from neuronscope.world.split import bundled_test_split_path

    source = open_source(bundled_test_split_path())
    if settings.images is not None and settings.images < len(source):
        stride = len(source) / settings.images
        source = replace(source, entries=tuple(source.entries[int(i * stride)] for i in range(settings.images)))
    scan_settings = ScanSettings(top_k=48, bottom_k=48, seed=settings.seed)
    _, config_key = scan_config(model, [layer], source, scan_settings, PILLOW_MAX_PIXELS)
    earlier = atlas.finished_run(config_key)
    if earlier is not None:
        outcome.scan_run, outcome.skipped = earlier, atlas.run(earlier)["skipped"] or {}
        return "reused", f"{len(source)} images scanned earlier"
    scanned = scan(model, source, atlas, [layer], settings=scan_settings, batch_size=settings.batch_size,
                   workers=1, command=f"neuronscope demo (scan of {source.name})",
                   on_batch=lambda p: report("scan", p.done, p.total),
                   on_thumbnails=lambda done, total: report("scan thumbnails", done, total))
    outcome.scan_run, outcome.skipped = scanned.run_id, dict(scanned.skipped)
    return "built", f"{scanned.images} images, {scanned.layers[0].units} units"


def _card_for(model: LoadedModel) -> tuple[dict[str, Any] | None, str]:
    """The bundled card when it describes ``model`` (its units mean nothing on other weights), else
    None and why the card's stages are skipped."""
    from neuronscope.models.bundled import load_card

    card = load_card()
    if card.get("model") != model.key:
        return None, f"the card describes {card.get('model')}, not {model.key}"
    return card, ""


def _labels(model: LoadedModel, atlas: Atlas) -> tuple[str, str]:
    from neuronscope.world.card import label_card_units

    card, why_not = _card_for(model)
    if card is None:
        return "skipped", why_not
    written = label_card_units(atlas, model.key, card)  # a label already there (a user's own) is kept
    if not written:
        return "reused", f"{len(card['multimodal']['units'])} card units labelled earlier"
    return "built", f"{written} card units labelled with their concepts"


def _multimodality(model: LoadedModel, atlas: Atlas, layer: str) -> tuple[str, str]:
    """Every unit's multimodality score on the card's held-out drawings and words (`neuronscope multimodal`)."""
    from neuronscope.probing.multimodal_store import measure_multimodality_into, run_config
    from neuronscope.probing.raster import RasterSettings

    card, why_not = _card_for(model)
    if card is None:
        return "skipped", why_not
    threshold = card["multimodal"]["threshold"]
    config_key = run_config(model, layer, None, RasterSettings())[1]
    if _stored_by_finished_run(atlas, model.key, layer, *MULTIMODALITY_ARTIFACT, config_key):
        return "reused", "multimodality measured earlier"
    run = measure_multimodality_into(atlas, model, layer, None, threshold=threshold,
                                     command="neuronscope demo (multimodal)")
    return "built", (f"{len(run.measurement.scores.units(threshold))} units multimodal for "
                     f"{run.measurement.scores.concepts_with_units(threshold)} concepts")


def _stored_by_finished_run(atlas: Atlas, model: str, layer: str, kind: str, name: str, config_key: str) -> bool:
    """Whether the layer's stored artifact ``(kind, name)`` was written by a finished run of ``config_key``: a
    stage that stores its results as one artifact is reused only then, since a later run of another config (a
    `multimodal --out` on other images, `families --threshold`) replaces the artifact, and the atlas would no longer
    hold this stage's results though its run finished."""
    stored = atlas.artifact(model, layer, kind, name)
    return stored is not None and stored["run_id"] is not None and stored["run_id"] == atlas.finished_run(config_key)


def _featurevis(model: LoadedModel, atlas: Atlas, layer: str, units: list[int], settings: DemoSettings,
                report: StageProgress) -> tuple[str, str]:
    from neuronscope.visualize import RenderConfig, render_units
    from neuronscope.visualize.store import FeatureVisWriter

    config = RenderConfig(steps=settings.steps, seed=settings.seed, **DEMO_RENDER)
    writer = FeatureVisWriter.start(atlas, model, layer, kind="plain", settings=config.to_dict(),
                                    batch_size=settings.batch_size,
                                    command=f"neuronscope demo (visualize --units {settings.units} "
                                            f"--steps {settings.steps})")
    missing = writer.missing(units)
    if missing:
        render_units(model, layer, missing, batch_size=settings.batch_size, config=config, on_pass=writer,
                     on_step=lambda done, total: report("featurevis", done, total))
    writer.finish()
    if not missing:
        return "reused", f"{len(units)} units rendered earlier"
    return "built", f"{len(missing)} units rendered ({len(units) - len(missing)} earlier), {settings.steps} steps"


def _facets(model: LoadedModel, atlas: Atlas, layer: str, settings: DemoSettings,
            report: StageProgress) -> tuple[str, str]:
    from neuronscope.visualize import RenderConfig
    from neuronscope.visualize.facets import FacetSettings, render_faceted
    from neuronscope.visualize.store import FeatureVisWriter, facet_probe

    card, why_not = _card_for(model)
    if card is None:
        return "skipped", why_not
    units = [entry["unit"] for entry in card["multimodal"]["units"] if entry["layer"] == layer]
    facet_settings = FacetSettings()  # the paper's lr and squared-L2 term, recorded as rendered
    config = facet_settings.apply(RenderConfig(steps=settings.steps, seed=settings.seed))
    rendered, summaries = 0, []
    for facet in settings.facets:
        writer = FeatureVisWriter.start(atlas, model, layer, kind=f"facet:{facet}",
                                        settings={**config.to_dict(), **facet_settings.job_settings()},
                                        batch_size=settings.batch_size,
                                        command=f"neuronscope demo (visualize --facet {facet})")
        missing = writer.missing(units)
        if missing:
            probe = facet_probe(model, facet, atlas=atlas)
            render_faceted(model, layer, missing, probe, batch_size=settings.batch_size, config=config,
                           settings=facet_settings, on_pass=writer, on_step=lambda done, total, f=facet: report(f"facet {f}", done, total))
            summaries.append(f"{facet} (probe accuracy at least {min(probe.accuracy.values()):.2f} on every layer)")
        writer.finish()
        rendered += len(missing)
    if not rendered:
        return "reused", f"facets {', '.join(settings.facets)} of {len(units)} card units rendered earlier"
    return "built", f"{rendered} faceted renders of the card's units: {', '.join(summaries)}"


def _words(model: LoadedModel, atlas: Atlas, layer: str, settings: DemoSettings,
           report: StageProgress) -> tuple[str, str]:
    from neuronscope.probing.raster import RasterSettings
    from neuronscope.probing.vocab import VocabularyRecord, load_vocabulary, vocabulary_name, vocabulary_source
    from neuronscope.probing.word_store import probe_words_into, word_run_config
    from neuronscope.probing.words import DEFAULT_TOP_K

    name = vocabulary_name(settings.vocabulary)
    raster = RasterSettings()
    words = load_vocabulary(settings.vocabulary)
    record = VocabularyRecord.of(settings.vocabulary, words)
    stored = (atlas.artifact(model.key, layer, WORDS_ARTIFACT, name) or {}).get("data") or {}
    wanted = word_run_config(model, model.resolve_layer(layer), record, raster, DEFAULT_TOP_K)[0]
    # reused only when the probe this stage would run wrote it: the same weights, precision, raster settings and
    # words (a `words` run with other fonts is not this, nor one of the file before it was edited). Its --top-k
    # only trims the top-word lists, not the stored matrix, so any is reused.
    if stored == {**wanted, "top_k": stored.get("top_k")}:
        return "reused", f"words of {name} probed earlier"
    # resumable: a demo killed while rastering goes on after the words it checkpointed
    outcome = probe_words_into(
        atlas, model, layer, words, vocabulary=record, settings=raster, batch_size=WORDS_BATCH, workers=1,
        command=f"neuronscope demo (words --vocab {shlex.quote(vocabulary_source(settings.vocabulary))})",
        on_batch=lambda done, total: report("words", done, total))
    resumed = f", resumed at word {outcome.resumed_from}" if outcome.resumed_from else ""
    return "built", f"{len(words)} words of {name} rastered, {raster.variants} images each{resumed}"


def _families(model: LoadedModel, atlas: Atlas, layer: str, settings: DemoSettings) -> tuple[str, str]:
    """Each unit's family from the words stage's probe (`neuronscope families`), recorded as a run; reused when
    the stored families are those of a finished run of this very config (the same probe run, lists, null)."""
    from neuronscope.probing.family_store import SOURCE, families_into, plan_families
    from neuronscope.probing.vocab import vocabulary_name

    name = vocabulary_name(settings.vocabulary)
    if atlas.artifact(model.key, layer, WORDS_ARTIFACT, name) is None:
        return "skipped", "no word probe (the words stage was skipped)"
    plan = plan_families(atlas, model.key, layer, name)
    if _stored_by_finished_run(atlas, model.key, layer, FAMILIES_ARTIFACT, SOURCE, plan.config_key):
        return "reused", f"families from the {name} probe found earlier"
    found = families_into(atlas, plan, command=f"neuronscope demo (families --vocab {shlex.quote(name)})").found
    sizes = ", ".join(f"{family} {len(units)}" for family, units in found.members().items()) or "none"
    return "built", f"families from the {name} probe: {sizes}"


def _texts(model: LoadedModel, atlas: Atlas, layer: str, settings: DemoSettings,
           report: StageProgress) -> tuple[str, str]:
    from neuronscope.probing.attribution import DEFAULT_SAMPLE_SIZE, compute_basis, default_image_sample
    from neuronscope.probing.text_store import merge_unit_texts, start_text_run, text_run_key, vocabulary_run_config
    from neuronscope.probing.vocab import VocabularyRecord, load_vocabulary
    from neuronscope.probing.zeroshot import encode_texts
    from neuronscope.world.concepts import ZEROSHOT_TEMPLATE

    words = load_vocabulary(settings.vocabulary)
    vocabulary = VocabularyRecord.of(settings.vocabulary, words)
    name = vocabulary.name
    # the config `attribute --out` records (batch size changes nothing)
    config = vocabulary_run_config(model, vocabulary, template=ZEROSHOT_TEMPLATE, top_k=20, seed=settings.seed,
                                   sample=DEFAULT_SAMPLE_SIZE)
    if atlas.finished_run(text_run_key(model.key, layer, "attribute", config)) is not None:
        return "reused", f"texts of {name} attributed earlier"
    report("texts", 0, 1)
    sample = default_image_sample(DEFAULT_SAMPLE_SIZE, seed=settings.seed, preprocess=model.preprocess)
    basis = compute_basis(model, layer, sample, batch_size=settings.batch_size)
    texts = [ZEROSHOT_TEMPLATE.format(word) for word in words]
    run_id = start_text_run(atlas, model, basis,
                            command=f"neuronscope demo (attribute --vocab {shlex.quote(vocabulary.source)})",
                            kind="attribute", config=config, dataset=vocabulary.dataset())
    scored = basis.top_texts(texts, encode_texts(model, texts), list(range(basis.units)), config["top_k"])
    merge_unit_texts(atlas, run_id, basis.model, basis.layer, scored)
    atlas.finish_run(run_id)
    report("texts", 1, 1)
    return "built", f"top texts of {len(texts)} prompts for {basis.units} units"
