"""The mini CLIP's training recipe: everything that, with the world and the seed, determines the weights.

Plain dataclasses (no torch), so ``neuronscope world train --help`` shows the defaults without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import WorldMismatch

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Mix:
    """Shares of each kind of training image (they need not sum to 1)."""

    drawing: float = 0.3
    word: float = 0.2
    composite: float = 0.2
    reading: float = 0.3

    def probabilities(self) -> np.ndarray:
        shares = np.array([self.drawing, self.word, self.composite, self.reading], dtype=float)
        return shares / shares.sum()


@dataclass
class TrainConfig:
    """Everything that determines the trained weights (with the world and the seed)."""

    image_size: int = 64
    vision_width: int = 16
    vision_layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    embed_dim: int = 128
    text_width: int = 128
    text_heads: int = 4
    text_layers: int = 2
    context_length: int = 16
    steps: int = 4500
    batch_size: int = 256
    lr: float = 1.5e-3
    weight_decay: float = 0.1
    warmup_steps: int = 250
    seed: int = 0
    mix: Mix = field(default_factory=Mix)
    augment: bool = False  # mirror, stretch and tilt training drawings (render.augment_drawing)
    precision: str = "fp32"  # "bf16" uses autocast; slower than fp32 on CPUs without native bf16
    checkpoint_seconds: float = 180.0

    def __post_init__(self) -> None:
        # Only bf16 switches autocast on: any other value would train fp32 while config.json recorded it.
        if self.precision not in PRECISIONS:
            raise WorldMismatch(f"--precision {self.precision}: the trainer takes {' or '.join(PRECISIONS)}")

    def model_cfg(self) -> dict:
        """Keyword arguments of ``open_clip.model.CLIP`` for this architecture."""
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {"image_size": self.image_size, "layers": list(self.vision_layers),
                           "width": self.vision_width, "head_width": 32},
            "text_cfg": {"context_length": self.context_length, "vocab_size": 49408, "width": self.text_width,
                         "heads": self.text_heads, "layers": self.text_layers},
            "quick_gelu": False,
        }

    def preprocess(self) -> dict:
        """The model folder's preprocessing: CLIP's own normalisation constants, bicubic."""
        from ..models.preprocess import OPENAI_MEAN, OPENAI_STD

        return {"image_size": self.image_size, "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                "interpolation": "bicubic"}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        data["mix"] = Mix(**data.get("mix", {}))
        data["vision_layers"] = tuple(data.get("vision_layers", (2, 2, 2, 2)))
        return cls(**data)
