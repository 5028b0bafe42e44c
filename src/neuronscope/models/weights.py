"""Weights on disk: reading checkpoint files and loading them into a module.

Three formats are read: an open_clip (or any torch) state dict saved with
``torch.save`` (``.pt``/``.pth``/``.bin``), ``.safetensors``, and OpenAI's
original TorchScript archives (``RN50x4.pt`` from openaipublic).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from neuronscope.errors import WeightsError, WeightsMismatch

# Entries of OpenAI's TorchScript state dict that are attributes, not weights.
_OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


def looks_like_path(text: str) -> bool:
    """True for text a user means as a file: it has a slash or a weights suffix.

    Existence is not enough: a stray file named ``openai`` must not shadow the tag.
    """
    return os.sep in text or "/" in text or text.lower().endswith(WEIGHT_SUFFIXES)


def sha256_state_dict(module: nn.Module) -> str:
    """Hex sha256 over a module's state dict (names, dtypes, shapes, bytes), in key order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        # uint8 view: bf16 (and other dtypes numpy lacks) hash byte-for-byte too.
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def is_torchscript(path: str | os.PathLike) -> bool:
    """A TorchScript archive is a zip with a ``code/`` folder and ``constants.pkl``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict stored in ``path``, on the CPU, whatever of the three formats it is."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist (pass an existing file with --weights PATH)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif is_torchscript(path):
            with warnings.catch_warnings():
                # torch deprecates TorchScript, but OpenAI's archives are TorchScript: no other reader.
                warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=FutureWarning)
                archive = torch.jit.load(str(path), map_location="cpu")
            state = dict(archive.state_dict())
            # A traced archive also stores non-persistent buffers (the text attention
            # mask); open_clip rebuilds those, so they are not weights.
            state = {key: value for key, value in state.items() if not key.endswith("attn_mask")}
        else:
            # weights_only: a checkpoint is data; never run code from a pickle.
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure is "not a checkpoint we can read"
        raise _unreadable(path, err) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # training checkpoints wrap the weights
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{str(path)!r} holds no state dict (found {type(state).__name__})")
    return state


def _unreadable(path: Path, err: Exception) -> WeightsError:
    """One line for a checkpoint no reader takes; torch's own message runs to six, with colour codes."""
    if isinstance(err, pickle.UnpicklingError) and zipfile.is_zipfile(path):
        # A torch.save zip whose pickle holds classes, not just tensors: weights_only refuses it.
        return WeightsError(f"{path} holds a pickled object (a whole model?), not a state dict: "
                            f"save model.state_dict(), or use .safetensors")
    if isinstance(err, pickle.UnpicklingError):
        # torch's own first line advises weights_only=False: unsafe, and no help for a file that is no checkpoint.
        detail = "not a state dict saved with torch.save"
    else:
        lines = _ANSI_CODES.sub("", str(err)).strip().splitlines()
        detail = lines[0] if lines else type(err).__name__
    return WeightsError(f"cannot read weights from {str(path)!r} ({detail}); expected an open_clip state dict "
                        f"(.pt/.bin), .safetensors, or an OpenAI TorchScript .pt")


def normalize_state_dict(state: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Undo the usual wrappers: DDP's ``module.`` prefix, OpenAI's extras, scalar logit_scale."""
    if all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    state = {key: value for key, value in state.items() if key not in _OPENAI_EXTRAS}
    own = module.state_dict()
    for key in ("logit_scale", "logit_bias"):
        if key in state and key in own and state[key].shape != own[key].shape:
            state[key] = state[key].reshape(own[key].shape)
    return state


def load_into(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module`` strictly; on mismatch say which keys and what to try.

    ``load_state_dict`` copies into the existing fp32 parameters, so fp16
    checkpoints (OpenAI's, the mini CLIP's) come out fp32.
    """
    state = normalize_state_dict(state, module)
    own = module.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    mismatched = [key for key in own if key in state and tuple(state[key].shape) != tuple(own[key].shape)]
    if missing or unexpected or mismatched:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if mismatched:
            key = mismatched[0]
            details.append(f"{len(mismatched)} of another shape (e.g. {key}: {tuple(state[key].shape)} in the file, "
                           f"{tuple(own[key].shape)} in the model)")
        raise WeightsMismatch(what, "; ".join(details))
    module.load_state_dict(state, strict=True)
