"""LoadedModel: a model ready to run, with the contract its weights carry."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, ParamSpec, TypeVar

import torch
from PIL import Image
from torch import nn

from neuronscope.errors import ModelNotLoadedError, NeuronscopeError
from neuronscope.models.aliases import model_family, structural_aliases
from neuronscope.models.preprocess import Preprocess
from neuronscope.models.spec import DEFAULT_CONTEXT_LENGTH, ModelSpec, TokenizerSpec
from neuronscope.imagefiles import file_sha256
from neuronscope.runtime import Precision

if TYPE_CHECKING:  # activations imports this module
    from neuronscope.activations.geometry import LayerGeometry

Tokenizer = Callable[[list[str]], torch.Tensor]
"""An open_clip tokenizer: texts -> token ids [N, context_length]."""


@dataclass
class LoadedModel:
    """A model ready to run, with the contract its weights carry.

    Attributes:
        module: the whole model (for CLIPs both towers), in eval mode, frozen
            (``requires_grad=False``; gradients still flow to inputs).
        spec: architecture, weights and preprocessing contract.
        device: where ``module`` lives.
        precision: how forwards run (see :mod:`neuronscope.runtime`).
        weights_path: the file the weights came from, if any.
    """

    module: nn.Module
    spec: ModelSpec
    device: torch.device
    precision: Precision
    weights_path: Path | None = None
    _state_sha256: str | None = field(default=None, repr=False)
    #: weights_identity()'s hash once computed; init=False: a dataclasses.replace (another module) starts anew.
    _identity: str | None = field(default=None, init=False, repr=False, compare=False)
    #: :meth:`geometry`'s answers, ``{canonical layer: LayerGeometry}``; init=False as ``_identity``.
    _geometries: dict[str, LayerGeometry] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        # The dataclass's own repr would print the whole nn.Module (163 lines for the mini CLIP).
        return f"LoadedModel({self.key}, {self.device}, {self.precision.name})"

    @property
    def key(self) -> str:
        """``name@weights``, e.g. ``RN50x4@openai`` or ``mini-clip@bundled``."""
        return self.spec.key

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def preprocess(self) -> Preprocess:
        return self.spec.preprocess

    @property
    def image_module(self) -> nn.Module:
        """The image encoder (``module.visual`` for CLIPs)."""
        return self.module.get_submodule(self.spec.image_tower) if self.spec.image_tower else self.module

    @cached_property
    def family(self) -> str:
        """``conv``, ``vit`` or ``other`` (see :func:`neuronscope.models.aliases.model_family`)."""
        return model_family(self.image_module)

    @cached_property
    def layer_aliases(self) -> dict[str, str]:
        """``{alias: canonical layer}``: structural aliases plus the spec's own."""
        return {**structural_aliases(self.module), **self.spec.layer_aliases}

    def resolve_layer(self, name: str) -> str:
        """``name`` (a layer, an alias such as ``neurons``, a ``:input`` point) as its canonical layer name."""
        from neuronscope.activations.names import resolve_layer  # activations imports this module

        return resolve_layer(self.module, name, self.layer_aliases, model_key=self.key)

    def aliases_of(self, layer: str) -> list[str]:
        """The aliases of a canonical ``layer`` (``neurons`` first), as an atlas registers them."""
        from neuronscope.activations.names import aliases_by_layer

        return aliases_by_layer(self.layer_aliases).get(layer, [])

    def geometry(self, layer: str) -> LayerGeometry:
        """Where a layer's (a name or alias) units lie: their number, grid, layout and prefix tokens.

        One forward of a grey image per layer (:func:`~neuronscope.activations.geometry.layer_geometry`), kept
        here: ``neuronscope visualize`` asks, then its run's writer, then the render, and each forward costs
        as much as a render step; a word probe or a multimodality measurement asks for its capture too.
        """
        canonical = self.resolve_layer(layer)
        if canonical not in self._geometries:
            from neuronscope.activations.geometry import layer_geometry  # activations imports this module

            (self._geometries[canonical],) = layer_geometry(self, [canonical]).values()
        return self._geometries[canonical]

    def layer_shape(self, layer: str) -> tuple[int, tuple[int, int]]:
        """Units and (rows, cols) of a layer (a name or alias): what unit arguments are checked against
        (:func:`~neuronscope.units.parse_units`, before any work starts) and the grid an atlas registers
        (:meth:`geometry`'s, kept)."""
        geometry = self.geometry(layer)
        return geometry.units, geometry.grid

    @cached_property
    def weights_sha256(self) -> str | None:
        """Full sha256 of the weights' file (or of the state dict for in-memory modules); None for random.

        The hash the loader computed for the key when there is one; a cached
        download is hashed here, on first use, since a run only needs it for provenance.
        """
        if self._state_sha256 is not None:
            return self._state_sha256
        if self.weights_path is not None and self.weights_path.is_file():
            return file_sha256(self.weights_path)
        return None

    def weights_identity(self) -> str:
        """The sha256 that tells these weights apart, random ones too (:attr:`weights_sha256`, else the state
        dict's: another ``--seed``'s init is other weights). What a resumable run keys itself by.

        Computed once per LoadedModel: hashing every tensor takes about a second for RN50 (ten for RN50x64), and
        one command asks several times (run config, basis key). Like :attr:`weights_sha256`, it goes stale if
        ``module``'s weights are changed in place afterwards (``load_state_dict``, an optimizer step): load the
        model again then. Nothing in neuronscope does so; ``world train`` trains its own module and
        ``world eval`` loads the exported weights as a new LoadedModel.
        """
        if self._identity is None:
            from neuronscope.models.weights import sha256_state_dict

            self._identity = self.weights_sha256 or sha256_state_dict(self.module)
        return self._identity

    @property
    def context_length(self) -> int:
        """Tokens per text: what open_clip tokenizes to for the config's ``text_cfg``, else the module's, else 77."""
        return (self.spec.text_tokenizer.context_length or getattr(self.module, "context_length", None)
                or DEFAULT_CONTEXT_LENGTH)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The text tower's tokenizer, open_clip's choice for it (see :class:`~neuronscope.models.spec.TokenizerSpec`).

        Built on first use, so image-side work never needs it. Never downloads:
        a Hugging Face tokenizer comes from the local cache, or this raises a
        one-line :class:`NeuronscopeError` saying what is missing.
        """
        return build_tokenizer(self.spec.text_tokenizer, self.context_length, self.key)

    @property
    def token_grid(self) -> tuple[int, int] | None:
        """(rows, cols) of a ViT's patch tokens (open_clip's own, or a timm trunk's); None for conv nets."""
        trunk_embed = getattr(getattr(self.image_module, "trunk", None), "patch_embed", None)
        grid = getattr(self.image_module, "grid_size", None) or getattr(trunk_embed, "grid_size", None)
        return tuple(grid) if grid is not None else None  # type: ignore[return-value]

    @property
    def prefix_tokens(self) -> int:
        """How many tokens come before a ViT's patch tokens in its blocks: a timm trunk's class and register
        tokens (``num_prefix_tokens``: 0 for SigLIP, 5 with a class token and 4 registers), else 1 (open_clip's
        own ViT, and plain modules, put one class token first); 0 for a conv tower, which has no tokens."""
        if not self._has_tokens:
            return 0
        return int(getattr(self._timm_trunk, "num_prefix_tokens", 1))

    @property
    def has_class_token(self) -> bool:
        """Whether a ViT's first token is a class token: False for a timm trunk built without one (SigLIP pools
        its patch tokens with attention), so a ``cls`` reduction would read a register or a patch, and for a
        conv tower (a ModifiedResNet), whose layers are maps: ``cls`` is refused before any forward."""
        return self._has_tokens and bool(getattr(self._timm_trunk, "has_class_token", True))

    @property
    def _has_tokens(self) -> bool:
        """Whether the image tower may work on tokens: not open_clip's ModifiedResNet, nor a timm trunk without
        ``num_prefix_tokens`` (a timm conv net); both work on maps. A plain module is read as a ViT, as above."""
        from open_clip.modified_resnet import ModifiedResNet  # here: open_clip's import costs seconds

        if self._timm_trunk is not None:
            return hasattr(self._timm_trunk, "num_prefix_tokens")
        return not isinstance(self.image_module, ModifiedResNet)

    @property
    def _timm_trunk(self) -> nn.Module | None:
        """The timm model open_clip wraps as the image tower's ``trunk``, if any."""
        return getattr(self.image_module, "trunk", None)

    def prepare_images(self, images: torch.Tensor | Image.Image | Iterable[Image.Image]) -> torch.Tensor:
        """PIL image(s) or an already normalised float tensor [B, 3, H, W] ([3, H, W]: one image) -> input on the
        model's device.

        Raises:
            TypeError: a tensor that is not floating point (uint8 pixels would run as if normalised), or
                items that are not PIL images (a list of tensors, a NumPy array).
            ValueError: a tensor that is not [B, 3, H, W] or [3, H, W] (channels last, one channel).
        """
        if isinstance(images, torch.Tensor):
            return _checked_pixels(images).to(self.device)
        if not isinstance(images, Image.Image):
            given = type(images).__name__
            images = list(images) if isinstance(images, Iterable) else [images]
            stray = next((item for item in images if not isinstance(item, Image.Image)), None)
            if stray is not None:
                items = f" of {type(stray).__name__}" if given in ("list", "tuple") else ""
                raise TypeError(f"images are PIL images or one tensor, not a {given}{items}; {_PIXELS_HINT}")
        return self.preprocess(images).to(self.device)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Run the image tower on normalised ``pixels`` [B, 3, H, W] in the model's precision.

        Returns the tower's output (for CLIPs the image embedding [B, D]; a tower that also returns its
        tokens, as CoCa's does, ``(embedding, tokens)``, gives its embedding).
        Gradient mode is the caller's: wrap in ``torch.no_grad()`` for inference.
        """
        pixels = self.precision.cast_input(pixels.to(self.device))
        with self.precision.autocast(self.device):
            output = self.image_module(pixels)
        return output[0] if isinstance(output, tuple) else output

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary of the model, its contract and how it runs."""
        return {**self.spec.to_dict(), "device": str(self.device), "precision": self.precision.name,
                "precision_reason": self.precision.reason}


@contextlib.contextmanager
def evaluating(model: LoadedModel | nn.Module) -> Iterator[None]:
    """Eval mode within the block; afterwards every submodule is back in the mode the caller left it in.

    Every forward neuronscope runs for the user goes through this: in train mode a BatchNorm normalises
    by the batch's own statistics (an image's activations would depend on which images share its batch)
    and overwrites its running statistics, and dropout draws noise. A freshly built open_clip model is in
    train mode. Modes are restored module by module, so a caller's mix (BatchNorms frozen in eval inside
    a training model) survives. Nesting is cheap: an inner block finds nothing to switch.
    """
    module = model.module if isinstance(model, LoadedModel) else model
    if not isinstance(module, nn.Module):  # a model's name, say: the entry point's own check says what to pass
        yield
        return
    training = [child for child in module.modules() if child.training]
    for child in training:
        child.training = False  # not .eval(): that recurses, and this list already holds every module
    try:
        yield
    finally:
        for child in training:
            child.training = True


_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")


def runs_in_eval(function: Callable[_Params, _Result]) -> Callable[_Params, _Result]:
    """Decorator for an entry point ``function(model, ...)`` that runs ``model`` for the user: the whole call
    runs under :func:`evaluating`, one switch for all its forwards. ``model`` may be passed by name too."""

    @functools.wraps(function)
    def in_eval(*args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
        with evaluating(args[0] if args else kwargs["model"]):
            return function(*args, **kwargs)

    return in_eval


def require_loaded(model: object, what: str) -> LoadedModel:
    """``model`` itself when it is a :class:`LoadedModel`, else a one-line error saying how to get one.

    The entry points that preprocess images, tokenise texts or pick a device read the contract a
    LoadedModel carries; a plain open_clip module would fail deep inside with an AttributeError
    (``record`` and ``Recorder`` take a plain module fed tensors and need no check).

    Raises:
        ModelNotLoadedError: ``model`` is a plain module, a name or anything else.
    """
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, nn.Module):
        raise ModelNotLoadedError(f"{what} needs a LoadedModel, not a plain {type(model).__name__} module: wrap it "
                                  f"with load_model(module), which reads the module's preprocessing")
    if isinstance(model, (str, os.PathLike)):
        raise ModelNotLoadedError(f"{what} needs a LoadedModel, not the name {os.fspath(model)!r}: load it with "
                                  f"load_model({os.fspath(model)!r})")
    raise ModelNotLoadedError(f"{what} needs a LoadedModel, not a {type(model).__name__}: make one with load_model")


_PIXELS_HINT = ("pass PIL images (resized and normalised by the model's contract), or "
                "model.preprocess.normalize(x) of a float tensor x [B, 3, H, W] in [0, 1]")


def _checked_pixels(images: torch.Tensor) -> torch.Tensor:
    """A model-input tensor as [B, 3, H, W], or a one-line error saying what to pass instead.

    A tensor is taken as already normalised: uint8 pixels or channels-last maps would
    otherwise run, and give wrong activations or fail deep inside the first conv.
    """
    if not images.is_floating_point():
        raise TypeError(f"images are a {images.dtype} tensor, taken as normalised model input; {_PIXELS_HINT}")
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"images are a tensor of shape {list(images.shape)}, not [B, 3, H, W] or [3, H, W] "
                         f"(channels first: x.permute(0, 3, 1, 2) for [B, H, W, 3]); {_PIXELS_HINT}")
    return images if images.ndim == 4 else images.unsqueeze(0)


# --------------------------------------------------------------------------- tokenizers


def build_tokenizer(spec: TokenizerSpec, context_length: int, model_key: str) -> Tokenizer:
    """The open_clip tokenizer ``spec`` names, for texts of ``context_length`` tokens.

    A Hugging Face tokenizer is read with ``local_files_only``: transformers
    would otherwise try the hub, retrying for tens of seconds on a machine
    without a network.
    """
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    if spec.unknown:
        raise NeuronscopeError(f"{model_key}: cannot tokenize text: {spec.unknown}")
    if not spec.hf_name:
        if spec.open_clip_name:
            return open_clip.get_tokenizer(spec.open_clip_name, context_length=context_length)
        return open_clip.SimpleTokenizer(context_length=context_length, **spec.kwargs)
    if importlib.util.find_spec("transformers") is None:
        raise NeuronscopeError(f"{model_key}: its text tower reads the Hugging Face tokenizer {spec.hf_name!r}, "
                               f"which needs the transformers package: pip install transformers sentencepiece")
    try:
        if spec.open_clip_name:
            return open_clip.get_tokenizer(spec.open_clip_name, context_length=context_length, local_files_only=True)
        return HFTokenizer(spec.hf_name, context_length=context_length, tokenizer_mode=spec.mode,
                           local_files_only=True, **spec.kwargs)
    except Exception as err:  # noqa: BLE001 - transformers' errors for a missing or partial tokenizer vary
        raise NeuronscopeError(_missing_hf_tokenizer(spec.hf_name, model_key, err)) from err


def _missing_hf_tokenizer(hf_name: str, model_key: str, err: Exception) -> str:
    """One line: which tokenizer could not be read, why, and how to get it (neuronscope never downloads it)."""
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    if os.path.isdir(hf_name):
        fix = f"put the tokenizer's files (tokenizer.json or its vocabulary) in {hf_name}"
    else:
        fix = f"fetch it once while online (hf download {hf_name}) and run again"
    return (f"{model_key}: its text tower reads the Hugging Face tokenizer {hf_name!r}, which could not be "
            f"loaded from the local cache ({reason}); {fix}")
