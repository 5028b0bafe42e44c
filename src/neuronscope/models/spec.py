"""ModelSpec: one architecture with one set of weights, and the contract they carry."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping

from neuronscope.models.preprocess import Preprocess

Activation = Literal["quick_gelu", "gelu"]
Source = Literal["open_clip", "config", "hf-hub", "file", "module"]

RANDOM = "random"
BUNDLED = "bundled"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a model and feed it, short of the weights' bytes.

    Attributes:
        name: the architecture's name: ``RN50x4``, ``tiny-rn``, ``mini-clip``,
            ``hf-hub:org/repo``, or a user's name for their own module.
        weights: what fills it: a registry tag (``openai``), ``bundled``,
            ``random``, or ``sha256:<12 hex>`` for a local file or module.
        preprocess: the input contract the weights were trained with.
        activation: the transformer MLP activation the weights expect.
            OpenAI's weights need ``quick_gelu``; building them with ``gelu``
            silently degrades every ViT (and every text tower).
        source: how the architecture is built: an open_clip config name,
            an open_clip CLIP-kwargs dict (``config``), a Hugging Face repo
            (``hf-hub``), inferred from an OpenAI checkpoint (``file``), or a
            ready ``module``.
        model_cfg: the open_clip ``CLIP(**model_cfg)`` kwargs for ``config``.
        image_tower: dot path of the image encoder inside the module
            (``""`` when the whole module is the image model).
        layer_aliases: extra layer aliases for this model, on top of the
            structural ones every ModifiedResNet / ViT gets.
        probe_layers: the layers faceted feature visualization trains its
            facet probes on (names or wildcards, e.g. RN50x4's
            ``visual.layer3.{0,2,4,6,8}``, post-ReLU block outputs). Empty: a
            structural default (see :mod:`neuronscope.visualize.facets`).
    """

    name: str
    weights: str
    preprocess: Preprocess
    activation: Activation = "gelu"
    source: Source = "open_clip"
    model_cfg: Mapping[str, Any] | None = field(default=None, compare=False)
    image_tower: str = "visual"
    layer_aliases: Mapping[str, str] = field(default_factory=dict, compare=False)
    description: str = ""
    probe_layers: tuple[str, ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        """``name@weights``, the model's identity in atlases, URLs and JSON."""
        return f"{self.name}@{self.weights}"

    @property
    def quick_gelu(self) -> bool:
        return self.activation == "quick_gelu"

    def with_weights(self, weights: str, **changes: Any) -> "ModelSpec":
        """The same architecture with other weights (and optionally other fields)."""
        return replace(self, weights=weights, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: key, contract and source."""
        return {
            "model": self.key,
            "name": self.name,
            "weights": self.weights,
            "preprocess": self.preprocess.to_dict(),
            "activation": self.activation,
            "source": self.source,
            "image_tower": self.image_tower,
        }
