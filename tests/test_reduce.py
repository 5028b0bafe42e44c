"""Per-unit reductions on maps, ViT tokens and vectors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuronscope.activations import centre, cls_token, reduce_units, spatial_max, spatial_mean, unit_axis, unit_maps
from tests.helpers import channels_last_model


def test_maps_mean_max_cell_centre_on_a_non_square_grid():
    acts = torch.zeros(2, 3, 4, 6)  # [B, C, H, W], H != W
    acts[0, 1, 3, 5] = 7.0
    acts[1, 2, 0, 4] = 2.0
    acts[:, 0, 2, 3] = -1.0  # the centre cell (H//2, W//2)
    values, cells = spatial_max(acts)
    assert values[0, 1] == 7.0 and cells[0, 1].tolist() == [3, 5]
    assert values[1, 2] == 2.0 and cells[1, 2].tolist() == [0, 4]
    assert spatial_mean(acts)[0, 1] == pytest.approx(7.0 / 24)
    assert centre(acts)[:, 0].tolist() == [-1.0, -1.0]


def test_vit_tokens_use_patches_for_space_and_first_token_for_cls():
    tokens = torch.zeros(1, 1 + 2 * 3, 5)  # [B, 1 CLS + 2x3 patches, D]
    tokens[0, 0, :] = 100.0  # CLS must not leak into spatial reductions
    tokens[0, 1 + 4, 2] = 9.0  # patch 4 = row 1, col 1 on a 2x3 grid
    values, cells = spatial_max(tokens, grid=(2, 3))
    assert values[0, 2] == 9.0 and cells[0, 2].tolist() == [1, 1]
    assert spatial_mean(tokens, grid=(2, 3))[0, 2] == pytest.approx(9.0 / 6)
    assert cls_token(tokens)[0].tolist() == [100.0] * 5
    assert unit_maps(tokens, grid=(2, 3)).shape == (1, 5, 2, 3)
    with pytest.raises(ValueError, match="grid"):
        spatial_mean(tokens)  # 6 patches are not a square


def test_units_axis_and_reduce_names():
    assert unit_axis(torch.zeros(1, 2, 3, 3)) == 1 and unit_axis(torch.zeros(1, 5, 7)) == 2
    vectors = torch.arange(6.0).reshape(2, 3)
    assert torch.equal(reduce_units(vectors, "mean"), vectors)
    assert reduce_units(torch.ones(1, 2, 3, 3), "centre").shape == (1, 2)
    with pytest.raises(ValueError, match="mean, max"):
        reduce_units(vectors, "median")


def test_map_grid_of_maps_tokens_and_vectors():
    from neuronscope.activations import map_grid

    assert map_grid(torch.zeros(2, 8, 3, 5)) == (3, 5)
    assert map_grid(torch.zeros(2, 3, 5, 8), layout="channels_last") == (3, 5)
    assert map_grid(torch.zeros(2, 17, 8), grid=(4, 4)) == (4, 4)
    # Tokens without a known grid lie where unit_maps puts them (a square), never on (1, 1).
    assert map_grid(torch.zeros(2, 17, 8)) == (4, 4) and map_grid(torch.zeros(2, 8)) == (1, 1)


def test_channels_last_maps_reduce_over_the_last_dim():
    acts = torch.randn(2, 3, 4, 5)  # [B, H, W, C]
    values, cells = spatial_max(acts, layout="channels_last")
    expected_values, expected_cells = spatial_max(acts.permute(0, 3, 1, 2))
    assert values.shape == (2, 5) and torch.equal(values, expected_values) and torch.equal(cells, expected_cells)
    assert unit_axis(acts, "channels_last") == 3


def test_layer_layouts_follow_the_modules_not_the_shape():
    """Linear and LayerNorm run channels last; GELU follows fc1; the permuted-back output is channels first."""
    from neuronscope.activations import list_layers, record

    model = channels_last_model()
    layouts = {info.name: info.layout for info in list_layers(model) if len(info.shape) == 3}
    assert layouts == {"conv:input": "channels_first", "conv": "channels_first",
                       "norm:input": "channels_last", "norm": "channels_last", "fc1:input": "channels_last",
                       "fc1": "channels_last", "act:input": "channels_last", "act": "channels_last",
                       "fc2:input": "channels_last", "fc2": "channels_last", "out:input": "channels_first",
                       "out": "channels_first"}
    pixels = torch.randn(2, 3, 12, 16)
    full = record(model, pixels, ["fc1", "out"])
    reduced = record(model, pixels, ["fc1", "out"], reduce="max")
    assert full["fc1"].shape == (2, 3, 4, 12) and reduced["fc1"].shape == (2, 12)
    assert torch.equal(reduced["fc1"], full["fc1"].amax(dim=(1, 2)))
    assert torch.equal(reduced["out"], full["out"].amax(dim=(2, 3)))


def test_every_map_of_a_resnet_is_channels_first(tiny_rn):
    """Including a downsample's input: the block's input, from before bn3 ran (not the last tensor)."""
    from neuronscope.activations import list_layers

    layouts = {info.name: info.layout for info in list_layers(tiny_rn) if len(info.shape) == 3}
    assert layouts["visual.layer2.0.downsample:input"] == "channels_first"
    assert set(layouts.values()) == {"channels_first"}


def test_a_layer_whose_layout_cannot_be_told_is_an_error():
    from neuronscope.activations import known_layout
    from neuronscope.activations.layout import infer_layouts
    from neuronscope.errors import NeuronscopeError
    from neuronscope.models import Preprocess, load_model

    unknown = infer_layouts([("act", nn.GELU(), (1, 6, 3, 4))])
    assert unknown == {"act": None}
    # A tensor whose shape no earlier tensor of known layout has (nor its permutation): no guess either.
    assert infer_layouts([("conv", nn.Conv2d(3, 6, 1), (1, 6, 3, 4)), ("act", nn.GELU(), (1, 5, 3, 4))])["act"] is None
    # Reading units of such a layer is refused in one line naming it.
    model = load_model(nn.Sequential(nn.Conv2d(3, 6, 4, stride=4), nn.Flatten(2), nn.Unflatten(2, (2, 6)), nn.GELU()),
                       preprocess=Preprocess(image_size=(12, 16)))
    with pytest.raises(NeuronscopeError, match="cannot tell whether layer 3"):
        known_layout(model, "3", torch.zeros(1, 6, 2, 6))


def test_edits_reach_the_units_of_a_channels_last_layer():
    from neuronscope.activations import Recorder, zero_units

    model = channels_last_model()
    with Recorder(model, ["fc1"], edits=[zero_units("fc1", "0-2")]) as recorder:
        acts = recorder.run(torch.randn(1, 3, 12, 16))["fc1"]  # [1, 3, 4, 12]
    assert (acts[..., :3] == 0).all() and (acts[..., 3:] != 0).any()


def test_record_refuses_a_reduction_that_is_not_a_name_before_any_forward(tiny_rn):
    """``reduce=spatial_mean`` (the function, not its name) is refused up front with the names to use,
    not inside the first forward's hook."""
    from neuronscope.activations import record

    calls = []
    handle = tiny_rn.image_module.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with pytest.raises(ValueError, match='reduce="mean" for spatial_mean'):
            record(tiny_rn, torch.zeros(1, 3, 64, 64), ["neurons"], reduce=spatial_mean)
    finally:
        handle.remove()
    assert calls == []
    images = torch.randn(2, 3, 64, 64)
    (values,) = record(tiny_rn, images, ["neurons"], reduce="center").values()
    (maps,) = record(tiny_rn, images, ["neurons"]).values()  # [2, 512, 2, 2]: the centre is cell (1, 1)
    torch.testing.assert_close(values, maps[:, :, 1, 1])
