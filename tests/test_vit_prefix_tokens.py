"""ViTs whose tokens do not start with exactly one class token: a SigLIP-like timm trunk (no class token,
attention pooling) and one with four register tokens after its class token; and token layers off the model's
patch grid: Swin's later stages (a coarser grid), its window attention and CoCa's attention pooler (not per
image, or not on a grid at all).

Every reader lays the patch tokens on the model's grid after the model's own prefix tokens; before, each
assumed one class token, so SigLIP's blocks failed ("grid (14, 14) does not hold 195 patch tokens") and
a register model's patches were read one token early. The towers here are open_clip's ``TimmModel`` in
miniature: a timm ``VisionTransformer`` as ``visual.trunk``, on a 4 x 6 grid so rows and cols differ.
"""

from __future__ import annotations

import pytest
import torch
from open_clip.transformer import VisionTransformer as OpenClipViT
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from neuronscope.activations import (
    NoClassTokenError,
    OffGridTokensError,
    UnbatchedLayerError,
    cls_token,
    layer_geometry,
    list_layers,
    record,
)
from neuronscope.atlas import Atlas
from neuronscope.mining import ScanSettings, open_source, scan
from neuronscope.models import LoadedModel, Preprocess, load_model
from neuronscope.visualize import RenderConfig, render
from tests.helpers import make_images

GRID = (4, 6)  # 16 x 24 px in 4 px patches
PATCHES = GRID[0] * GRID[1]
LAYER = "visual.trunk.blocks.1"


class TimmTower(nn.Module):
    """open_clip's ``TimmModel`` in miniature: a timm ViT as ``trunk``, its pooled features projected."""

    def __init__(self, **vit: object) -> None:
        super().__init__()
        self.trunk = VisionTransformer(img_size=(16, 24), patch_size=4, embed_dim=8, depth=2, num_heads=2,
                                       num_classes=0, **vit)
        self.head = nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class TimmClip(nn.Module):
    def __init__(self, **vit: object) -> None:
        super().__init__()
        self.visual = TimmTower(**vit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def timm_vit(**vit: object) -> LoadedModel:
    torch.manual_seed(0)
    return load_model(TimmClip(**vit), preprocess=Preprocess(image_size=(16, 24)))


@pytest.fixture
def siglip_like() -> LoadedModel:
    """No class token, attention-pooled (ViT-B-16-SigLIP's trunk): the blocks carry the 24 patches only."""
    return timm_vit(class_token=False, global_pool="map")


@pytest.fixture
def registers() -> LoadedModel:
    """A class token, then four register tokens, then the patches: 29 tokens."""
    return timm_vit(reg_tokens=4, global_pool="token")


def test_the_model_says_how_many_tokens_come_before_its_patches(siglip_like, registers, tiny_vit):
    assert (siglip_like.prefix_tokens, siglip_like.has_class_token) == (0, False)
    assert (registers.prefix_tokens, registers.has_class_token) == (5, True)
    assert (tiny_vit.prefix_tokens, tiny_vit.has_class_token) == (1, True)  # open_clip's own ViT


@pytest.mark.parametrize("fixture, prefix", [("siglip_like", 0), ("registers", 5)])
def test_a_blocks_geometry_is_its_patch_grid(fixture, prefix, request):
    model = request.getfixturevalue(fixture)
    geometry = layer_geometry(model, [LAYER])[LAYER]
    assert (geometry.units, geometry.grid, geometry.prefix_tokens) == (8, GRID, prefix)
    tokens = record(model, torch.randn(2, 3, 16, 24), LAYER)[LAYER]  # [B, prefix + 24, 8]
    assert tokens.shape == (2, prefix + PATCHES, 8)
    patches = tokens[:, prefix:, :]
    torch.testing.assert_close(geometry.maps(tokens), patches.transpose(1, 2).reshape(2, 8, *GRID))


@pytest.mark.parametrize("fixture, prefix", [("siglip_like", 0), ("registers", 5)])
def test_record_reduces_the_patch_tokens_only(fixture, prefix, request):
    model = request.getfixturevalue(fixture)
    pixels = torch.randn(3, 3, 16, 24)
    patches = record(model, pixels, LAYER)[LAYER][:, prefix:, :]  # [B, 24, 8]
    torch.testing.assert_close(record(model, pixels, LAYER, reduce="max")[LAYER], patches.max(dim=1).values)
    torch.testing.assert_close(record(model, pixels, LAYER, reduce="mean")[LAYER], patches.mean(dim=1))
    centre = patches.reshape(3, *GRID, 8)[:, GRID[0] // 2, GRID[1] // 2, :]
    torch.testing.assert_close(record(model, pixels, LAYER, reduce="centre")[LAYER], centre)


def test_a_cls_reduction_refuses_a_vit_without_a_class_token(siglip_like):
    with pytest.raises(NoClassTokenError, match="has no class token") as refused:
        record(siglip_like, torch.randn(1, 3, 16, 24), LAYER, reduce="cls")
    assert siglip_like.key in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(NoClassTokenError):
        cls_token(torch.randn(1, PATCHES, 8), class_token=False)


def test_a_conv_tower_has_no_tokens_and_refuses_a_cls_reduction_before_any_forward(mini_clip_fp32):
    """The mini CLIP (a ModifiedResNet) claimed one class token: reduce="cls" failed inside the hook, after a
    forward, with a shape error, and prefix_tokens disagreed with layer_geometry's 0."""
    model = mini_clip_fp32
    assert (model.prefix_tokens, model.has_class_token) == (0, False)
    assert layer_geometry(model, ["neurons"])[model.resolve_layer("neurons")].prefix_tokens == model.prefix_tokens
    forwards = []
    hook = model.module.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        with pytest.raises(NoClassTokenError, match="reduce with mean, max or centre") as refused:
            record(model, torch.randn(1, 3, *model.preprocess.image_size), "neurons", reduce="cls")
    finally:
        hook.remove()
    assert forwards == [] and model.key in str(refused.value)


def test_a_cls_reduction_reads_the_class_token_before_the_registers(registers):
    pixels = torch.randn(2, 3, 16, 24)
    tokens = record(registers, pixels, LAYER)[LAYER]
    torch.testing.assert_close(record(registers, pixels, LAYER, reduce="cls")[LAYER], tokens[:, 0, :])


@pytest.mark.parametrize("fixture, prefix", [("siglip_like", 0), ("registers", 5)])
def test_a_scan_keeps_each_units_best_patch_on_the_grid(fixture, prefix, request, tmp_path):
    """The reviewer's repro, in miniature: ``scan`` of a SigLIP block failed on its geometry."""
    model = request.getfixturevalue(fixture)
    paths = make_images(tmp_path / "images", count=6)
    settings = ScanSettings(top_k=2, bottom_k=2, n_bins=8, reservoir=2)
    with Atlas(tmp_path / "atlas") as atlas:
        (layer,) = scan(model, open_source(tmp_path / "images"), atlas, [LAYER], settings=settings, batch_size=4,
                        thumbnails=False).layers
        assert (layer.units, layer.grid) == (8, GRID)
        best = atlas.unit(None, LAYER, 3)["top"][0]
    # The best activation of unit 3 over the images is the max over their patch tokens, at its cell.
    pixels = model.preprocess([Image.open(path).convert("RGB") for path in paths])
    patches = record(model, pixels, LAYER)[LAYER][:, prefix:, 3].reshape(len(paths), *GRID)  # [N, 4, 6]
    image = int(patches.flatten(1).max(dim=1).values.argmax())
    row, col = divmod(int(patches[image].argmax()), GRID[1])
    assert best["activation"] == pytest.approx(patches[image].max().item(), rel=1e-4)
    assert tuple(best["cell"]) == (row, col)


def test_a_render_reads_the_patch_tokens(siglip_like):
    """Feature vis reads units through ``Context.maps``: it laid SigLIP's 24 tokens as 23 patches and failed."""
    result = render(siglip_like, f"{LAYER}:2", config=RenderConfig(steps=2, size=24, transforms="none"))
    assert result.images.shape[0] == 1



def test_a_trunks_patch_embed_carries_no_prefix_tokens(registers):
    """A timm trunk's ``patch_embed`` runs before the class and register tokens join: its tokens are the patches
    alone. Every reader took the model's five prefix tokens off them and failed ("grid (4, 6) does not hold 19")."""
    layer = "visual.trunk.patch_embed"
    pixels = torch.randn(2, 3, 16, 24)
    tokens = record(registers, pixels, layer)[layer]  # [B, 24, 8]
    assert tokens.shape == (2, PATCHES, 8)
    geometry = layer_geometry(registers, [layer])[layer]
    assert (geometry.units, geometry.grid, geometry.prefix_tokens) == (8, GRID, 0)
    torch.testing.assert_close(record(registers, pixels, layer, reduce="mean")[layer], tokens.mean(dim=1))
    torch.testing.assert_close(geometry.maps(tokens), tokens.transpose(1, 2).reshape(2, 8, *GRID))
    result = render(registers, f"{layer}:2", config=RenderConfig(steps=2, size=24, transforms="none"))
    assert result.images.shape[0] == 1
    with pytest.raises(NoClassTokenError, match="patches alone"):  # its first token is patch (0, 0), not a class token
        record(registers, pixels, layer, reduce="cls")


@pytest.fixture
def swin() -> LoadedModel:
    """A Swin trunk on 32 x 48 px: 8 x 12 patches in stage 0, merged to 4 x 6 in stage 1, in windows of 2 x 2."""
    from timm.models.swin_transformer import SwinTransformer

    from tests.helpers import TimmClip

    torch.manual_seed(0)
    trunk = SwinTransformer(img_size=(32, 48), patch_size=4, window_size=2, embed_dim=8, depths=(1, 2),
                            num_heads=(1, 1), num_classes=0)
    return load_model(TimmClip(trunk), preprocess=Preprocess(image_size=(32, 48)))


def test_a_swin_token_layer_lies_on_its_own_stages_grid(swin):
    """Swin's token layers after stage 0 failed ("grid (56, 56) does not hold 48 patch tokens"): the model's grid
    is stage 0's, and stage 1 runs on it merged 2 x 2. Its tokens lie row-major on the 4 x 6 grid of the stage's
    [B, H, W, C] maps: a block's norm2 input is its input plus the attention branch, flattened."""
    block = "visual.trunk.layers.1.blocks.1"
    tokens_layer, first_layer = f"{block}.norm2:input", "visual.trunk.layers.0.blocks.0.mlp.act"
    geometry = layer_geometry(swin, [first_layer, tokens_layer, "neurons"])
    assert geometry[first_layer].grid == (8, 12) and geometry[tokens_layer].grid == (4, 6)
    assert (geometry[tokens_layer].units, geometry[tokens_layer].prefix_tokens) == (16, 0)
    assert geometry[f"{block}.mlp.act"].grid == (4, 6)  # neurons
    pixels = torch.randn(2, 3, 32, 48)
    acts = record(swin, pixels, [tokens_layer, f"{block}:input", f"{block}.drop_path1"])
    summed = (acts[f"{block}:input"] + acts[f"{block}.drop_path1"]).permute(0, 3, 1, 2)  # [B, 16, 4, 6]
    torch.testing.assert_close(geometry[tokens_layer].maps(acts[tokens_layer]), summed)
    torch.testing.assert_close(record(swin, pixels, tokens_layer, reduce="max")[tokens_layer], summed.amax(dim=(2, 3)))


def test_swin_has_no_class_token_and_its_window_attention_is_refused(swin):
    """Swin was taken to have a class token (reduce="cls" read a patch), and its window attention [B x windows,
    4, C] was read as if dim 0 were the images."""
    assert (swin.prefix_tokens, swin.has_class_token) == (0, False)
    with pytest.raises(NoClassTokenError):
        record(swin, torch.randn(1, 3, 32, 48), "visual.trunk.layers.1.blocks.1.mlp.act", reduce="cls")
    attention = "visual.trunk.layers.0.blocks.0.attn"
    with pytest.raises(UnbatchedLayerError, match=r"\[24, 4, 8\] does not hold one row per image \(1 in, 24 out"):
        layer_geometry(swin, [attention])  # 24 windows of 2 x 2 patches for one image
    with pytest.raises(UnbatchedLayerError, match=r"\[48, 4, 8\] does not hold one row per image \(2 in, 48 out"):
        record(swin, torch.randn(2, 3, 32, 48), attention)


class PooledClip(nn.Module):
    """CoCa's image tower in miniature: open_clip's ViT whose tokens go through an attention pooler with 6 learned
    queries (CoCa: 256) before ``ln_post``."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = OpenClipViT(image_size=16, patch_size=4, width=8, layers=1, heads=2, mlp_ratio=2,
                                  attentional_pool=True, attn_pooler_queries=6, attn_pooler_heads=2, output_dim=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


@pytest.fixture
def coca_like() -> LoadedModel:
    torch.manual_seed(0)
    return load_model(PooledClip(), preprocess=Preprocess(image_size=16))


def test_an_attention_poolers_queries_are_refused_in_one_line_naming_the_layer(coca_like):
    """CoCa's ``visual.ln_post`` (256 queries) failed with "grid (7, 7) does not hold 255 patch tokens"."""
    pixels = torch.randn(2, 3, 16, 16)
    for refused in (lambda: layer_geometry(coca_like, ["visual.ln_post"]),
                    lambda: record(coca_like, pixels, "visual.ln_post", reduce="max")):
        with pytest.raises(OffGridTokensError, match=r"^layer visual\.ln_post: these 6 tokens are not on the "
                                                     r"model's 4x4 patch grid") as error:
            refused()
        assert "\n" not in str(error.value)
    assert record(coca_like, pixels, "visual.ln_post")["visual.ln_post"].shape == (2, 6, 8)  # full tokens still read


def test_a_layer_fed_by_a_parameter_is_listed_without_a_batch_dim_and_refused(coca_like):
    """The pooler's queries ``ln_q:input`` [6, 8] have no batch dim: they were listed as [8] and recorded as if 6
    images."""
    listed = {info.name: info for info in list_layers(coca_like)}
    queries = listed["visual.attn_pool.ln_q:input"]
    assert (queries.shape, queries.batched, queries.to_dict()["batched"]) == ((6, 8), False, False)
    assert (listed["visual.ln_post"].shape, listed["visual.ln_post"].batched) == ((6, 8), True)
    assert "batched" not in listed["visual.ln_post"].to_dict()
    with pytest.raises(UnbatchedLayerError, match=r"attn_pool\.ln_q:input \[6, 8\] does not hold one row per image"):
        layer_geometry(coca_like, ["visual.attn_pool.ln_q:input"])
    with pytest.raises(UnbatchedLayerError, match=r"\(2 in, 6 out"):
        record(coca_like, torch.randn(2, 3, 16, 16), "visual.attn_pool.ln_q:input", reduce="mean")
