"""Writing a word probe into an atlas and reading its score matrix back.

The compute (:mod:`neuronscope.probing.words`) returns a :class:`WordProbe`;
this module is the one place that turns it into atlas rows and artifacts, as
:mod:`neuronscope.visualize.store` does for renders and
:mod:`neuronscope.probing.text_store` for the text side.
"""

from __future__ import annotations

import shlex

import numpy as np
import torch

from neuronscope.activations.names import aliases_by_layer
from neuronscope.atlas.store import Atlas, AtlasError
from neuronscope.models.loaded import LoadedModel
from neuronscope.probing.vocab import VocabularyRecord
from neuronscope.probing.words import DEFAULT_TOP_K, WordProbe


def save_word_probe(atlas: Atlas, probe: WordProbe, model: LoadedModel, *, vocabulary: str | VocabularyRecord,
                    top_k: int = DEFAULT_TOP_K, command: str | None = None) -> int:
    """Store a probe in ``atlas``: a run, the layer (registered if no scan wrote it), each unit's top-k
    words, and the whole score matrix as a ``words`` artifact named after the vocabulary. Returns the run id.

    ``vocabulary``: its record (:meth:`VocabularyRecord.of`, which keeps ``--vocab`` as given), or its name.
    """
    record = vocabulary if isinstance(vocabulary, VocabularyRecord) else VocabularyRecord.of(vocabulary, probe.words)
    name = record.name
    aliases = aliases_by_layer(model.layer_aliases).get(probe.layer, [])
    config = {"vocabulary": name, "vocab_sha256": record.sha256, "words": len(probe.words),
              "settings": probe.settings.to_dict(),
              "reduce": "spatial mean; max over positions, mean over sizes and fonts", "top_k": top_k}
    run_id = atlas.start_run(
        command=command or shlex.join(["neuronscope", "words", "--model", probe.model, "--layer", probe.layer,
                                       "--vocab", record.source, "--top-k", str(top_k)]),
        config=config, config_key=f"words:{probe.model}:{probe.layer}:{name}", model=probe.model,
        weights_sha256=model.weights_sha256, layers=[{"layer": probe.layer, "aliases": aliases}],
        dataset=record.dataset(), precision=probe.precision)
    atlas.register_layer(probe.model, probe.layer, aliases=aliases, units=probe.units, grid=probe.grid, run_id=run_id)
    atlas.write_unit_texts("words", run_id, probe.model, probe.layer, probe.top_words_all(top_k))
    atlas.save_artifact(probe.model, probe.layer, "words", name, file_bytes=probe.to_npz(), suffix=".npz",
                        data={**config, "precision": probe.precision}, run_id=run_id)
    atlas.finish_run(run_id, images=len(probe.words) * probe.settings.variants)
    return run_id


def load_word_scores(atlas: Atlas, model: str | None, layer: str,
                     vocabulary: str | None = None) -> tuple[str, str, str, list[str], torch.Tensor]:
    """A stored probe's matrix: ``(model key, canonical layer, vocabulary, words, scores float32 [words, units])``.

    ``vocabulary`` may be omitted when the layer has one stored probe.
    """
    model_key = atlas.resolve_model(model)
    canonical = atlas.resolve_layer(model_key, layer)["layer"]
    stored = {a["name"]: a for a in atlas.artifacts(model_key, canonical, "words") if a["path"]}
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
    with np.load(atlas.path / stored[vocabulary]["path"]) as arrays:
        words = [str(w) for w in arrays["words"]]
        scores = torch.from_numpy(arrays["scores"].astype(np.float32))
    return model_key, canonical, vocabulary, words, scores
