"""Objectives: the algebra, descriptions, declared layers, and the property every objective must have:
a few optimiser steps on a tiny random model raise it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import hook_count
from neuronscope.errors import NeuronscopeError
from neuronscope.objectives import (
    Context,
    Objective,
    alignment,
    as_objective,
    channel,
    direction,
    diversity,
    l1,
    l2,
    neuron,
    text_direction,
    total_variation,
)
from neuronscope.visualize import RenderConfig, render


def _context(acts: torch.Tensor) -> Context:
    """A context whose layer "x" holds ``acts`` [B, C, H, W] and whose image is grey."""
    return Context({"x": acts}, torch.full((acts.shape[0], 3, 4, 4), 0.5))


def test_channel_is_the_spatial_mean_and_takes_one_unit_per_image():
    acts = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    ctx = _context(acts)
    assert torch.equal(channel("x", 1)(ctx), acts[:, 1].mean(dim=(1, 2)))
    per_image = channel("x", [2, 0])(ctx)
    assert torch.equal(per_image, torch.stack([acts[0, 2].mean(), acts[1, 0].mean()]))
    assert torch.equal(channel("x", 1, batch=1)(ctx), torch.stack([torch.tensor(0.0), acts[1, 1].mean()]))
    with pytest.raises(ValueError, match="one per image"):
        channel("x", [0, 1, 2])(ctx)


def test_a_relu_channel_averages_where_the_unit_fires_and_takes_the_renders_relu():
    """The faceted recipe's f (OpenAI's facet code reads its unit after a ReLU); the render hands a redirected
    ReLU to objectives in its first steps, so a unit dead on every cell still gets a gradient."""
    acts = torch.tensor([[[[-1.0, 3.0], [-2.0, 1.0]]]])  # [1, 1, 2, 2]
    ctx = _context(acts)
    assert torch.equal(channel("x", 0, relu=True)(ctx), torch.tensor([1.0]))
    assert str(channel("x", 0, relu=True)) == "Channel [x, 0, relu]"
    seen = []
    ctx.relu = lambda t: seen.append(t) or t.clamp(min=0)
    channel("x", 0, relu=True)(ctx)
    assert seen and seen[0] is not None


def test_alignment_is_lucids_number_spread_over_the_images():
    """Lucid compares images 1 to 4 places apart, each pair once: the batch's sum is that number (all
    distances and every pair counted for both images made it twice Lucid's over 8 images)."""
    acts = torch.randn(8, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    lucid = -sum((acts[i] - acts[i + d]).pow(2).mean() / 2.0 ** d for d in range(1, 5) for i in range(8 - d))
    torch.testing.assert_close(alignment("x")(_context(acts)).sum(), lucid)
    two = acts[:2]
    torch.testing.assert_close(alignment("x")(_context(two)), -(two[0] - two[1]).pow(2).mean().repeat(2) / 4)


def test_units_may_be_numpy_or_torch_integers():
    acts = torch.randn(2, 3, 2, 2)
    ctx = _context(acts)
    for unit in (np.int64(2), torch.tensor(2)):
        assert torch.equal(channel("x", unit)(ctx), acts[:, 2].mean(dim=(1, 2)))
        assert torch.equal(neuron("x", unit)(ctx), acts[:, 2, 1, 1])
        assert str(channel("x", unit)) == "Channel [x, 2]"
    assert torch.equal(channel("x", np.array([2, 0]))(ctx), channel("x", [2, 0])(ctx))
    assert torch.equal(channel("x", 1, batch=np.int64(1))(ctx), channel("x", 1, batch=1)(ctx))


def test_a_unit_the_layer_lacks_is_named_with_the_layers_size(tiny_rn):
    """Not an index error deep in the gather (on a GPU a device-side assert): one line, before any step."""
    ctx = _context(torch.randn(2, 3, 2, 2))
    for objective in (channel("x", [1, 3]), channel("x", 3), neuron("x", [0, 3])):
        with pytest.raises(NeuronscopeError, match=r"^unit 3 of x: the layer has 3 units \(0 to 2\)$"):
            objective(ctx)
    with pytest.raises(NeuronscopeError, match="unit indices start at 0"):
        neuron("x", -1)  # refused as it is written, by parse_units
    with pytest.raises(NeuronscopeError, match="unit 600 of neurons: the layer has 512 units"):
        render(tiny_rn, channel("neurons", [1, 600]), batch=2, config=RenderConfig(steps=1))


def test_neuron_reads_one_cell():
    acts = torch.randn(2, 3, 3, 3)
    assert torch.equal(neuron("x", 2)(_context(acts)), acts[:, 2, 1, 1])
    assert torch.equal(neuron("x", 0, cell=(0, 2))(_context(acts)), acts[:, 0, 0, 2])


def test_a_neuron_cell_off_the_grid_is_refused_naming_the_grid():
    """A negative cell would wrap to the far side: refused when the objective is made. A cell past the grid
    is refused once the grid is known, in the forward, not as an index error inside torch."""
    for cell in ((-1, -1), (0, -2), (1, 2, 3)):
        with pytest.raises(ValueError, match=r"^cell \(.*\) of x: give \(row, col\), each from 0"):
            neuron("x", 0, cell=cell)
    ctx = _context(torch.randn(2, 3, 3, 4))
    for cell in ((3, 0), (5, 5)):
        with pytest.raises(ValueError, match=r"^cell \(\d, \d\) of x: the layer's grid is 3x4 \(rows 0 to 2, "
                                             r"columns 0 to 3\)$"):
            neuron("x", 0, cell=cell)(ctx)
    assert torch.equal(neuron("x", 1, cell=(np.int64(2), 3))(ctx), ctx["x"][:, 1, 2, 3])


def test_algebra_values_layers_and_descriptions():
    acts = torch.randn(2, 4, 2, 2)
    ctx = _context(acts)
    a, b = channel("x", 7 % 4), channel("x", 1)
    combined = 0.5 * a - b
    assert torch.allclose(combined(ctx), 0.5 * a(ctx) - b(ctx))
    assert str(combined) == "0.5 * Channel [x, 3] - Channel [x, 1]"
    assert combined.layers == ("x",)
    assert str(2 * (a + b)) == "2 * (Channel [x, 3] + Channel [x, 1])"
    assert torch.allclose((a / 2 + 1)(ctx), a(ctx) / 2 + 1)
    assert torch.allclose((1 - a)(ctx), 1 - a(ctx))
    assert torch.allclose((a * b)(ctx), a(ctx) * b(ctx))
    assert torch.allclose((-a)(ctx), -a(ctx))
    assert torch.allclose(sum([a, b, a])(ctx), 2 * a(ctx) + b(ctx))
    assert str(-(a - b)) == "-(Channel [x, 3] - Channel [x, 1])"
    assert str(a / (b * a)) == "Channel [x, 3] / (Channel [x, 1] * Channel [x, 3])"
    assert str(a / (b / a)) == "Channel [x, 3] / (Channel [x, 1] / Channel [x, 3])"
    assert str(2 / (a * b)) == "2 / (Channel [x, 3] * Channel [x, 1])"
    assert str(a * b / a) == "Channel [x, 3] * Channel [x, 1] / Channel [x, 3]"  # left to right: no brackets
    other = Objective(lambda c: c["y"].sum(dim=1), ["y"], "Y")
    assert (a + other).layers == ("x", "y")
    assert (a - l2()).layers == ("x",)


def test_tensor_weights_compose_one_for_all_or_one_per_image():
    """A facet's strength ramped over the batch is a tensor: on either side of ``*``, and under ``/``."""
    ctx = _context(torch.randn(2, 3, 2, 2))
    unit = channel("x", 1)
    assert torch.equal((torch.tensor(0.5) * unit)(ctx), (0.5 * unit)(_context(ctx.acts["x"])))
    ramp = torch.tensor([0.1, 5.0])
    for objective in (ramp * unit, unit * ramp):
        assert torch.allclose(objective(ctx), unit(ctx) * ramp) and str(objective) == "[0.1,5] * Channel [x, 1]"
    assert torch.allclose((unit / torch.tensor(2.0))(ctx), unit(ctx) / 2)
    assert str(torch.linspace(0.1, 5, 9) * unit) == "[0.1,...,5 (9)] * Channel [x, 1]"
    with pytest.raises(ValueError, match="one value or one per image"):
        unit * torch.ones(2, 2)


def test_an_objective_read_by_several_terms_runs_once_per_context():
    calls = []
    unit = Objective(lambda ctx: calls.append(1) or ctx["x"].mean(dim=(1, 2, 3)), ["x"], "U")
    ctx = _context(torch.randn(2, 3, 2, 2))
    (unit + 2 * unit - unit / 3)(ctx)
    assert len(calls) == 1
    unit(_context(ctx.acts["x"]))  # another context (the next step) computes it afresh
    assert len(calls) == 2


def test_shorthand_and_its_errors():
    objective = as_objective("visual.layer4.1.act3:input:473")
    assert objective.layers == ("visual.layer4.1.act3:input",)
    assert str(as_objective("neurons:7")) == "Channel [neurons, 7]"
    for bad in ("neurons", "neurons:x", ":3"):
        with pytest.raises(NeuronscopeError, match="layer:unit"):
            as_objective(bad)


def test_an_objective_must_return_one_value_per_image():
    broken = Objective(lambda ctx: ctx["x"].mean(dim=(2, 3)), ["x"], "per unit")
    with pytest.raises(ValueError, match="one value per"):
        broken(_context(torch.randn(2, 3, 2, 2)))


def test_a_missing_layer_says_which_layers_were_recorded():
    with pytest.raises(NeuronscopeError, match="recorded: x"):
        channel("y", 0)(_context(torch.randn(1, 2, 2, 2)))


def test_direction_cossim_power_rewards_alignment():
    v = torch.tensor([1.0, 0.0])
    along = torch.tensor([[2.0, 0.0]])[:, :, None, None]
    oblique = torch.tensor([[2.0, 2.0]])[:, :, None, None]
    plain = direction("x", v)
    powered = direction("x", v, cossim_pow=2)
    assert plain(_context(along)) == plain(_context(oblique))  # same dot product
    assert powered(_context(along)) > powered(_context(oblique))


def _objectives(model) -> dict:
    """Every library objective, built for tiny-rn (batch 2 where it compares images)."""
    generator = torch.Generator().manual_seed(0)
    return {
        "channel": (channel("neurons", 3), 1),
        "channels per image": (channel("neurons", [3, 5]), 2),
        "neuron": (neuron("neurons", 4), 1),
        "direction": (direction("neurons", torch.randn(512, generator=generator), cossim_pow=1), 1),
        "text direction": (text_direction(model, "a photo of a cat"), 1),
        "diversity": (diversity("visual.layer3.1"), 2),
        "alignment": (alignment("neurons"), 2),
        "l1": (l1(), 1),
        "l2": (l2(), 1),
        "total variation": (total_variation(), 1),
        "algebra": (0.5 * channel("neurons", 3) - 0.1 * channel("neurons", 9), 1),
    }


def test_every_objective_rises_in_a_few_steps(tiny_rn):
    """The property test: from random init, 12 Adam steps (no random transforms, so the curve is the objective
    itself) raise each objective, and no render leaves a hook behind."""
    hooks_before = hook_count(tiny_rn.module)
    config = RenderConfig(steps=12, transforms="none", sd=0.3, seed=1)
    for name, (objective, batch) in _objectives(tiny_rn).items():
        result = render(tiny_rn, objective, batch=batch, config=config)
        start, end = float(result.curve[0].sum()), float(result.curve[-1].sum())
        assert end > start, f"{name} ({objective}) went from {start} to {end}"
    assert hook_count(tiny_rn.module) == hooks_before


def test_render_hooks_only_the_objective_layers_and_stops_the_forward_early(tiny_rn):
    """The attention pool after layer4 never runs when the objective reads layer3 (3 steps and the score of
    the finished image: 4 forwards)."""
    from neuronscope.activations import layer_layouts

    layer_layouts(tiny_rn)  # a model's first render reads its layouts (one full forward, cached): not counted here
    calls = {"attnpool": 0, "layer3.0": 0}
    handles = [tiny_rn.module.visual.attnpool.register_forward_hook(lambda *a: calls.__setitem__(
                   "attnpool", calls["attnpool"] + 1)),
               tiny_rn.module.visual.layer3[0].register_forward_hook(lambda *a: calls.__setitem__(
                   "layer3.0", calls["layer3.0"] + 1))]
    try:
        seen: list[int] = []
        original = tiny_rn.module.visual.layer4.register_forward_hook(lambda *a: seen.append(1))
        render(tiny_rn, channel("visual.layer3.1", 2), config=RenderConfig(steps=3, transforms="none"))
        original.remove()
    finally:
        for handle in handles:
            handle.remove()
    assert calls == {"attnpool": 0, "layer3.0": 4}
    assert seen == []


def test_vit_channel_is_the_mean_over_patch_tokens_and_rises(tiny_vit):
    tokens = torch.randn(2, 17, 8)  # [B, 1 class token + 4x4 patches, D]
    ctx = Context({"x": tokens}, torch.zeros(2, 3, 4, 4), token_grid=(4, 4))
    assert torch.allclose(channel("x", 5)(ctx), tokens[:, 1:, 5].mean(dim=1))
    result = render(tiny_vit, channel("neurons", 3), config=RenderConfig(steps=8, transforms="none", sd=0.3))
    assert float(result.curve[-1, 0]) > float(result.curve[0, 0])


def test_unit_objectives_read_a_channels_last_layer_along_its_last_dim():
    """A [B, H, W, C] layer (timm ConvNeXt's MLPs) has C units: channel, neuron, direction and diversity read
    them where the context's layout says, as they read the same values channels first."""
    last = torch.randn(2, 3, 4, 5)  # [B, H, W, C]: 5 units on a 3x4 grid
    first = last.permute(0, 3, 1, 2)  # [B, C, H, W]
    image = torch.full((2, 3, 4, 4), 0.5)
    ctx = Context({"x": last}, image, layouts={"x": "channels_last"})
    reference = _context(first)
    assert torch.equal(ctx.maps("x"), first)
    vector = torch.randn(5)
    for objective in (channel("x", [4, 0]), neuron("x", 3, cell=(2, 3)), direction("x", vector, cossim_pow=1),
                      diversity("x")):
        torch.testing.assert_close(objective(ctx), objective(reference))
    assert torch.equal(channel("x", 4)(ctx), last[..., 4].mean(dim=(1, 2)))
    with pytest.raises(NeuronscopeError, match=r"the layer has 5 units \(0 to 4\)$"):
        channel("x", 5)(ctx)


def test_a_map_whose_layout_is_unknown_is_refused_by_name():
    ctx = Context({"x": torch.randn(1, 6, 3, 4)}, torch.zeros(1, 3, 4, 4), layouts={"x": None})
    with pytest.raises(NeuronscopeError, match=r"^cannot tell whether layer x \[6, 3, 4\] holds its units first"):
        channel("x", 0)(ctx)


def test_a_channels_last_layer_renders_its_own_units():
    """``channel("fc1", [0, 11])`` of a [B, H, W, 12] layer optimises units 0 and 11 of 12 (it read 3 rows),
    and the finished images' scores are those units' spatial means as a reduced record reads them."""
    from neuronscope.activations import record
    from tests.helpers import channels_last_model

    model = channels_last_model()
    result = render(model, channel("fc1", [0, 11]), batch=2, config=RenderConfig(steps=2, transforms="none"))
    means = record(model, model.preprocess.normalize(result.images), ["fc1"], reduce="mean")["fc1"]  # [2, 12]
    torch.testing.assert_close(result.final, means[torch.arange(2), torch.tensor([0, 11])])
    with pytest.raises(NeuronscopeError, match=r"^unit 12 of fc1: the layer has 12 units"):
        render(model, channel("fc1", 12), config=RenderConfig(steps=1))


def test_unit_arguments_are_read_by_parse_units_and_a_float_is_refused_clearly():
    """channel("neurons", 3.0) failed with "'float' object is not iterable"; unit strings were not read."""
    from neuronscope.errors import UnitsError

    acts = torch.randn(3, 4, 2, 2)
    ctx = _context(acts)
    assert torch.equal(channel("x", "2")(ctx), channel("x", 2)(ctx)) and str(channel("x", "2")) == "Channel [x, 2]"
    assert torch.equal(channel("x", "1-3")(ctx), channel("x", [1, 2, 3])(ctx))
    assert torch.equal(neuron("x", torch.tensor([3, 3, 0]))(ctx), acts[torch.arange(3), torch.tensor([3, 3, 0]), 1, 1])
    for bad in (3.0, [1, 2.5], np.float64(1.0)):
        for objective in (channel, neuron):
            with pytest.raises(UnitsError, match="is not an integer unit index"):
                objective("x", bad)


def test_a_per_image_weight_must_fit_the_batch_and_may_be_a_numpy_array():
    """A weight of the wrong length raised torch's "The size of tensor a (2) must match ..."; a NumPy weight made
    NumPy build an object array of objectives, refused later as "write 'layer:unit'"."""
    ctx = _context(torch.randn(2, 4, 2, 2))
    unit = channel("x", 1)
    with pytest.raises(ValueError, match=r"^a per-image weight \[0.1,2.55,5\] has 3 values for a batch of 2 "
                                         r"images: give one value, or one per image$"):
        (torch.linspace(0.1, 5, 3) * unit)(ctx)
    for weighted in (np.array([1.0, 3.0]) * unit, unit * np.array([1, 3])):
        assert isinstance(weighted, Objective) and str(weighted) == "[1,3] * Channel [x, 1]"
        torch.testing.assert_close(weighted(ctx), unit(ctx) * torch.tensor([1.0, 3.0]))
    torch.testing.assert_close((unit / np.array([2.0, 4.0]))(ctx), unit(ctx) / torch.tensor([2.0, 4.0]))
    assert str(np.float64(0.5) * unit) == "0.5 * Channel [x, 1]" and str(np.array(2.0) * unit) == "2 * Channel [x, 1]"
    with pytest.raises(ValueError, match="3 values for a batch of 2 images"):
        (np.array([1.0, 2.0, 3.0]) * unit)(ctx)
