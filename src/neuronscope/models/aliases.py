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
- every timm transformer trunk (SigLIP's and EVA02's ViTs, Swin; a timm model whose blocks carry ``attn`` and
  ``mlp``): ``neurons`` = the hidden units of the last block's MLP, as for open_clip's ViTs: ``mlp.act`` of a
  GELU MLP; for a gated MLP (EVA02's SwiGLU, where ``act`` is only the gate's SiLU) the gated product,
  ``mlp.norm:input`` (EVA02 normalises it with a LayerNorm before ``fc2``, so ``fc2:input`` is not the
  product; where ``norm`` is an Identity the two are the same).
- every timm ``ConvNeXt``: ``neurons`` = the last block of the last stage, ``stages.S.blocks.B``. A ConvNeXt
  block ends with its residual sum and no activation after it, so its output is the point the ResNet alias
  reads (the pre-ReLU sum of the last block).

Other towers (MobileCLIP's FastViT, ...) have no ``neurons``; :func:`neurons_candidate` names a layer to try.
"""

from __future__ import annotations

import re

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


def _transformer_blocks(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(path, block)`` of the blocks in ``module`` that hold both an ``attn`` and an ``mlp`` (timm's ViT, EVA
    and Swin blocks, open_clip's residual attention blocks), in registration order."""
    return [(path, child) for path, child in module.named_modules()
            if all(isinstance(getattr(child, part, None), nn.Module) for part in ("attn", "mlp"))]


def transformer_block_paths(module: nn.Module) -> list[str]:
    """Dot paths of the transformer blocks in ``module`` (pass an image tower: a text tower has them too), in
    registration order: blocks that hold both an ``attn`` and an ``mlp``."""
    return [path for path, _ in _transformer_blocks(module)]


def _is_timm_model(module: nn.Module) -> bool:
    """A timm image model (its blocks are not): every one has ``forward_features`` and ``forward_head``."""
    return callable(getattr(module, "forward_features", None)) and callable(getattr(module, "forward_head", None))


def _mlp_hidden(mlp: nn.Module) -> str | None:
    """Where a timm MLP's hidden units are, relative to the MLP: ``act`` (fc1 -> act -> fc2), or for a gated MLP
    (SwiGLU's ``fc1_g``/``fc1_x``, GluMlp's chunked ``fc1``) the product, ``norm:input``; None for others."""
    gated = hasattr(mlp, "fc1_g") or hasattr(mlp, "chunk_dim")
    if gated and isinstance(getattr(mlp, "norm", None), nn.Module):
        return "norm:input"
    if not gated and isinstance(getattr(mlp, "act", None), nn.Module):
        return "act"
    return None


def timm_aliases(path: str, trunk: nn.Module) -> dict[str, str]:
    """Aliases of one timm image model found at dot path ``path``: ``neurons`` for transformer trunks and
    ConvNeXt (module docstring), none for the others."""
    from timm.models.convnext import ConvNeXt

    prefix = _prefix(path)
    if isinstance(trunk, ConvNeXt):
        stage = len(trunk.stages) - 1
        return {"neurons": f"{prefix}stages.{stage}.blocks.{len(trunk.stages[stage].blocks) - 1}"}
    blocks = _transformer_blocks(trunk)
    if not blocks:
        return {}
    block_path, block = blocks[-1]
    hidden = _mlp_hidden(block.mlp)
    return {"neurons": f"{prefix}{block_path}.mlp.{hidden}"} if hidden else {}


def neurons_candidate(module: nn.Module) -> str | None:
    """A layer to suggest where the model has no ``neurons`` alias: the image tower's (``visual``) last block
    (a module at ``...blocks.N``, ``...layers.N`` or ``...stages.N``), or None when it has none."""
    visual = getattr(module, "visual", None)
    tower, prefix = (visual, "visual.") if isinstance(visual, nn.Module) else (module, "")
    blocks = [path for path, _ in tower.named_modules() if re.search(r"(^|\.)(blocks|resblocks)\.\d+$", path)]
    blocks = blocks or [path for path, _ in tower.named_modules() if re.search(r"(^|\.)(layers|stages)\.\d+$", path)]
    return f"{prefix}{blocks[-1]}" if blocks else None


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
        elif _is_timm_model(child):
            found = timm_aliases(path, child)
        else:
            continue
        ambiguous |= found.keys() & aliases.keys()
        aliases.update(found)
    return {alias: layer for alias, layer in aliases.items() if alias not in ambiguous}


def model_family(module: nn.Module) -> str:
    """``conv`` (ResNets and other conv nets), ``vit`` or ``other``: picks precision defaults (bf16 autocast and
    channels_last for conv nets, bf16 weights for ViTs on a CPU) and the default facet-probe layers.

    A timm trunk made of transformer blocks (SigLIP's and EVA02's ViTs, Swin) is a ViT although its patch
    embedding is a Conv2d; a timm trunk without them (ConvNeXt, MobileCLIP's FastViT) is a conv net.
    """
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    for child in module.modules():
        if isinstance(child, ModifiedResNet):
            return "conv"
        if isinstance(child, VisionTransformer):
            return "vit"
        if _is_timm_model(child) and _transformer_blocks(child):
            return "vit"
    if any(isinstance(child, nn.Conv2d) for child in module.modules()):
        return "conv"
    return "other"
