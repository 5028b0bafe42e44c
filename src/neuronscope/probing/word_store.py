"""Writing a word probe into an atlas and reading its score matrix back.

The compute (:mod:`neuronscope.probing.words`) returns a :class:`WordProbe`;
this module is the one place that turns it into atlas rows and artifacts, as
:mod:`neuronscope.visualize.store` does for renders and
:mod:`neuronscope.probing.text_store` for the text side.

:func:`probe_words_into` is the resumable form (the ``words`` command): its
run is recorded before the first word, the scores of the words done so far
are checkpointed in the atlas as it goes, and the same probe started again
after a kill continues from the last checkpoint, as a scan does.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from neuronscope.atlas.runs import (CHECKPOINT_SECONDS, CheckpointSchedule, abandon_stale_runs, config_digest,
                                    drop_checkpoints, marked_interrupted, open_run, refuse_edited, start_run)
from neuronscope.atlas.store import Atlas, AtlasError
from neuronscope.atlas.words import ARTIFACT, WordMatrix, stored_probes
from neuronscope.models.loaded import LoadedModel
from neuronscope.probing.raster import RasterSettings
from neuronscope.probing.vocab import VocabularyRecord, vocabulary_sha256
from neuronscope.probing.words import DEFAULT_TOP_K, ProgressHook, WordProbe, drawable_words, probe_words
from neuronscope.probing.zeroshot import text_list

log = logging.getLogger(__name__)

#: Checkpoint after this many words, or after CHECKPOINT_SECONDS, whichever comes first: english-10k on
#: RN50x4 on a CPU is ~6 hours (9 images a word at ~4 a second), where 1,000 words take ~40 minutes.
CHECKPOINT_WORDS = 1000
REDUCE = "spatial mean; max over positions, mean over sizes and fonts"


def word_run_config(model: LoadedModel, layer: str, vocabulary: VocabularyRecord, settings: RasterSettings,
                    top_k: int) -> tuple[dict[str, Any], str]:
    """A words run's config (what decides its results: model and weights, canonical ``layer``, the words,
    raster settings, precision, top-k) and its key, which names its checkpoint (batch size and workers do not
    change the scores, so they are not in it).

    Random weights have no file hash: their state dict's is the config's ``weights_sha256``, so a run of another
    seed's init is another run, never resumed from this one's checkpoint.
    """
    config = {"model": model.key, "weights_sha256": model.weights_identity(), "layer": layer,
              "vocabulary": vocabulary.name, "vocab_sha256": vocabulary.sha256, "words": vocabulary.entries,
              "settings": settings.to_dict(), "reduce": REDUCE, "top_k": top_k, "precision": model.precision.name}
    config = json.loads(json.dumps(config))  # as the atlas stores it: tuples read back as lists
    return config, "words-" + config_digest(config, 20)


def _write_word_probe(atlas: Atlas, run_id: int, probe: WordProbe, model: LoadedModel, config: dict[str, Any],
                      top_k: int) -> None:
    """Store a finished probe under run ``run_id``: the layer (registered if no scan wrote it), each unit's
    top-k words, the whole score matrix as a ``words`` artifact named after the vocabulary; the run finished."""
    atlas.register_layer(probe.model, probe.layer, aliases=model.aliases_of(probe.layer), units=probe.units, grid=probe.grid, run_id=run_id)
    atlas.write_unit_texts("words", run_id, probe.model, probe.layer, probe.top_words_all(top_k))
    atlas.save_artifact(probe.model, probe.layer, ARTIFACT, config["vocabulary"], file_bytes=probe.to_npz(),
                        suffix=".npz", data=config, run_id=run_id)
    atlas.finish_run(run_id, images=len(probe.words) * probe.settings.variants)


def _default_command(model: str, layer: str, vocabulary: VocabularyRecord, top_k: int) -> str:
    return shlex.join(["neuronscope", "words", "--model", model, "--layer", layer, "--vocab", vocabulary.source,
                       "--top-k", str(top_k)])


def save_word_probe(atlas: Atlas, probe: WordProbe, model: LoadedModel, *, vocabulary: str | VocabularyRecord,
                    top_k: int = DEFAULT_TOP_K, command: str | None = None) -> int:
    """Store a probe computed in one go in ``atlas``: a run, the layer (registered if no scan wrote it), each
    unit's top-k words, and the whole score matrix as a ``words`` artifact named after the vocabulary. Returns
    the run id. (:func:`probe_words_into` computes and stores resumably.)

    ``vocabulary``: its record (:meth:`VocabularyRecord.of`, which keeps ``--vocab`` as given), or its name.
    """
    record = vocabulary if isinstance(vocabulary, VocabularyRecord) else VocabularyRecord.of(vocabulary, probe.words)
    config, config_key = word_run_config(model, probe.layer, record, probe.settings, top_k)
    run_id = start_run(atlas, model, command=command or _default_command(probe.model, probe.layer, record, top_k),
                       config=config, config_key=config_key, layers=[probe.layer], dataset=record.dataset())
    _write_word_probe(atlas, run_id, probe, model, config, top_k)
    return run_id


class WordRunOutcome(NamedTuple):
    """What :func:`probe_words_into` did: the probe (every word drawn; ``undrawable``: those left out), its run,
    and the word it resumed at (0: it started from the first)."""

    probe: WordProbe
    run_id: int
    resumed_from: int


class ScoreCheckpoints:
    """The ``on_scores`` hook of :func:`~neuronscope.probing.words.probe_words` that saves the scores so far
    (float32 [words done, units]) as the run's checkpoint, atomically, every ``every_words`` words or
    ``every_seconds`` seconds, and after the last word (a failure while storing then loses nothing)."""

    def __init__(self, atlas: Atlas, config_key: str, run_id: int, total: int, scored: torch.Tensor | None, *,
                 every_words: int, every_seconds: float) -> None:
        self.atlas, self.config_key, self.run_id, self.total = atlas, config_key, run_id, total
        self.chunks = [] if scored is None else [scored]
        self.schedule = CheckpointSchedule(every_words, every_seconds, done=0 if scored is None else len(scored),
                                           total=total)

    def __call__(self, done: int, scores: torch.Tensor) -> None:
        self.chunks.append(scores)
        if self.schedule.due(done):
            self.save(done)

    def keep(self) -> None:
        """Save the words scored since the last checkpoint (on a Ctrl-C: checkpoints are minutes apart)."""
        done = sum(len(chunk) for chunk in self.chunks)  # a row a word: what the chunks hold, whatever was cut
        if done > self.schedule.saved_items:
            self.save(done)

    def save(self, done: int) -> None:
        self.chunks = [torch.cat(self.chunks)]  # one tensor kept, not one per batch
        self.atlas.save_checkpoint(self.config_key, {"scores": self.chunks[0].numpy()},
                                   {"run_id": self.run_id, "words_done": done, "words": self.total})
        self.schedule.saved(done)


def open_word_run(atlas: Atlas, model: LoadedModel, layer: str, vocabulary: VocabularyRecord, config: dict[str, Any],
                  config_key: str, command: str, words: int) -> tuple[int, torch.Tensor | None]:
    """The run of this config (:func:`~neuronscope.atlas.runs.open_run`): a killed one with the scores its
    checkpoint holds (None when it was killed before its first checkpoint: it starts over), or a new one, once
    the runs of this probe over an edited vocabulary are abandoned (:func:`abandon_edited_vocabulary_runs`);
    refused while a Recorder's edits are attached to ``model``."""
    refuse_edited(model)

    def fits(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> bool:
        return meta.get("words") == words and len(arrays["scores"]) <= words

    def start() -> int:
        abandon_edited_vocabulary_runs(atlas, vocabulary, config, config_key)
        return start_run(atlas, model, command=command, config=config, config_key=config_key, layers=[layer],
                         dataset=vocabulary.dataset())

    opened = open_run(atlas, config_key, start, checkpoint_key=config_key, checkpoint_fits=fits)
    return opened.run_id, None if opened.checkpoint is None else torch.from_numpy(opened.checkpoint[0]["scores"])


def abandon_edited_vocabulary_runs(atlas: Atlas, vocabulary: VocabularyRecord, config: dict[str, Any],
                                   config_key: str) -> None:
    """Mark abandoned the unfinished runs of this same probe over another version of the vocabulary (its
    file edited since): their key can never come back, so their checkpoints (up to words x units float32)
    are dropped.

    The same file is the same ``--vocab`` as recorded (:attr:`VocabularyRecord.source`): the config keeps only
    the stem, and ``a/nouns.txt`` and ``b/nouns.txt`` are two vocabularies, each of which may still resume.
    """
    def without_words(run_config: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in run_config.items() if k not in ("vocab_sha256", "words")}

    def same_probe(run: dict[str, Any]) -> bool:
        return (run["config_key"].startswith("words-") and without_words(run["config"]) == without_words(config)
                and (run["dataset"] or {}).get("source") == vocabulary.source)

    for run in abandon_stale_runs(atlas, config_key, same_probe):
        log.warning("the words of %s changed since run %d was interrupted: it cannot resume, so a new run "
                    "starts; run %d is marked abandoned and its checkpoint dropped",
                    vocabulary.source, run["id"], run["id"])


def probe_words_into(atlas: Atlas, model: LoadedModel, layer: str, words: str | Sequence[str], *,
                     vocabulary: VocabularyRecord, settings: RasterSettings = RasterSettings(),
                     top_k: int = DEFAULT_TOP_K, command: str | None = None, batch_size: int = 64, workers: int = 0,
                     checkpoint_every: int = CHECKPOINT_WORDS, checkpoint_seconds: float = CHECKPOINT_SECONDS,
                     on_resume: ProgressHook | None = None, on_batch: ProgressHook | None = None) -> WordRunOutcome:
    """Probe ``words`` (:func:`~neuronscope.probing.words.probe_words`) and store the probe in ``atlas``,
    resumably.

    The run is recorded first (``running``; ``interrupted`` if the probe fails or is interrupted, ``finished``
    once stored). The scores of the words done so far are checkpointed every ``checkpoint_every`` words or
    ``checkpoint_seconds`` seconds, keyed by :func:`word_run_config`; the same probe started again continues
    after the last checkpoint and, with the same batch size, ends with the same scores as an uninterrupted
    one. The checkpoint is dropped once the probe is stored.

    Words a font cannot draw are left out, as :func:`~neuronscope.probing.words.probe_words` leaves them (the
    probe's ``undrawable``), before the run is recorded: checkpoints count the words drawn.

    Args:
        vocabulary: the record of ``words`` (:meth:`VocabularyRecord.of`): its name names the artifact.
        command: recorded in the run (the CLI passes its command line).
        on_resume: called with (word resumed at, words total) when a checkpoint is restored, before the first batch.
        on_batch: called with (words done, words total) after every batch, resumed words included.
    """
    words = text_list(words)
    if vocabulary_sha256(words) != vocabulary.sha256:  # the key says which words: a checkpoint must hold them
        raise ValueError(f"vocabulary record {vocabulary.name!r} is of other words; make it with "
                         "VocabularyRecord.of(name, words)")
    canonical = model.resolve_layer(layer)
    drawn = drawable_words(words, settings)  # the fonts are in the key: the same run leaves out the same words
    config, config_key = word_run_config(model, canonical, vocabulary, settings, top_k)
    total = len(drawn.words)
    run_id, scored = open_word_run(atlas, model, canonical, vocabulary, config, config_key,
                                   command or _default_command(model.key, canonical, vocabulary, top_k), total)
    if scored is not None and on_resume is not None:
        on_resume(len(scored), total)
    checkpoints = ScoreCheckpoints(atlas, config_key, run_id, total, scored, every_words=checkpoint_every,
                                   every_seconds=checkpoint_seconds)
    with marked_interrupted(atlas, run_id):
        try:
            probe = probe_words(model, canonical, drawn, settings=settings, batch_size=batch_size, workers=workers,
                                on_batch=on_batch, scored=scored, on_scores=checkpoints)
        except KeyboardInterrupt:
            checkpoints.keep()
            raise
        _write_word_probe(atlas, run_id, probe, model, config, top_k)
    drop_checkpoints(atlas, config_key)
    return WordRunOutcome(probe, run_id, 0 if scored is None else len(scored))


def load_word_scores(atlas: Atlas, model: str | None, layer: str,
                     vocabulary: str | None = None) -> tuple[str, str, str, list[str], torch.Tensor]:
    """A stored probe's matrix: ``(model key, canonical layer, vocabulary, words, scores float32 [words, units])``.

    ``vocabulary`` may be omitted when the layer has one stored probe.
    """
    model_key = atlas.resolve_model(model)
    canonical = atlas.resolve_layer(model_key, layer)["layer"]
    stored = stored_probes(atlas, model_key, canonical)
    if not stored:
        raise AtlasError(f"{atlas.path} has no word probe of {model_key} {canonical}; "
                         f"run `neuronscope words --model {model_key} --layer {canonical} --out {atlas.path}`")
    if vocabulary is None:
        if len(stored) > 1:
            raise AtlasError(f"{canonical} has word probes of several vocabularies ({', '.join(sorted(stored))}); "
                             "pass --vocab NAME")
        vocabulary = next(iter(stored))
    if vocabulary not in stored:
        raise AtlasError(f"no word probe of vocabulary {vocabulary!r} for {canonical}; "
                         f"stored: {', '.join(sorted(stored))}")
    matrix = WordMatrix.read(atlas, stored[vocabulary])
    return model_key, canonical, vocabulary, matrix.words, torch.from_numpy(matrix.responses)
