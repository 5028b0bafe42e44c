"""Zero-shot classification with a CLIP: class names → prompts → text embeddings.

The classifier is the cosine similarity between an image embedding and each
class's prompt embedding, softmaxed at the model's logit scale, as in CLIP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..models.loaded import LoadedModel, require_loaded, runs_in_eval

DEFAULT_TEMPLATE = "a photo of a {}."


def text_list(texts: str | Sequence[str]) -> list[str]:
    """``texts`` as a list; a single string is one text (iterating it would give its characters)."""
    return [texts] if isinstance(texts, str) else list(texts)


def tokenize(model: LoadedModel, texts: list[str]) -> torch.Tensor:
    """Token ids [N, context_length] for the model's text tower, by its own tokenizer (:attr:`LoadedModel.tokenizer`).

    CLIP's BPE for CLIPs; the Hugging Face tokenizer a SigLIP, xlm-roberta or
    mt5 tower was trained with (from the local cache, else a one-line error).
    """
    return model.tokenizer(texts).to(model.device)


@runs_in_eval
@torch.no_grad()
def encode_texts(model: LoadedModel, texts: str | Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """L2-normalised text embeddings [N, D], in fp32 (a single string is one text: [1, D])."""
    require_loaded(model, "encode_texts")
    texts = text_list(texts)
    chunks = []
    for start in range(0, len(texts), batch_size):
        with model.precision.autocast(model.device):
            features = model.module.encode_text(tokenize(model, texts[start:start + batch_size]))
        chunks.append(torch.nn.functional.normalize(features.float(), dim=-1))
    return torch.cat(chunks)


@runs_in_eval
@torch.no_grad()
def encode_pixels(model: LoadedModel, pixels: torch.Tensor, batch_size: int = 256, *,
                  normalize: bool = True) -> torch.Tensor:
    """Image embeddings [N, D] of ``pixels`` [N, 3, H, W] in [0, 1] (fp32 out), L2-normalised unless
    ``normalize=False`` (attribution needs their norms: its retrieval weights take the raw embeddings)."""
    require_loaded(model, "encode_pixels")
    chunks = []
    for start in range(0, len(pixels), batch_size):
        inputs = model.preprocess.normalize(pixels[start:start + batch_size].to(model.device))
        features = model.encode_images(inputs).float()
        chunks.append(torch.nn.functional.normalize(features, dim=-1) if normalize else features)
    return torch.cat(chunks)


def logit_scale(model: LoadedModel) -> float:
    """The model's learned temperature ``exp(logit_scale)`` (CLIP's 100 when the model has none)."""
    scale = getattr(model.module, "logit_scale", None)
    return float(scale.exp()) if scale is not None else 100.0


@dataclass
class ZeroShotClassifier:
    """Zero-shot weights of a set of classes.

    Attributes:
        classes: class names, echoed verbatim in results.
        template: prompt with ``{}`` for the class name.
        text_features: [C, D] L2-normalised prompt embeddings.
        logit_scale: the model's temperature (exp of its learned log scale).
    """

    model: LoadedModel
    classes: list[str]
    template: str
    text_features: torch.Tensor
    logit_scale: float

    @classmethod
    def build(cls, model: LoadedModel, classes: str | Sequence[str],
              template: str = DEFAULT_TEMPLATE) -> "ZeroShotClassifier":
        """The classifier of ``classes`` (a single string is one class) with prompts ``template.format(name)``."""
        require_loaded(model, "ZeroShotClassifier.build")
        classes = text_list(classes)
        if not classes:
            raise ValueError("no classes given: give at least one class name")
        if "{}" not in template:
            raise ValueError(f"template {template!r} has no '{{}}' for the class name")
        features = encode_texts(model, [template.format(name) for name in classes])
        return cls(model, classes, template, features, logit_scale(model))

    def __repr__(self) -> str:  # the default one prints the whole model and the features
        return f"ZeroShotClassifier({self.model.key}, {len(self.classes)} classes, template {self.template!r})"

    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, C] for ``pixels`` [N, 3, H, W] in [0, 1], on the CPU (a result, compared
        with labels there, whatever device the model runs on)."""
        return self.probabilities_of(encode_pixels(self.model, pixels))

    def probabilities_of(self, image_features: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, C], on the CPU, for images already encoded: :func:`encode_pixels`' [N, D]."""
        logits = self.logit_scale * image_features.to(self.text_features) @ self.text_features.T
        return logits.softmax(dim=-1).cpu()

    def predict(self, pixels: torch.Tensor) -> torch.Tensor:
        """Top-1 class index [N], on the CPU."""
        return self.probabilities(pixels).argmax(dim=-1)

    def top(self, pixels: torch.Tensor, k: int = 5) -> list[list[dict]]:
        """Per image, the ``k`` best classes as ``[{"class", "prob"}]``, best first."""
        probabilities = self.probabilities(pixels)
        values, indices = probabilities.topk(min(k, len(self.classes)), dim=-1)
        return [[{"class": self.classes[int(i)], "prob": round(float(p), 6)} for p, i in zip(row_p, row_i)]
                for row_p, row_i in zip(values, indices)]
