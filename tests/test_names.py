"""Layer names: canonical paths, :input ports, aliases, wildcards, suggestions."""

from __future__ import annotations

import pytest
import torch

from neuronscope.activations import LayerRef, resolve_layer, resolve_layers, split_layer_list
from neuronscope.errors import LayerNotFoundError
from neuronscope.models.aliases import structural_aliases
from tests.helpers import TimmClip, timm_trunks


def resolve(model, names):
    return resolve_layers(model.module, names, model.layer_aliases, model_key=model.key)


def test_canonical_names_and_ports(tiny_rn):
    assert resolve(tiny_rn, ["visual.layer4.1.act3", "visual.layer4.1.act3:input"]) == [
        "visual.layer4.1.act3", "visual.layer4.1.act3:input"]
    assert LayerRef.parse("visual.layer4.1.act3:input") == LayerRef("visual.layer4.1.act3", "input")
    assert str(LayerRef("visual", "input")) == "visual:input"


def test_aliases_for_modified_resnets(tiny_rn, rn50x4):
    assert resolve(tiny_rn, "neurons") == ["visual.layer4.1.act3:input"]
    assert resolve(rn50x4, "neurons") == resolve(rn50x4, "image_block_4/5/Add_6") == ["visual.layer4.5.act3:input"]
    assert resolve(rn50x4, "image_block_4~5~Add_6") == ["visual.layer4.5.act3:input"]  # URL form
    assert resolve(rn50x4, "image_block_3/7/Relu_2") == ["visual.layer3.7"]


def test_rn50_uses_its_last_block_too():
    import open_clip

    visual = open_clip.model.ModifiedResNet(layers=(3, 4, 6, 3), output_dim=1024, heads=32, image_size=224, width=64)
    aliases = structural_aliases(visual)
    assert aliases["image_block_4/2/Add_6"] == aliases["neurons"] == "layer4.2.act3:input"


def test_vit_neurons_is_the_last_mlp_activation(tiny_vit):
    assert resolve(tiny_vit, "neurons") == ["visual.transformer.resblocks.1.mlp.gelu"]


def test_wildcards(tiny_rn):
    assert resolve(tiny_rn, "visual.layer4.*") == ["visual.layer4.0", "visual.layer4.1"]
    assert resolve(tiny_rn, "visual.layer*.*.act3:input")[-1] == "visual.layer4.1.act3:input"
    deep = resolve(tiny_rn, "visual.layer4.**")
    assert "visual.layer4.0.downsample.0" in deep and "visual.layer4" not in deep
    assert resolve(tiny_rn, "visual.layer{2,3}.{0,1}") == [
        "visual.layer2.0", "visual.layer2.1", "visual.layer3.0", "visual.layer3.1"]
    assert resolve(tiny_rn, ["neurons", "visual.layer4.1.act3:input"]) == ["visual.layer4.1.act3:input"]


def test_wildcard_without_match_raises(tiny_rn):
    with pytest.raises(LayerNotFoundError, match="no layer in tiny-rn@random matches 'visual.layer9.*'"):
        resolve(tiny_rn, "visual.layer9.*")


def test_unknown_names_get_suggestions(tiny_rn):
    with pytest.raises(LayerNotFoundError, match=r"did you mean visual\.layer4\.1\.act3"):
        resolve(tiny_rn, "visual.layer4.1.act4")
    with pytest.raises(LayerNotFoundError, match="did you mean neurons"):
        resolve(tiny_rn, "neuron")
    with pytest.raises(LayerNotFoundError, match="neuronscope layers"):
        resolve(tiny_rn, "completely.different")


def test_resolve_layer_wants_exactly_one(tiny_rn):
    assert resolve_layer(tiny_rn.module, "neurons", tiny_rn.layer_aliases) == "visual.layer4.1.act3:input"
    with pytest.raises(LayerNotFoundError, match="matches 2 layers"):
        resolve_layer(tiny_rn.module, "visual.layer4.*", tiny_rn.layer_aliases)


def test_split_layer_list_keeps_braces():
    assert split_layer_list("neurons, visual.layer3.{0,2,4},visual.attnpool") == [
        "neurons", "visual.layer3.{0,2,4}", "visual.attnpool"]


def test_a_loaded_model_brings_its_module_aliases_and_key(tiny_rn):
    assert resolve_layers(tiny_rn, ["neurons", "visual.layer4.*"]) == resolve(tiny_rn, ["neurons", "visual.layer4.*"])
    assert resolve_layer(tiny_rn, "image_block_4/1/Add_6") == "visual.layer4.1.act3:input"
    with pytest.raises(LayerNotFoundError, match=f"unknown layer 'nuerons' in {tiny_rn.key}"):
        resolve_layers(tiny_rn, "nuerons")


def test_timm_trunks_have_neurons_where_the_paper_would_look():
    """`neurons`, every command's default layer, was missing on every timm tower (SigLIP, EVA02, ConvNeXt)."""
    trunks = timm_trunks()
    expected = {
        "vit": "visual.trunk.blocks.1.mlp.act",  # the last block's GELU, as on open_clip's ViTs
        "eva": "visual.trunk.blocks.1.mlp.norm:input",  # SwiGLU: the gated product, before its LayerNorm
        "swin": "visual.trunk.layers.1.blocks.1.mlp.act",
        "convnext": "visual.trunk.stages.3.blocks.1",  # the last residual sum (no activation after it)
    }
    for kind, layer in expected.items():
        assert structural_aliases(TimmClip(trunks[kind]))["neurons"] == layer, kind
    assert "neurons" not in structural_aliases(TimmClip(trunks["fastvit"]))


def test_a_swiglu_neurons_capture_is_the_gated_product():
    from neuronscope.activations import record
    from neuronscope.models import Preprocess, load_model

    model = load_model(TimmClip(timm_trunks()["eva"]), preprocess=Preprocess(image_size=(16, 16)))
    mlp = model.module.visual.trunk.blocks[1].mlp
    pixels = torch.randn(2, 3, 16, 16)
    mlp_in = record(model, pixels, "visual.trunk.blocks.1.mlp:input")["visual.trunk.blocks.1.mlp:input"]
    product = mlp.act(mlp.fc1_g(mlp_in)) * mlp.fc1_x(mlp_in)  # [B, T, hidden]
    torch.testing.assert_close(record(model, pixels, "neurons")["visual.trunk.blocks.1.mlp.norm:input"], product)


def test_neurons_on_a_tower_without_it_says_why_and_names_a_layer():
    clip = TimmClip(timm_trunks()["fastvit"])
    with pytest.raises(LayerNotFoundError) as refused:
        resolve_layers(clip, "neurons", structural_aliases(clip), model_key="fastvit@random")
    message = str(refused.value)
    assert message.startswith("fastvit@random has no 'neurons' alias") and "\n" not in message
    assert "--layer visual.trunk.stages.1.blocks.0" in message
