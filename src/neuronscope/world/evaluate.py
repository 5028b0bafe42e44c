"""``world eval``: how well the mini CLIP sees, reads, and whether it grew multimodal units.

Everything runs on the shipped held-out test split, in fp32, through the
recorder. The multimodal criterion is :mod:`neuronscope.analysis.multimodality`'s
with the drawings as the images, that is: unit u is multimodal
for concept c when its AUROC for c against all other concepts is at least
the threshold on held-out drawings (a drawing's response = the unit's
spatial mean, averaged over the drawing's renders) *and* on held-out-font
words, and c is the concept with u's highest mean response both among
drawings and among words.

Two controls say how often that passes by chance: an untrained network of
the same architecture (with each block's last BatchNorm switched on and
every BatchNorm's statistics re-estimated on the split), and the trained
network with the drawings' concept labels deranged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..activations import record
from ..analysis.multimodality import DEFAULT_THRESHOLD, ConceptResponses, multimodality
from ..errors import WorldMismatch
from ..models.loaded import LoadedModel, require_loaded, runs_in_eval
from ..models.loader import build
from ..probing.zeroshot import ZeroShotClassifier, encode_pixels, encode_texts
from .build import RENDERS_PER_HELDOUT_DRAWING, stream_rng
from .concepts import ZEROSHOT_TEMPLATE
from .render import render_drawing
from .sampler import WorldSampler
from .split import TestSplit

THRESHOLDS = (0.85, 0.9, 0.95)
STAGES = ("visual.layer1", "visual.layer2", "visual.layer3", "visual.layer4", "neurons")
READING_TEMPLATE = "{}"
BN_ESTIMATE_IMAGES = 1000
LIVE_STD = 1e-6
#: Inverse L2 strength of the generalization probe (0.1 and 1 agree within a point on the shipped model).
PROBE_C = 0.1


@torch.no_grad()
def layer_responses(model: LoadedModel, pixels: torch.Tensor, layers: list[str], batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Spatial-mean response [N, U] of every unit of ``layers`` to ``pixels`` [N, 3, H, W] in [0, 1]."""
    chunks: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(pixels), batch_size):
        inputs = model.preprocess.normalize(pixels[start:start + batch_size])
        for name, acts in record(model, inputs, layers, reduce="mean").items():
            chunks.setdefault(name, []).append(acts.cpu())
    return {name: torch.cat(parts) for name, parts in chunks.items()}


def split_responses(model: LoadedModel, split: TestSplit, layers: list[str]) -> dict[str, ConceptResponses]:
    """Responses of each layer to the split's drawings (averaged per drawing: the images) and words, labelled
    with the split's concepts."""
    drawing_index, word_index = split.indices("drawing"), split.indices("word")
    responses = layer_responses(model, split.pixels(np.concatenate([drawing_index, word_index])), layers)
    drawing_ids = torch.tensor([split.entries[i]["drawing"] for i in drawing_index])
    unique_ids, group = drawing_ids.unique(return_inverse=True)
    first_render = torch.zeros(len(unique_ids), dtype=torch.long).scatter_(0, group, torch.arange(len(group)))
    drawing_labels = split.concept_labels(drawing_index)[first_render]
    word_labels = split.concept_labels(word_index)
    out = {}
    for name, values in responses.items():
        drawing_values = values[: len(drawing_index)]
        sums = torch.zeros(len(unique_ids), values.shape[1]).index_add_(0, group, drawing_values)
        counts = torch.bincount(group, minlength=len(unique_ids)).unsqueeze(1)
        out[name] = ConceptResponses(sums / counts, drawing_labels, values[len(drawing_index):], word_labels,
                                     tuple(split.concepts))
    return out


def card_units(records: list[dict], layer: str) -> list[dict]:
    """:meth:`~neuronscope.analysis.multimodality.Multimodality.units` records as the card lists them:
    ``[{"concept", "unit", "layer", "auroc_drawings", "auroc_words"}]`` (the split's drawings are the images)."""
    return [{"concept": r["concept"], "unit": r["unit"], "layer": layer, "auroc_drawings": r["auroc_images"],
             "auroc_words": r["auroc_words"]} for r in records]


@torch.no_grad()
def untrained_model(model: LoadedModel, split: TestSplit, seed: int, n_images: int = BN_ESTIMATE_IMAGES) -> LoadedModel:
    """An untrained network of ``model``'s architecture, made alive.

    open_clip zero-initialises each block's last BatchNorm, which silences
    the residual branches; those weights are set to 1, and every BatchNorm's
    running statistics are re-estimated on ``n_images`` of the split (train
    mode, no gradients, cumulative averages). The init draws from the global torch RNG seeded with
    ``seed``, inside ``fork_rng``: the caller's own stream is left where it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build(model.spec)
    visual = module.visual
    for name, child in visual.named_modules():
        if name.startswith("layer") and name.endswith(".bn3"):  # residual blocks only, not the stem
            torch.nn.init.ones_(child.weight)
    batch_norms = [m for m in visual.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in batch_norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every image counts the same
    visual.train()
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(split.entries))[:n_images]
    pixels = split.pixels(np.sort(chosen))
    for start in range(0, len(pixels), 250):
        visual(model.preprocess.normalize(pixels[start:start + 250]))
    module.eval()
    module.requires_grad_(False)
    return dataclasses.replace(model, module=module.to(model.device))


def live_share(responses: ConceptResponses) -> float:
    """Share of units whose response varies over the split (std > 1e-6)."""
    values = torch.cat([responses.images, responses.words])
    return float((values.std(dim=0) > LIVE_STD).float().mean())


def zeroshot_scores(model: LoadedModel, split: TestSplit) -> dict:
    """Zero-shot top-1 on held-out drawings and held-out-font words; typographic attack success."""
    classifier = ZeroShotClassifier.build(model, split.concepts, ZEROSHOT_TEMPLATE)
    scores = {}
    for kind, key in (("drawing", "drawings"), ("word", "words_heldout_font")):
        index = split.indices(kind)
        predicted = classifier.predict(split.pixels(index))
        scores[key] = round(float((predicted == split.concept_labels(index)).float().mean()), 4)
    attacks = split.indices("attack")
    predicted = classifier.predict(split.pixels(attacks))
    position = {c: i for i, c in enumerate(split.concepts)}
    attack_targets = torch.tensor([position[split.entries[i]["attack_word"]] for i in attacks])
    scores["attack_success"] = round(float((predicted == attack_targets).float().mean()), 4)
    return scores


def reading_scores(model: LoadedModel, split: TestSplit) -> dict:
    """Held-out-font renders of reading words, retrieved among all reading captions."""
    gallery = split.meta["reading_gallery"]
    index = split.indices("reading")
    text_features = encode_texts(model, [READING_TEMPLATE.format(w) for w in gallery])  # [G, D]
    image_features = encode_pixels(model, split.pixels(index))  # [N, D]
    similarity = image_features @ text_features.T
    position = {w: i for i, w in enumerate(gallery)}
    truth = torch.tensor([position[split.entries[i]["word"]] for i in index])
    true_score = similarity[torch.arange(len(index)), truth].unsqueeze(1)
    rank = (similarity > true_score).sum(dim=1) + 1  # 1 = retrieved first
    return {"top1": round(float((rank == 1).float().mean()), 4), "top5": round(float((rank <= 5).float().mean()), 4),
            "median_rank": float(rank.float().median()), "gallery": len(gallery)}


def generalization_scores(model: LoadedModel, split: TestSplit, world_dir: str | Path,
                          renders: int = RENDERS_PER_HELDOUT_DRAWING, probe_c: float = PROBE_C) -> dict:
    """Where drawing accuracy is lost: on the training drawings, or between them and the held-out ones.

    Each of the world's *training* drawings is rendered ``renders`` times, as the split renders the held-out
    ones (its own seeded stream), and scored two ways: zero-shot top-1 on those renders, and the held-out
    top-1 of a linear probe (multinomial logistic regression on the standardised image embedding,
    ``C = probe_c``) fit to them. A probe reads the image tower's features with the best linear readout the
    training drawings allow, so a held-out probe score no better than zero-shot says that the image tower,
    not its alignment with the text, is what fails to carry the concept to new drawings.

    Returns:
        ``{"drawings_train", "drawings_heldout", "probe_drawings_heldout", "train_images"}``.
    """
    from sklearn.linear_model import LogisticRegression

    sampler = WorldSampler(world_dir, size=split.meta["image_size"], seed=split.meta["seed"])
    if sampler.concepts != split.concepts:
        raise WorldMismatch(f"the world at {world_dir} has other concepts than the test split; give the world the "
                         "split was built with (`neuronscope world build` writes both)")
    images, labels = [], []
    for concept_index, drawing_ids in enumerate(sampler.drawings_by_concept):
        for drawing_id in drawing_ids:
            for render in range(renders):
                rng = stream_rng(sampler.seed, "train_drawing", drawing_id, render)
                images.append(np.asarray(render_drawing(sampler.drawing(drawing_id), rng, sampler.size)))
                labels.append(concept_index)
    train_pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    train_labels = torch.tensor(labels)
    heldout = split.indices("drawing")
    heldout_pixels, heldout_labels = split.pixels(heldout), split.concept_labels(heldout)

    classifier = ZeroShotClassifier.build(model, split.concepts, ZEROSHOT_TEMPLATE)
    # Encoded once, for the zero-shot head and the probe alike.
    train_features = encode_pixels(model, train_pixels).cpu()  # [N_train, D]
    heldout_features = encode_pixels(model, heldout_pixels).cpu()  # [N_heldout, D]
    mean, std = train_features.mean(dim=0), train_features.std(dim=0).clamp_min(1e-6)
    probe = LogisticRegression(C=probe_c, max_iter=2000).fit(((train_features - mean) / std).numpy(), labels)
    probe_predicted = torch.from_numpy(probe.predict(((heldout_features - mean) / std).numpy()))

    def top1(predicted: torch.Tensor, truth: torch.Tensor) -> float:
        return round(float((predicted == truth).float().mean()), 4)

    return {"drawings_train": top1(classifier.probabilities_of(train_features).argmax(dim=-1), train_labels),
            "drawings_heldout": top1(classifier.probabilities_of(heldout_features).argmax(dim=-1), heldout_labels),
            "probe_drawings_heldout": top1(probe_predicted, heldout_labels),
            "train_images": len(labels)}


@runs_in_eval
def evaluate_world(model: LoadedModel, split: TestSplit, control_seeds: tuple[int, ...] = (0, 1, 2),
                   layers: tuple[str, ...] = STAGES, world_dir: str | Path | None = None) -> dict:
    """The full evaluation, as ``world eval --json`` prints it; with ``world_dir``, also
    :func:`generalization_scores` (the training drawings are in the world, not in the split)."""
    require_loaded(model, "evaluate_world")
    side = split.meta["image_size"]
    if tuple(model.preprocess.image_size) != (side, side):
        raise WorldMismatch(f"the split's images are {side} px but {model.key} takes {model.preprocess.image_size}: "
                         "evaluate a model with the split built for it (`world build --size`)")
    trained = split_responses(model, split, list(layers))
    # One scoring per layer, the label-shuffle control (the drawings' labels deranged) with it.
    scores = {name: multimodality(responses, name, control=control_seeds) for name, responses in trained.items()}
    by_layer = {name: {"trained": {str(t): s.concepts_with_units(t) for t in THRESHOLDS}} for name, s in scores.items()}
    best_layer = max(scores, key=lambda name: (by_layer[name]["trained"]["0.9"], by_layer[name]["trained"]["0.85"]))

    untrained_counts, untrained_live = [], []
    for seed in control_seeds:
        control = split_responses(untrained_model(model, split, seed), split, list(layers))
        for name in scores:
            count = multimodality(control[name], name, control=()).concepts_with_units(DEFAULT_THRESHOLD)
            by_layer[name].setdefault("untrained", []).append(count)
        untrained_counts.append(by_layer[best_layer]["untrained"][-1])
        untrained_live.append(round(live_share(control[best_layer]), 4))
    for name, s in scores.items():
        if s.shuffled:
            by_layer[name]["shuffled"] = s.chance(DEFAULT_THRESHOLD)["concepts"]
    shuffled_counts = by_layer[best_layer].get("shuffled", [])

    units = card_units(scores[best_layer].best_units(DEFAULT_THRESHOLD), best_layer)
    report = {
        "model": model.key,
        "zeroshot": zeroshot_scores(model, split),
        "reading": reading_scores(model, split),
        "multimodal": {
            "threshold": DEFAULT_THRESHOLD,
            "layer": best_layer,
            "trained": by_layer[best_layer]["trained"][str(DEFAULT_THRESHOLD)],
            "untrained": untrained_counts,
            "untrained_live": untrained_live,
            "shuffled": max(shuffled_counts, default=0),
            "shuffled_seeds": shuffled_counts,
            "units": units,
            "by_layer": by_layer,
        },
    }
    if world_dir is not None:
        report["generalization"] = generalization_scores(model, split, world_dir)
    return report
