"""Layer aliases that follow from a model's structure.

One rule per architecture family, not one table per model:

- every open_clip ``ModifiedResNet`` (RN50, RN50x4, ..., the mini CLIP):
  ``image_block_S/I/Add_6`` (Lucid/Microscope's name) = the residual sum
  before the final ReLU of block I of stage S, i.e. ``layerS.I.act3:input``;
  ``image_block_S/I/Relu_2`` = that block's output; ``neurons`` = the
  ``Add_6`` of the last block of ``layer4``, the layer the paper studied
  (RN50x4: ``visual.layer4.5.act3:input``, 2560 x 9 x 9).
- every open_clip ``VisionTransformer``: ``neurons`` = the MLP activation of
  the last block, ``transformer.resblocks.N.mlp.gelu``.
"""

from __future__ import annotations

from torch import nn


def _prefix(path: str) -> str:
    return f"{path}." if path else ""


def resnet_aliases(path: str, resnet: nn.Module) -> dict[str, str]:
    """Aliases of one ModifiedResNet found at dot path ``path``."""
    prefix = _prefix(path)
    aliases: dict[str, str] = {}
    for stage in (1, 2, 3, 4):
        blocks = getattr(resnet, f"layer{stage}", None)
        if blocks is None:
            continue
        for index, _ in enumerate(blocks):
            block = f"{prefix}layer{stage}.{index}"
            aliases[f"image_block_{stage}/{index}/Add_6"] = f"{block}.act3:input"
            aliases[f"image_block_{stage}/{index}/Relu_2"] = block
    last_stage = getattr(resnet, "layer4", None)
    if last_stage is not None and len(last_stage):
        aliases["neurons"] = f"{prefix}layer4.{len(last_stage) - 1}.act3:input"
    return aliases


def vit_aliases(path: str, vit: nn.Module) -> dict[str, str]:
    """Aliases of one open_clip VisionTransformer found at dot path ``path``."""
    blocks = vit.transformer.resblocks
    return {"neurons": f"{_prefix(path)}transformer.resblocks.{len(blocks) - 1}.mlp.gelu"}


def structural_aliases(module: nn.Module) -> dict[str, str]:
    """``{alias: canonical layer}`` for the image towers found inside ``module``.

    In a model with several image towers an alias that two towers would claim (``neurons``, and the
    per-block names when two towers are ResNets) is left out rather than given to the last tower found:
    it would be ambiguous, and the canonical names tell the towers apart.
    """
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    aliases: dict[str, str] = {}
    ambiguous: set[str] = set()
    for path, child in module.named_modules():
        if isinstance(child, ModifiedResNet):
            found = resnet_aliases(path, child)
        elif isinstance(child, VisionTransformer):
            found = vit_aliases(path, child)
        else:
            continue
        ambiguous |= found.keys() & aliases.keys()
        aliases.update(found)
    return {alias: layer for alias, layer in aliases.items() if alias not in ambiguous}


def model_family(module: nn.Module) -> str:
    """``conv`` (ResNets and other conv nets), ``vit`` or ``other``: picks precision defaults."""
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    for child in module.modules():
        if isinstance(child, ModifiedResNet):
            return "conv"
        if isinstance(child, VisionTransformer):
            return "vit"
    if any(isinstance(child, nn.Conv2d) for child in module.modules()):
        return "conv"
    return "other"
