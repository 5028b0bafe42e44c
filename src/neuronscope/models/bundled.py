"""The bundled mini CLIP: a config folder shipped inside the package.

Contract of the folder (``src/neuronscope/data/mini_clip/``):

- ``config.json``: ``{"model_cfg": {...open_clip CLIP kwargs: embed_dim,
  vision_cfg, text_cfg, quick_gelu}, "preprocess": {"image_size": 64,
  "mean": [...], "std": [...], "interpolation": "bicubic"}}``
- ``weights.safetensors``: the fp16 state dict of ``open_clip.model.CLIP(**model_cfg)``
- ``test_split.tar``: the held-out split (read by the demo and the tests)
- ``mini_clip_card.json``: its card, the output of ``world eval --json`` for these weights

The same layout works for any folder passed with ``--weights DIR``. Tests and
developers point ``NEURONSCOPE_MINI_CLIP_DIR`` at another folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuronscope.errors import BundledModelMissing, WeightsError
from neuronscope.models.preprocess import Preprocess

DIR_ENV = "NEURONSCOPE_MINI_CLIP_DIR"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
TEST_SPLIT_FILE = "test_split.tar"
CARD_FILE = "mini_clip_card.json"


def bundled_dir() -> Path:
    """Where the mini CLIP's files are: ``$NEURONSCOPE_MINI_CLIP_DIR`` or the package's data folder."""
    override = os.environ.get(DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parent.parent / "data" / "mini_clip"


def load_card() -> dict[str, Any]:
    """The bundled mini CLIP's card (``card["multimodal"]["units"]`` are its multimodal units)."""
    path = bundled_dir() / CARD_FILE
    if not path.is_file():
        raise BundledModelMissing(f"the mini CLIP's card {path} is missing; reinstall neuronscope, or rebuild it "
                                  f"with `neuronscope world eval --json > {path}`")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class ConfigDir:
    """A model folder: the open_clip kwargs, its preprocessing and its weights file."""

    directory: Path
    model_cfg: dict[str, Any]
    preprocess: Preprocess

    @property
    def weights_path(self) -> Path:
        return self.directory / WEIGHTS_FILE


def is_config_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def read_config_dir(directory: str | os.PathLike) -> ConfigDir:
    """Read ``config.json`` of a model folder (see the module docstring)."""
    directory = Path(directory)
    try:
        config = json.loads((directory / CONFIG_FILE).read_text())
        model_cfg, preprocess = config["model_cfg"], Preprocess.from_dict(config["preprocess"])
    except FileNotFoundError:
        raise WeightsError(f"{directory} has no {CONFIG_FILE}") from None
    except (KeyError, ValueError, TypeError) as err:
        raise WeightsError(f"{directory / CONFIG_FILE} is not a model config ({err}); "
                           f"it needs 'model_cfg' and 'preprocess'") from err
    return ConfigDir(directory=directory, model_cfg=model_cfg, preprocess=preprocess)


def bundled_config() -> ConfigDir:
    """The mini CLIP's config; a clear error when this checkout does not ship it yet."""
    directory = bundled_dir()
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / name).is_file()]
    if missing:
        raise BundledModelMissing(
            f"the bundled mini CLIP is not in this installation ({', '.join(missing)} missing in {directory}). "
            f"Train it with `make train`, point {DIR_ENV} at a folder that has it, "
            f"or use another model (e.g. --model tiny-rn --weights random)"
        )
    return read_config_dir(directory)
