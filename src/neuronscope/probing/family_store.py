"""Families into an atlas: a recorded run, each unit's family, and what they came from.

    plan = plan_families(atlas, None, "neurons")     # the layer's one stored word probe
    done = families_into(atlas, plan)
    atlas.unit(plan.model, plan.layer, 7)["family"]  # {"family", "score", "source"}

The families come from a stored word probe and need no model, yet they are a run, as every atlas writer's
results are (CONVENTIONS: each run records its provenance): its config names the probe's run, the threshold,
the family lists (their hash), the lexical rule and the null, and its key ``families-...`` tells the demo
whether the families of this very config are stored already. The ``families`` artifact carries the run id.
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..analysis.families import (DEFAULT_THRESHOLD, MIN_FAMILY_WORDS, NULL_DRAWS, NULL_SEED, Families,
                                  builtin_families, word_families)
from ..atlas import Atlas
from ..atlas.runs import config_digest, marked_interrupted, open_run
from ..atlas.words import ARTIFACT as WORDS_ARTIFACT
from .embedding import LexicalRule
from .word_store import load_word_scores

#: The ``source`` of the families computed here (a family set from elsewhere is kept).
SOURCE = "auto:words"


@dataclass(frozen=True)
class FamilyPlan:
    """What a families run reads (a stored probe: ``scores`` [words, units]) and its config and key."""

    model: str
    layer: str
    vocabulary: str
    words: list[str]
    scores: torch.Tensor
    config: dict[str, Any]
    config_key: str


@dataclass(frozen=True)
class FamiliesRun:
    """A finished families run: what was found, its run id and how long it took."""

    found: Families
    run_id: int
    seconds: float


def plan_families(atlas: Atlas, model: str | None, layer: str, vocabulary: str | None = None, *,
                  threshold: float = DEFAULT_THRESHOLD) -> FamilyPlan:
    """The stored probe of ``layer`` (``vocabulary`` may be omitted when it has one) and the config of its
    families: the probe's run, the threshold, the family lists' hash, the lexical rule and the null settings
    (what decides the results)."""
    model_key, canonical, name, words, scores = load_word_scores(atlas, model, layer, vocabulary)
    lists = {family: sorted({w.lower() for w in found}) for family, found in builtin_families().items()}
    config = {"model": model_key, "layer": canonical, "vocabulary": name,
              "probe_run": atlas.artifact(model_key, canonical, WORDS_ARTIFACT, name)["run_id"], "threshold": threshold,
              "families_sha256": config_digest(lists, 64), "min_family_words": MIN_FAMILY_WORDS,
              "lexical_rule": dataclasses.asdict(LexicalRule()), "null": {"draws": NULL_DRAWS, "seed": NULL_SEED}}
    return FamilyPlan(model_key, canonical, name, words, scores, config, "families-" + config_digest(config, 20))


def families_into(atlas: Atlas, plan: FamilyPlan, *, command: str | None = None) -> FamiliesRun:
    """Compute the families of ``plan`` and store them as a run: recorded ``running`` first (``interrupted``
    if this fails), each unit's family (source :data:`SOURCE`, replacing only its own) and the ``families``
    artifact (:meth:`Families.about`) under its run id, then ``finished``. ``command``: the one recorded."""
    start = time.perf_counter()
    opened = open_run(atlas, plan.config_key, lambda: _start(atlas, plan, command or _default_command(atlas, plan)))
    with marked_interrupted(atlas, opened.run_id):
        found = word_families(plan.words, plan.scores, plan.layer, threshold=plan.config["threshold"])
        atlas.write_families(plan.model, plan.layer, found.records(), source=SOURCE,
                             about=found.about(plan.vocabulary), run_id=opened.run_id)
        atlas.finish_run(opened.run_id)
    return FamiliesRun(found, opened.run_id, time.perf_counter() - start)


def _start(atlas: Atlas, plan: FamilyPlan, command: str) -> int:
    """Record the run: the model, weights and words are the probe's (its run's record); no precision (no model
    runs)."""
    probe_run = atlas.run(plan.config["probe_run"]) if plan.config["probe_run"] is not None else {}
    aliases = atlas.resolve_layer(plan.model, plan.layer)["aliases"]
    return atlas.start_run(command=command, config=plan.config, config_key=plan.config_key, model=plan.model,
                           weights_sha256=probe_run.get("weights_sha256"),
                           layers=[{"layer": plan.layer, "aliases": aliases}], dataset=probe_run.get("dataset"),
                           precision=None)


def _default_command(atlas: Atlas, plan: FamilyPlan) -> str:
    """The ``families`` command line of ``plan`` (the atlas by its folder name: no absolute paths)."""
    return shlex.join(["neuronscope", "families", Path(atlas.path).name, "--model", plan.model, "--layer", plan.layer,
                       "--vocab", plan.vocabulary, "--threshold", str(plan.config["threshold"])])
