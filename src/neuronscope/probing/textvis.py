"""Text feature visualization: short texts that put the most weight on a unit.

The text-side analogue of feature visualization: hill climbing over BPE
tokens. The objective of a text is the unit's attribution score
(:class:`~neuronscope.probing.attribution.AttributionBasis`), optionally
plus a word-frequency prior standing in for the paper's language-model
penalty (Microscope used 0.0025 × the LM's log-probability):

    objective(text) = score_u(text) + prior_weight · Σ_tokens log10 p(word)

with ``p`` the word's frequency in ``wordfreq`` (floored at 1e-8), so rare
BPE fragments cost more.

Each climb starts from random whole-word tokens. A step proposes, for every
position, the ``candidates`` tokens with the largest first-order gain
``∂objective/∂x_pos · (E[v] − E[current])`` (x: the token's input
embedding; the gradient is read on the positional embedding, which is
added to every token's embedding, so ``∂/∂pos_emb[i] = ∂/∂x_i`` for one
text), evaluates them all exactly in one batch, and keeps the best if it
improves. A climb stops at a local optimum or after ``steps`` steps. Models
without a top-level ``positional_embedding`` (open_clip's CustomTextCLIP
keeps it inside ``.text``) get random proposals instead.

The climb moves over CLIP's BPE vocabulary, so it runs on models whose
tokenizer is CLIP's (:class:`~neuronscope.models.spec.TokenizerSpec`);
others (SigLIP, xlm-roberta, mt5 towers) are refused.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

from neuronscope.errors import NeuronscopeError
from neuronscope.models.loaded import LoadedModel, require_loaded, runs_in_eval
from neuronscope.probing.attribution import AttributionBasis

FREQUENCY_FLOOR = 1e-8


@dataclass
class TextVisSettings:
    """How to climb.

    Attributes:
        lengths: numbers of tokens to try (one set of climbs per length).
        restarts: climbs per length, each from its own random tokens.
        steps: the most accepted moves per climb.
        candidates: tokens evaluated per position and step.
        prior_weight: weight of the word-frequency prior (0: off).
        keep: texts kept in the result.
        seed: for the random starts.
    """

    lengths: tuple[int, ...] = (1, 2, 3)
    restarts: int = 2
    steps: int = 24
    candidates: int = 16
    prior_weight: float = 0.0
    keep: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.lengths or min(self.lengths) < 1:
            raise NeuronscopeError(f"text lengths {list(self.lengths)}: give one or more token counts of at least 1")


@dataclass
class TextVisResult:
    """Texts found for one unit, best first.

    Attributes:
        model, layer, unit: what was optimized.
        texts: ``[(text, score, objective)]`` best objective first, distinct texts;
            ``score`` is the unit's attribution, ``objective`` adds the prior.
        evaluated: texts scored in all.
    """

    model: str
    layer: str
    unit: int
    texts: list[tuple[str, float, float]] = field(default_factory=list)
    evaluated: int = 0

    @property
    def best(self) -> tuple[str, float, float]:
        return self.texts[0]

    def to_json(self) -> dict:
        return {"model": self.model, "layer": self.layer, "unit": self.unit,
                "texts": [{"text": t, "score": round(s, 6), "objective": round(o, 6)} for t, s, o in self.texts]}


@functools.lru_cache(maxsize=1)
def _bpe():
    """CLIP's BPE, the vocabulary a CLIP's tokenizer (and so :func:`encode_texts`) encodes with."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


@functools.lru_cache(maxsize=1)
def _word_tokens() -> tuple[Tensor, tuple[str, ...]]:
    """Ids [V] of the BPE's whole alphabetic words and the words, ascending by id.

    Only tokens whose word encodes back to exactly that token: the shown text is then the text the climb
    scored. This leaves out upper-case entries (CLIP's tokenizer lowercases, so it never produces
    them) and byte-level entries whose ``str`` form is not the text they stand for.
    """
    bpe = _bpe()
    pairs = sorted((i, token[:-4]) for token, i in bpe.encoder.items()
                   if token.endswith("</w>") and _encodes_to_itself(bpe, token))
    return torch.tensor([i for i, _ in pairs]), tuple(word for _, word in pairs)


def _encodes_to_itself(bpe, token: str) -> bool:
    """Whether ``bpe.encode(word) == [bpe.encoder[token]]`` for ``token = word + "</w>"``, cheaply.

    A non-ASCII token's ``str`` is its bytes in the BPE's byte alphabet, not the text it stands for, and
    ``encode`` lowercases; for a lower-case ASCII word ``encode`` reduces to one regex match (letters only)
    and ``bpe.bpe(word)``, which is this token exactly when the merges reach it (33 k words: 0.1 s, not 5).
    """
    word = token[:-4]
    return word.isascii() and word.isalpha() and word.islower() and bpe.bpe(word) == token


@functools.lru_cache(maxsize=1)
def _log10_frequencies() -> Tensor:
    """log10 of each word token's English frequency in wordfreq, floored: [V]."""
    from wordfreq import word_frequency

    return torch.tensor([max(word_frequency(word, "en"), FREQUENCY_FLOOR) for word in _word_tokens()[1]]).log10()


def require_clip_bpe(model: LoadedModel) -> None:
    """Refuse a model whose text tower does not read CLIP's BPE: the climb's tokens would mean other words."""
    tokenizer = model.spec.text_tokenizer
    if not tokenizer.is_clip_bpe:
        raise NeuronscopeError(
            f"textvis climbs over CLIP's BPE tokens, but {model.key}'s text tower reads {tokenizer.label}; "
            f"use attribute --out ATLAS (scores a vocabulary through the model's own tokenizer) instead")


class _TokenSpace:
    """The tokens a climb may use (whole alphabetic words), their embeddings and prior terms."""

    def __init__(self, model: LoadedModel, prior_weight: float) -> None:
        require_clip_bpe(model)
        bpe = _bpe()
        self.sot, self.eot = bpe.sot_token_id, bpe.eot_token_id
        self.ids, self.words = _word_tokens()  # [V], V words
        self.context_length = model.context_length
        embedding = getattr(model.module, "token_embedding", None)
        # [V, d] on the CPU, where the proposal gradients are read (the model may sit on a GPU)
        self.embeddings = embedding.weight.detach()[self.ids].float().cpu() if embedding is not None else None
        # [V] log10 frequency; zeros when the prior is off (no wordfreq lookups)
        self.log_prior = _log10_frequencies() if prior_weight else torch.zeros(len(self.ids))

    def token_rows(self, choices: Tensor) -> Tensor:
        """Token ids [K, context] for rows of vocabulary positions [K, L]: <sot> tokens <eot> padding."""
        rows = torch.zeros(len(choices), self.context_length, dtype=torch.long)
        rows[:, 0] = self.sot
        rows[:, 1:choices.shape[1] + 1] = self.ids[choices]
        rows[:, choices.shape[1] + 1] = self.eot
        return rows

    def text(self, choice: Tensor) -> str:
        return " ".join(self.words[int(c)] for c in choice)


@contextmanager
def _requires_grad(parameter: torch.nn.Parameter) -> Iterator[None]:
    """Let one frozen parameter carry a gradient for the duration of the block."""
    before = parameter.requires_grad
    parameter.requires_grad_(True)
    try:
        yield
    finally:
        parameter.requires_grad_(before)


def unit_score(basis: AttributionBasis, text_features: Tensor, unit: int) -> Tensor:
    """Attribution of texts [P, D] (L2-normalised) to one unit: [P], differentiable."""
    return basis.scores(text_features, [unit])[:, 0]


def _encode(model: LoadedModel, tokens: Tensor) -> Tensor:
    with model.precision.autocast(model.device):
        features = model.module.encode_text(tokens.to(model.device))
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu()


def _objective(model: LoadedModel, basis: AttributionBasis, space: _TokenSpace, choices: Tensor, unit: int,
               prior_weight: float) -> tuple[Tensor, Tensor]:
    """``(scores [K], objectives [K])`` of candidate rows [K, L]."""
    with torch.no_grad():
        scores = unit_score(basis, _encode(model, space.token_rows(choices)), unit)
    return scores, scores + prior_weight * space.log_prior[choices].sum(dim=1)


def _proposals(model: LoadedModel, basis: AttributionBasis, space: _TokenSpace, current: Tensor, unit: int,
               settings: TextVisSettings, generator: torch.Generator) -> Tensor:
    """Candidate rows [L * candidates, L]: ``current`` with one position changed."""
    length, k = len(current), min(settings.candidates, len(space.ids))
    positional = getattr(model.module, "positional_embedding", None)
    if positional is not None and space.embeddings is not None:
        with _requires_grad(positional), torch.enable_grad():
            score = unit_score(basis, _encode(model, space.token_rows(current[None])), unit)
            (grad,) = torch.autograd.grad(score.sum(), positional)
        grad = grad[1:length + 1].float().cpu()  # [L, d]: the content positions (after <sot>)
        gains = grad @ space.embeddings.T - (grad * space.embeddings[current]).sum(-1, keepdim=True)  # [L, V]
        gains = gains + settings.prior_weight * space.log_prior
        gains[torch.arange(length), current] = -float("inf")  # propose changes only
        picks = gains.topk(k, dim=1).indices  # [L, k]
    else:
        picks = torch.randint(len(space.ids), (length, k), generator=generator)
    rows = current.repeat(length * k, 1)  # [L*k, L]
    for position in range(length):
        rows[position * k:(position + 1) * k, position] = picks[position]
    return rows


@runs_in_eval
def optimize_text(model: LoadedModel, basis: AttributionBasis, unit: int,
                  settings: TextVisSettings | None = None) -> TextVisResult:
    """Hill-climb short texts that maximize ``unit``'s text-side weight (see the module docstring).

    Args:
        basis: the layer's attribution basis (:func:`~neuronscope.probing.attribution.compute_basis`).
        unit: the unit index in ``basis.layer``.

    Returns:
        A :class:`TextVisResult` with the best distinct texts found.
    """
    require_loaded(model, "optimize_text")
    settings = settings or TextVisSettings()
    space = _TokenSpace(model, settings.prior_weight)
    generator = torch.Generator().manual_seed(settings.seed)
    seen: dict[str, tuple[float, float]] = {}

    def remember(rows: Tensor, scores: Tensor, objectives: Tensor) -> None:
        for row, score, objective in zip(rows, scores.tolist(), objectives.tolist()):
            seen.setdefault(space.text(row), (score, objective))

    for length in settings.lengths:
        if length + 2 > space.context_length:
            raise ValueError(f"{length} tokens do not fit the text tower's context of {space.context_length}")
        for _ in range(settings.restarts):
            current = torch.randint(len(space.ids), (length,), generator=generator)
            scores, objectives = _objective(model, basis, space, current[None], unit, settings.prior_weight)
            remember(current[None], scores, objectives)
            best = float(objectives[0])
            for _ in range(settings.steps):
                rows = _proposals(model, basis, space, current, unit, settings, generator)
                scores, objectives = _objective(model, basis, space, rows, unit, settings.prior_weight)
                remember(rows, scores, objectives)
                top = int(objectives.argmax())
                if float(objectives[top]) <= best:
                    break  # a local optimum: no single-token change helps
                best, current = float(objectives[top]), rows[top]
    ranked = sorted(seen.items(), key=lambda item: -item[1][1])[:settings.keep]
    return TextVisResult(basis.model, basis.layer, int(unit), [(t, s, o) for t, (s, o) in ranked], len(seen))
