"""How multimodal a unit is: does it answer one concept both seen and read?

The paper's multimodal neurons fire for a concept however it is shown: a photo,
a drawing, the written word. The measure here is the one the mini CLIP's card
uses, for any labelled images and any layer: a unit's concept is the one with
its highest mean response among the images; its score is the weaker of two
AUROCs for that concept against all other concepts, one among the images and
one among the concept names rendered as words. The unit is multimodal at a
threshold when the score reaches it and the words' top concept is the same.

AUROC, not mean response, because a unit that fires a little for everything is
not selective; the weaker of the two, because a unit that only sees (or only
reads) the concept is not multimodal.

The concept is chosen and scored on the same images, so where a concept has
few images, units that answer nothing in particular can pass by chance. The control
says how often: the same measurement with the images' concept labels deranged
(the words keep theirs), as the card's ``shuffled`` control; the chosen concept
passes through the same selection, so the control counts exactly what chance
gives this source.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..atlas.multimodality import DEFAULT_THRESHOLD, NO_CONCEPT, multimodality_record
from ..units import parse_unit
from .selectivity import auroc_per_class

#: Seeds of the label-shuffle control (three, as the card's).
CONTROL_SEEDS = (0, 1, 2)
#: The memory the AUROCs' ranks may take at once: units are scored in blocks that fit it (:func:`units_per_block`).
RANK_MEMORY = 1 << 30
#: Bytes a sample and unit take while ranked (sorts, group ids and ranks in float64: about 20 times the
#: float32 response).
RANK_BYTES = 100


@dataclass(frozen=True)
class ConceptResponses:
    """A layer's unit responses to labelled images and to the concepts' names rendered as words.

    Attributes:
        images: [N_images, U] one response a unit per image (the spatial mean).
        image_labels: [N_images] concept index of each image.
        words: [N_words, U] one response a unit per rendered word.
        word_labels: [N_words] concept index of each rendered word.
        concepts: the concept names, indexed by the labels.
    """

    images: torch.Tensor
    image_labels: torch.Tensor
    words: torch.Tensor
    word_labels: torch.Tensor
    concepts: tuple[str, ...]


@dataclass(frozen=True)
class Multimodality:
    """Per unit of one layer: its concept and how selective it is for it among images and among words.

    Attributes:
        layer: the layer's canonical name.
        concepts: the concept names.
        concept: [U] index of the concept with the unit's highest mean response among the images
            (:data:`NO_CONCEPT` for a unit whose mean is the same for every concept: a dead or constant unit).
        word_concept: [U] the same among the rendered words.
        auroc_images: [U] AUROC of ``concept`` against all other concepts among the images (0.5 without one).
        auroc_words: [U] AUROC of ``concept`` (the images' one) among the words.
        images_per_concept, words_per_concept: how many samples each concept had.
        shuffled: the same measurement with the images' labels deranged, one per control seed
            (:meth:`chance`); empty when not computed.
    """

    layer: str
    concepts: tuple[str, ...]
    concept: torch.Tensor
    word_concept: torch.Tensor
    auroc_images: torch.Tensor
    auroc_words: torch.Tensor
    images_per_concept: tuple[int, ...] = ()
    words_per_concept: tuple[int, ...] = ()
    shuffled: tuple["Multimodality", ...] = ()

    @property
    def score(self) -> torch.Tensor:
        """[U] the weaker of the two AUROCs: the unit's multimodality score, in [0, 1] (0.5 = chance)."""
        return torch.minimum(self.auroc_images, self.auroc_words)

    @property
    def agrees(self) -> torch.Tensor:
        """[U] bool: the words' top concept is the images' one."""
        return self.concept == self.word_concept

    def is_multimodal(self, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
        """[U] bool: both AUROCs reach ``threshold`` and images and words agree on the concept."""
        return self.agrees & (self.concept != NO_CONCEPT) & (self.score >= threshold)

    def chance(self, threshold: float = DEFAULT_THRESHOLD) -> dict[str, list[int]]:
        """What the label-shuffle control passes at ``threshold``: ``{"units": [...], "concepts": [...]}``, one
        count per seed (empty lists when the control was not computed)."""
        return {"units": [int(s.is_multimodal(threshold).sum()) for s in self.shuffled],
                "concepts": [s.concepts_with_units(threshold) for s in self.shuffled]}

    def unit(self, unit: Any, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
        """One unit's record, the one an atlas gives (:func:`~neuronscope.atlas.multimodality.multimodality_record`,
        AUROCs to 4 decimals) with its ``"unit"``."""
        u = parse_unit(unit)
        if not 0 <= u < len(self.concept):
            raise IndexError(f"unit {u} is outside {self.layer} (units 0-{len(self.concept) - 1})")
        record = multimodality_record(self.concepts, int(self.concept[u]), int(self.word_concept[u]),
                                      round(float(self.auroc_images[u]), 4), round(float(self.auroc_words[u]), 4),
                                      threshold)
        return {"unit": u, **record}

    def units(self, threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
        """The multimodal units at ``threshold`` (:meth:`unit` records), highest score first."""
        passing = self.is_multimodal(threshold).nonzero().flatten().tolist()
        return sorted((self.unit(u, threshold) for u in passing), key=lambda record: (-record["score"], record["unit"]))

    def best_units(self, threshold: float = DEFAULT_THRESHOLD) -> list[dict[str, Any]]:
        """One multimodal unit per concept that has one (the highest score), in concept order."""
        best: dict[str, dict[str, Any]] = {}
        for record in self.units(threshold):
            best.setdefault(record["concept"], record)
        return [best[c] for c in self.concepts if c in best]

    def concepts_with_units(self, threshold: float = DEFAULT_THRESHOLD) -> int:
        """How many concepts have at least one multimodal unit at ``threshold``."""
        return int(self.concept[self.is_multimodal(threshold)].unique().numel())

    def with_control(self, responses: "ConceptResponses", seeds: tuple[int, ...] = CONTROL_SEEDS) -> "Multimodality":
        """This measurement with its label-shuffle control computed from the ``responses`` it came from."""
        shuffled = tuple(multimodality(deranged(responses, seed), self.layer, control=()) for seed in seeds)
        return dataclasses.replace(self, shuffled=shuffled)

    def to_dict(self, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
        """JSON-able, as an atlas stores it (:meth:`~neuronscope.atlas.Atlas.write_multimodality`); ``threshold``
        is the one its readers flag units ``multimodal`` at, and ``chance`` the control's counts at it (the
        control's own scores are not kept). A unit without a concept has index -1."""
        return {"layer": self.layer, "concepts": list(self.concepts), "threshold": threshold,
                "concept": self.concept.tolist(), "word_concept": self.word_concept.tolist(),
                "auroc_images": [round(v, 4) for v in self.auroc_images.tolist()],
                "auroc_words": [round(v, 4) for v in self.auroc_words.tolist()],
                "images_per_concept": list(self.images_per_concept), "words_per_concept": list(self.words_per_concept),
                "chance": self.chance(threshold)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Multimodality":
        """The inverse of :meth:`to_dict` (AUROCs to its 4 decimals; without the control's scores)."""
        return cls(data["layer"], tuple(data["concepts"]), torch.tensor(data["concept"], dtype=torch.long),
                   torch.tensor(data["word_concept"], dtype=torch.long),
                   torch.tensor(data["auroc_images"], dtype=torch.float32),
                   torch.tensor(data["auroc_words"], dtype=torch.float32),
                   tuple(data.get("images_per_concept", ())), tuple(data.get("words_per_concept", ())))

    def __repr__(self) -> str:
        chance = f", chance {self.chance()['units']}" if self.shuffled else ""
        return (f"Multimodality({self.layer!r}, {len(self.concept)} units, {len(self.concepts)} concepts, "
                f"{int(self.is_multimodal().sum())} multimodal at {DEFAULT_THRESHOLD}{chance})")


def class_means(values: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Mean of ``values`` [N, U] per class -> [n_classes, U] (-inf for a class without samples)."""
    sums = torch.zeros(n_classes, values.shape[1], dtype=values.dtype).index_add_(0, labels, values)
    counts = torch.bincount(labels, minlength=n_classes).unsqueeze(1).to(values.dtype)
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.tensor(float("-inf"), dtype=values.dtype))


def multimodality(responses: ConceptResponses, layer: str = "", *,
                  control: tuple[int, ...] = CONTROL_SEEDS) -> Multimodality:
    """Score every unit of ``responses`` (see the module's docstring for the criterion), with the label-shuffle
    control for each seed of ``control`` (``()``: none)."""
    n_concepts = len(responses.concepts)
    images, words = responses.images.float(), responses.words.float()
    if images.shape[1] != words.shape[1]:
        raise ValueError(f"image responses have {images.shape[1]} units but word responses {words.shape[1]}")
    concept = _top_concept(class_means(images, responses.image_labels, n_concepts))  # [U]
    word_concept = _top_concept(class_means(words, responses.word_labels, n_concepts))  # [U]
    auroc_images, auroc_words = torch.full((images.shape[1],), 0.5), torch.full((images.shape[1],), 0.5)
    step = units_per_block(max(len(images), len(words)))
    for start in range(0, images.shape[1], step):  # [C, block] at a time: the ranks are [N, block] float64
        block = slice(start, start + step)
        chosen = concept[block].clamp(min=0)
        columns = torch.arange(len(chosen))
        auroc_images[block] = auroc_per_class(images[:, block], responses.image_labels, n_concepts)[chosen, columns]
        auroc_words[block] = auroc_per_class(words[:, block], responses.word_labels, n_concepts)[chosen, columns]
    # A concept without words (or images) gives NaN: no evidence is no selectivity; nor has a unit without a concept.
    auroc_images = torch.where(concept == NO_CONCEPT, 0.5, auroc_images.nan_to_num(0.5))
    auroc_words = torch.where(concept == NO_CONCEPT, 0.5, auroc_words.nan_to_num(0.5))
    result = Multimodality(layer, tuple(responses.concepts), concept, word_concept, auroc_images, auroc_words,
                           _counts(responses.image_labels, n_concepts), _counts(responses.word_labels, n_concepts))
    return result.with_control(responses, control) if control else result


def units_per_block(samples: int, memory: int = RANK_MEMORY) -> int:
    """How many units' AUROCs to compute at once over ``samples`` responses, so that their ranks fit ``memory``
    bytes (at least one unit: a million images take 100 MB a unit)."""
    return max(1, memory // (max(samples, 1) * RANK_BYTES))


def _top_concept(means: torch.Tensor) -> torch.Tensor:
    """[U] the concept of each unit's highest mean ``means`` [C, U] (concepts without samples at -inf), or
    :data:`NO_CONCEPT` where every concept's mean is the same (a dead or constant unit answers none)."""
    top = means.argmax(dim=0)
    present = means[torch.isfinite(means[:, 0])] if len(means) else means
    alike = (present == present.max(dim=0).values).all(dim=0)
    return torch.where(alike, NO_CONCEPT, top)


def _counts(labels: torch.Tensor, n_concepts: int) -> tuple[int, ...]:
    return tuple(torch.bincount(labels, minlength=n_concepts).tolist())


def derangement(n: int, seed: int) -> torch.Tensor:
    """A seeded permutation of ``range(n)`` with no fixed point."""
    rng = np.random.default_rng(seed)
    while True:
        permutation = rng.permutation(n)
        if not (permutation == np.arange(n)).any():
            return torch.from_numpy(permutation)


def deranged(responses: ConceptResponses, seed: int) -> ConceptResponses:
    """The same responses with the images' concept labels deranged (the words keep theirs)."""
    permutation = derangement(len(responses.concepts), seed)
    return dataclasses.replace(responses, image_labels=permutation[responses.image_labels])


def concept_labels(names: Sequence[str], concepts: Sequence[str]) -> torch.Tensor:
    """[N] index in ``concepts`` of each of ``names`` (every name must be a concept)."""
    position = {c: i for i, c in enumerate(concepts)}
    return torch.tensor([position[name] for name in names], dtype=torch.long)
