"""Tiny CLIPs for tests: the real open_clip classes at a few M parameters, 64 px.

They build in milliseconds and never download anything; their weights are
random by design (``tiny-rn`` and ``tiny-vit`` default to ``random``). The text
tower keeps CLIP's tokenizer (vocab 49408, context 77) so text code runs on them.
"""

from __future__ import annotations

from typing import Any

_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}

# ModifiedResNet with two blocks in the last stages, so "last block" logic is exercised:
# 64 px -> stem /4 -> 16, layer2 8, layer3 4, layer4 2x2 (the attention pool's grid).
TINY_RN: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 2, 2, 2], "width": 16, "patch_size": None},
    "text_cfg": _TEXT,
    "quick_gelu": False,
}

# ViT with 16 px patches: 4x4 grid + 1 class token = 17 tokens of width 64.
TINY_VIT: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "mlp_ratio": 4.0, "patch_size": 16},
    "text_cfg": _TEXT,
    "quick_gelu": False,
}
