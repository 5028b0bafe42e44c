"""ModelSpec: one architecture with one set of weights, and the contract they carry."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping

from neuronscope.models.preprocess import Preprocess

Activation = Literal["quick_gelu", "gelu"]
Source = Literal["open_clip", "config", "hf-hub", "file", "module"]

RANDOM = "random"
BUNDLED = "bundled"

CLIP_BPE_VOCAB = 49408
"""The vocabulary size of CLIP's BPE (open_clip's ``SimpleTokenizer``)."""
DEFAULT_CONTEXT_LENGTH = 77
"""open_clip's tokens per text when ``text_cfg`` names none (its text towers' default too)."""


@dataclass(frozen=True)
class TokenizerSpec:
    """The tokenizer a model's text tower was trained with: open_clip's choice for it.

    open_clip decides from the model config's ``text_cfg``: a Hugging Face
    tokenizer when ``hf_tokenizer_name`` is set (SigLIP, xlm-roberta, mt5
    towers), else CLIP's BPE (``SimpleTokenizer``). Reading a text tower with
    another tokenizer's ids runs without an error and means nothing.

    Attributes:
        hf_name: the Hugging Face tokenizer: a hub id, or an open_clip folder
            holding its files; ``""`` for CLIP's BPE.
        context_length: tokens per text: ``text_cfg``'s, else open_clip's 77
            (None when there is no ``text_cfg``: the module's own).
        open_clip_name: a registry name ``open_clip.get_tokenizer`` resolves
            itself; ``""`` when the tokenizer is built from these fields.
        mode: ``text_cfg``'s ``tokenizer_mode`` (Hugging Face tokenizers only).
        kwargs: ``text_cfg``'s ``tokenizer_kwargs`` (e.g. SigLIP's ``clean``).
        unknown: why no tokenizer can be named (``""`` when one can), e.g. a
            bare ``nn.Module`` whose vocabulary is not CLIP's.
    """

    hf_name: str = ""
    context_length: int | None = None
    open_clip_name: str = ""
    mode: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    unknown: str = ""

    @classmethod
    def from_text_cfg(cls, text_cfg: Mapping[str, Any], hf_source: str | None = None,
                      open_clip_name: str = "") -> "TokenizerSpec":
        """open_clip's choice for an open_clip ``text_cfg``.

        ``hf_source`` replaces ``hf_tokenizer_name`` as where the Hugging Face
        tokenizer is read from (open_clip reads a local folder's own files).
        """
        hf_name = text_cfg.get("hf_tokenizer_name") or ""
        return cls(hf_name=(hf_source or hf_name) if hf_name else "",
                   context_length=text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH), open_clip_name=open_clip_name,
                   mode=text_cfg.get("tokenizer_mode"), kwargs=dict(text_cfg.get("tokenizer_kwargs") or {}))

    @property
    def is_clip_bpe(self) -> bool:
        """Whether the tokenizer is CLIP's BPE (open_clip's ``SimpleTokenizer``)."""
        return not self.hf_name and not self.unknown

    @property
    def label(self) -> str:
        """``CLIP BPE``, ``hf:NAME`` or ``unknown``, for summaries."""
        return "unknown" if self.unknown else f"hf:{self.hf_name}" if self.hf_name else "CLIP BPE"


def _registry_tokenizer(name: str) -> TokenizerSpec:
    """open_clip's choice for a registry architecture, from its config's ``text_cfg``."""
    from neuronscope.models import openclip

    text_cfg = (openclip.model_config(name) or {}).get("text_cfg", {})
    spec = TokenizerSpec.from_text_cfg(text_cfg, open_clip_name=name)
    if not spec.hf_name and "siglip" in name.lower():
        # open_clip.get_tokenizer would fetch a SigLIP sentencepiece vocabulary from the network.
        return replace(spec, unknown="its config names no tokenizer and open_clip would download SigLIP's "
                                     "vocabulary for it; add hf_tokenizer_name to its text_cfg")
    return spec


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a model and feed it, short of the weights' bytes.

    Attributes:
        name: the architecture's name: ``RN50x4``, ``tiny-rn``, ``mini-clip``,
            ``hf-hub:org/repo``, or a user's name for their own module.
        weights: what fills it: a registry tag (``openai``), ``bundled``,
            ``random``, or ``sha256:<12 hex>`` for a local file or module.
        preprocess: the input contract the weights were trained with.
        activation: the transformer MLP activation the weights expect (``None``: an ``nn.Module`` that runs
            neither ``gelu`` nor ``quick_gelu``).
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
        tokenizer: the text tower's tokenizer when the loader knows it from
            the weights' own config (folders, hf-hub repos, archives,
            modules); None: open_clip's choice for ``name`` (``open_clip``
            source) or for ``model_cfg``'s ``text_cfg``. Read it as
            :attr:`text_tokenizer`.
    """

    name: str
    weights: str
    preprocess: Preprocess
    activation: Activation | None = "gelu"
    source: Source = "open_clip"
    model_cfg: Mapping[str, Any] | None = field(default=None, compare=False)
    image_tower: str = "visual"
    layer_aliases: Mapping[str, str] = field(default_factory=dict, compare=False)
    description: str = ""
    probe_layers: tuple[str, ...] = field(default=(), compare=False)
    tokenizer: TokenizerSpec | None = field(default=None, compare=False)

    @property
    def key(self) -> str:
        """``name@weights``, the model's identity in atlases, URLs and JSON."""
        return f"{self.name}@{self.weights}"

    @property
    def quick_gelu(self) -> bool:
        return self.activation == "quick_gelu"

    @property
    def text_tokenizer(self) -> TokenizerSpec:
        """The tokenizer the text tower reads (see :class:`TokenizerSpec`)."""
        if self.tokenizer is not None:
            return self.tokenizer
        if self.source == "open_clip":
            return _registry_tokenizer(self.name)
        if self.model_cfg is not None:
            return TokenizerSpec.from_text_cfg(self.model_cfg.get("text_cfg") or {})
        return TokenizerSpec()

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
            "tokenizer": self.text_tokenizer.label,
        }
