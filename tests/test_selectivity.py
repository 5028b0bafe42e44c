"""AUROC per class with tied ranks, and the multimodal criterion on synthetic responses."""

from __future__ import annotations

import torch

from neuronscope.analysis import auroc_per_class, average_ranks
from neuronscope.analysis.multimodality import ConceptResponses, deranged, derangement, multimodality


def _brute_force_auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    pos, neg = scores[positive], scores[~positive]
    wins = (pos[:, None] > neg[None, :]).float() + 0.5 * (pos[:, None] == neg[None, :]).float()
    return float(wins.mean())


def test_average_ranks_share_ties() -> None:
    values = torch.tensor([[3.0], [1.0], [3.0], [0.0]])
    assert average_ranks(values).flatten().tolist() == [3.5, 2.0, 3.5, 1.0]


def test_auroc_matches_pairwise_definition_with_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    responses = torch.randint(0, 4, (60, 5), generator=generator).float()  # many ties
    labels = torch.randint(0, 3, (60,), generator=generator)
    auroc = auroc_per_class(responses, labels, 3)
    for c in range(3):
        for u in range(5):
            assert abs(float(auroc[c, u]) - _brute_force_auroc(responses[:, u], labels == c)) < 1e-6


def test_constant_unit_is_never_selective() -> None:
    responses = torch.zeros(20, 1)
    labels = torch.arange(20) % 4
    assert torch.allclose(auroc_per_class(responses, labels, 4), torch.full((4, 1), 0.5))


def _responses(n_concepts: int = 4, per_concept: int = 6) -> ConceptResponses:
    """Unit 0 answers concept 2 in both drawings and words; unit 1 only to drawings of concept 1."""
    labels = torch.arange(n_concepts).repeat_interleave(per_concept)
    generator = torch.Generator().manual_seed(1)
    drawings = torch.rand(len(labels), 3, generator=generator) * 0.1
    words = torch.rand(len(labels), 3, generator=generator) * 0.1
    drawings[labels == 2, 0] += 1.0
    words[labels == 2, 0] += 1.0
    drawings[labels == 1, 1] += 1.0
    return ConceptResponses(drawings, labels, words, labels.clone(), tuple(map(str, range(n_concepts))))


def test_multimodal_criterion_needs_both_modalities_and_the_same_top_concept() -> None:
    units = multimodality(_responses(), control=()).units(0.9)
    assert [(u["unit"], u["concept"]) for u in units] == [(0, "2")]
    assert units[0]["auroc_images"] == 1.0 and units[0]["auroc_words"] == 1.0


def test_deranged_labels_break_the_criterion() -> None:
    responses = _responses()
    permutation = derangement(4, seed=0)
    assert not (permutation == torch.arange(4)).any()
    assert multimodality(responses, control=()).concepts_with_units(0.9) == 1
    assert multimodality(deranged(responses, seed=0), control=()).concepts_with_units(0.9) == 0
