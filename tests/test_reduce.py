"""Per-unit reductions on maps, ViT tokens and vectors."""

from __future__ import annotations

import pytest
import torch

from neuronscope.activations import centre, cls_token, reduce_units, spatial_max, spatial_mean, unit_axis, unit_maps


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
    assert map_grid(torch.zeros(2, 17, 8), grid=(4, 4)) == (4, 4)
    assert map_grid(torch.zeros(2, 17, 8)) == (1, 1) and map_grid(torch.zeros(2, 8)) == (1, 1)


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
    (values,) = record(tiny_rn, torch.zeros(1, 3, 64, 64), ["neurons"], reduce="center").values()
    assert values.ndim == 2
