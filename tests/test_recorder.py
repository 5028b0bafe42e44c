"""The Recorder: exact captures, hook hygiene, early stop, edits."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from neuronscope.activations import Recorder, mean_ablate, record, set_units, spatial_mean, zero_units
from neuronscope.errors import LayerNotFoundError, NeuronscopeError, UnitsError
from neuronscope.models import Preprocess, load_model
from neuronscope.models.loaded import evaluating
from tests.helpers import hook_count, training


def bottleneck_by_hand(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ModifiedResNet Bottleneck's residual sum, before its final ReLU, from its parts."""
    out = F.relu(block.bn1(block.conv1(x)))
    out = F.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(block.avgpool(out)))
    identity = block.downsample(x) if block.downsample is not None else x
    return out + identity


def test_rn50x4_pre_relu_capture_equals_the_block_computed_by_hand(rn50x4):
    pixels = torch.randn(2, 3, 288, 288, generator=torch.Generator().manual_seed(1))
    layers = ["visual.layer4.5:input", "neurons", "visual.layer4.5.act3"]
    acts = record(rn50x4, pixels, layers)
    block_input = acts["visual.layer4.5:input"]
    pre_relu, post_relu = acts["visual.layer4.5.act3:input"], acts["visual.layer4.5.act3"]
    assert pre_relu.shape == (2, 2560, 9, 9)
    with torch.no_grad():
        expected = bottleneck_by_hand(rn50x4.module.visual.layer4[5], block_input)
    torch.testing.assert_close(pre_relu, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(post_relu, torch.relu(pre_relu))
    assert (pre_relu < 0).any()  # a clone taken before the in-place ReLU


def test_tiny_pre_relu_capture_with_a_downsample_block(tiny_rn):
    pixels = torch.randn(3, 3, 64, 64)
    acts = record(tiny_rn, pixels, ["visual.layer4.0:input", "image_block_4/0/Add_6", "visual.layer4.0"])
    with torch.no_grad():
        expected = bottleneck_by_hand(tiny_rn.module.visual.layer4[0], acts["visual.layer4.0:input"])
    torch.testing.assert_close(acts["visual.layer4.0.act3:input"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(acts["visual.layer4.0"], torch.relu(expected), rtol=1e-5, atol=1e-5)


def test_neurons_capture_holds_negative_values(tiny_rn):
    acts = record(tiny_rn, torch.randn(2, 3, 64, 64), "neurons")
    assert (acts["visual.layer4.1.act3:input"] < 0).any()


def test_no_hook_remains_after_100_recordings_and_user_hooks_survive(tiny_rn):
    calls = []
    target = tiny_rn.module.visual.layer1
    user_handle = target.register_forward_hook(lambda module, args, output: calls.append(1))
    baseline = hook_count(tiny_rn.module)
    pixels = torch.randn(1, 3, 64, 64)
    for _ in range(100):
        with Recorder(tiny_rn, ["visual.layer1", "visual.layer1.0.act3:input"], early_stop=True) as recorder:
            assert hook_count(tiny_rn.module) > baseline
            recorder.run(pixels)
    assert hook_count(tiny_rn.module) == baseline
    assert len(calls) == 100  # the user's hook ran every time and is still there
    user_handle.remove()
    assert hook_count(tiny_rn.module) == 0


def test_hooks_are_removed_when_the_forward_raises(tiny_rn):
    def fail(module, args):
        raise RuntimeError("the forward fails mid-way")

    user_handle = tiny_rn.module.visual.layer2.register_forward_pre_hook(lambda module, args: None)
    baseline = hook_count(tiny_rn.module)
    with pytest.raises(UnitsError):
        record(tiny_rn, torch.randn(1, 3, 64, 64), "visual.attnpool", edits=[zero_units("neurons", "600")])
    assert hook_count(tiny_rn.module) == baseline
    with pytest.raises(ValueError, match="not \\[B, 3, H, W\\]"):
        record(tiny_rn, torch.randn(1, 4, 64, 64), "neurons")  # refused before any hook
    assert hook_count(tiny_rn.module) == baseline
    failing = tiny_rn.module.visual.layer4[1].conv1.register_forward_pre_hook(fail)  # runs before `neurons`
    baseline = hook_count(tiny_rn.module)
    with pytest.raises(RuntimeError, match="mid-way"):
        with Recorder(tiny_rn, "neurons") as recorder:
            recorder.run(torch.randn(1, 3, 64, 64))
    assert hook_count(tiny_rn.module) == baseline
    with pytest.raises(RuntimeError, match="mid-way"):
        record(tiny_rn, torch.randn(1, 3, 64, 64), "neurons")  # run() attaching on its own
    assert hook_count(tiny_rn.module) == baseline
    failing.remove()
    user_handle.remove()


@pytest.mark.parametrize("fixture", ["tiny_rn", "tiny_vit"])
def test_early_stop_gives_the_same_activations_as_a_full_forward(request, fixture):
    model = request.getfixturevalue(fixture)
    layers = "visual.layer3.*" if fixture == "tiny_rn" else "visual.transformer.resblocks.0.mlp.*"
    pixels = torch.randn(2, 3, 64, 64)
    ran_after = []
    late = model.module.visual.attnpool if fixture == "tiny_rn" else model.module.visual.ln_post
    handle = late.register_forward_hook(lambda *args: ran_after.append(1))
    stopped = record(model, pixels, layers, early_stop=True)
    assert ran_after == []  # the forward really stopped
    full = record(model, pixels, layers, early_stop=False)
    handle.remove()
    assert ran_after == [1]
    assert list(stopped) == list(full) and len(full) >= 2
    for name in full:
        torch.testing.assert_close(stopped[name], full[name], rtol=0, atol=0)


def test_non_square_inputs_work_with_early_stop(tiny_rn):
    # The attention pool only takes the trained grid; stopping at layer4 makes any size work.
    acts = record(tiny_rn, torch.randn(1, 3, 64, 96), ["neurons", "visual.layer3.1"], reduce=None)
    assert acts["visual.layer4.1.act3:input"].shape == (1, 512, 2, 3)
    peaks = record(tiny_rn, torch.randn(1, 3, 64, 96), "neurons", reduce="max")
    assert peaks["visual.layer4.1.act3:input"].shape == (1, 512)


def test_pil_images_are_preprocessed_by_the_contract(tiny_rn):
    images = [Image.new("RGB", (120, 80), (200, 30, 30)), Image.new("RGB", (50, 90), (10, 200, 10))]
    acts = record(tiny_rn, images, "neurons", reduce="mean", batch_size=1)["visual.layer4.1.act3:input"]
    pixels = tiny_rn.preprocess.normalize(tiny_rn.preprocess.to_pixels(images))  # resized, then normalised
    expected = record(tiny_rn, pixels, "neurons", reduce="mean")["visual.layer4.1.act3:input"]
    assert acts.shape == (2, 512)
    torch.testing.assert_close(acts, expected)


def test_one_image_tensor_is_a_batch_of_one_whatever_the_batch_size(tiny_rn):
    image = torch.randn(3, 64, 64)  # [3, H, W]: batching must not split it along channels
    whole = record(tiny_rn, image, "neurons")["visual.layer4.1.act3:input"]
    batched = record(tiny_rn, image, "neurons", batch_size=2)["visual.layer4.1.act3:input"]
    assert whole.shape == batched.shape == (1, 512, 2, 2)
    torch.testing.assert_close(batched, whole)


def test_module_running_twice_warns_and_keeps_the_first_call():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Linear(4, 4)

        def forward(self, x):
            return self.scale(self.scale(x))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = Twice()

        def forward(self, x):
            return self.body(x)

    net = Net()
    x = torch.randn(2, 4)
    with pytest.warns(RuntimeWarning, match="body.scale ran 2 times"):
        acts = Recorder(net, "body.scale").run(x)
    torch.testing.assert_close(acts["body.scale"], net.body.scale(x))
    once = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two separate forwards are not "twice in one forward"
        with Recorder(once, "0.0:input") as recorder:
            once(x)
            once(x + 1)
            torch.testing.assert_close(recorder["0.0:input"], x + 1)  # the latest forward


def test_a_reused_top_level_module_warns_and_keeps_the_first_call():
    # The layer is a child of the root: the root's call, not the layer's own, is one forward.
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(self.conv(x))

    net, x = Twice(), torch.randn(1, 3, 4, 4)
    with pytest.warns(RuntimeWarning, match="conv ran 2 times"):
        acts = record(load_model(net, preprocess=Preprocess(image_size=4)), x, "conv", early_stop=False)
    with torch.no_grad():
        torch.testing.assert_close(acts["conv"], net.conv(x))
    with pytest.warns(RuntimeWarning, match="conv ran 2 times"), Recorder(net, "conv") as recorder:
        net(x)
        net(x + 1)  # a new forward of the root: counted afresh
    with torch.no_grad():
        torch.testing.assert_close(recorder["conv"], net.conv(x + 1))
    assert hook_count(net) == 0


def test_a_top_level_layer_called_directly_is_one_forward_per_call(tiny_rn):
    # encode_image calls `visual` itself, not the root: each call is a forward of its own.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Recorder(tiny_rn, "visual") as recorder, torch.no_grad():
            tiny_rn.module.encode_image(torch.zeros(1, 3, 64, 64))
            second = tiny_rn.module.encode_image(torch.ones(1, 3, 64, 64))
            torch.testing.assert_close(recorder["visual"], second)


def test_capture_fn_keys_are_resolved_like_layers(mini_clip_fp32):
    pixels = torch.randn(2, 3, 64, 64)
    acts = Recorder(mini_clip_fp32, ["neurons", "visual.layer3"], capture_fn={"neurons": spatial_mean}).run(pixels)
    assert acts["visual.layer4.1.act3:input"].shape == (2, 512)  # the alias reached its layer
    assert acts["visual.layer3"].ndim == 4  # a layer without a function is kept whole
    with pytest.raises(LayerNotFoundError, match="capture_fn key 'visual.layer2' is not a recorded layer"):
        Recorder(mini_clip_fp32, "neurons", capture_fn={"visual.layer2": spatial_mean})
    with pytest.raises(LayerNotFoundError, match="unknown layer 'nuerons'"):
        Recorder(mini_clip_fp32, "neurons", capture_fn={"nuerons": spatial_mean})


def test_clone_false_refuses_a_capture_an_in_place_module_changed(mini_clip_fp32):
    pixels = torch.randn(2, 3, 64, 64)
    with pytest.raises(NeuronscopeError, match="changed in place.*use clone=True"):
        Recorder(mini_clip_fp32, "neurons", clone=False).run(pixels)  # act3's in-place ReLU runs after the capture
    block = "visual.layer4.1"  # nothing changes a block's output in place
    kept = Recorder(mini_clip_fp32, block, clone=False).run(pixels)
    torch.testing.assert_close(kept[block], record(mini_clip_fp32, pixels, block)[block])
    stopped = Recorder(mini_clip_fp32, "neurons", clone=False, early_stop=True).run(pixels)  # the ReLU never runs
    assert (stopped["visual.layer4.1.act3:input"] < 0).any()


def test_short_repr(mini_clip_fp32):
    assert repr(Recorder(mini_clip_fp32, "neurons")) == "Recorder(mini-clip@bundled: visual.layer4.1.act3:input)"


def test_direct_forwards_inside_with_block_and_alias_lookup(tiny_rn):
    with Recorder(tiny_rn, "neurons") as recorder:
        with torch.no_grad():
            tiny_rn.module.encode_image(torch.randn(1, 3, 64, 64))
        assert recorder["neurons"].shape == (1, 512, 2, 2)
        with pytest.raises(LayerNotFoundError, match="no capture"):
            recorder["visual.layer1"]


def test_text_layers_do_not_run_in_the_image_forward(tiny_rn):
    with pytest.raises(LayerNotFoundError, match="did not run in the image forward"):
        record(tiny_rn, torch.randn(1, 3, 64, 64), "transformer.resblocks.0")


# --------------------------------------------------------------------------- edits


def embed(model, pixels):
    with torch.no_grad():
        return model.encode_images(pixels)


def test_zero_edit_changes_downstream_output_and_is_removed_after(tiny_rn):
    pixels = torch.randn(2, 3, 64, 64)
    baseline = embed(tiny_rn, pixels)
    with Recorder(tiny_rn, ["neurons", "visual.layer4.1"], edits=[zero_units("neurons", "0-31")]) as recorder:
        acts = recorder.run(pixels)
        edited = embed(tiny_rn, pixels)  # a direct forward sees the edit too
    assert torch.all(acts["visual.layer4.1.act3:input"][:, :32] == 0)  # the capture shows what flowed on
    assert torch.any(acts["visual.layer4.1.act3:input"][:, 32:] != 0)
    assert torch.all(acts["visual.layer4.1"][:, :32] == 0)
    assert not torch.allclose(edited, baseline)
    torch.testing.assert_close(embed(tiny_rn, pixels), baseline)  # removed with the block
    assert hook_count(tiny_rn.module) == 0


def test_mean_and_set_edits(tiny_rn):
    pixels = torch.randn(2, 3, 64, 64)
    baseline = embed(tiny_rn, pixels)
    units = [3, 7]
    with Recorder(tiny_rn, "visual.layer4.0", edits=[set_units("visual.layer4.0", units, torch.tensor([1.5, -2.0]))]) as rec:
        acts = rec.run(pixels)["visual.layer4.0"]
        assert not torch.allclose(embed(tiny_rn, pixels), baseline)
    assert torch.all(acts[:, 3] == 1.5) and torch.all(acts[:, 7] == -2.0)

    original = record(tiny_rn, pixels, "neurons")["visual.layer4.1.act3:input"]
    ablated = record(tiny_rn, pixels, "neurons", edits=[mean_ablate("neurons", units)])["visual.layer4.1.act3:input"]
    batch_means = original[:, units].mean(dim=(0, 2, 3))
    for column, unit in enumerate(units):
        torch.testing.assert_close(ablated[:, unit], batch_means[column].expand_as(ablated[:, unit]))
    torch.testing.assert_close(ablated[:, 10:], original[:, 10:])
    reference = record(tiny_rn, pixels, "neurons", edits=[mean_ablate("neurons", units, means=0.25)])
    assert torch.all(reference["visual.layer4.1.act3:input"][:, units] == 0.25)


@pytest.mark.parametrize("layer", ["visual.layer4.1.act3:input", "visual.layer4.0"])  # a pre-hook, a forward hook
@pytest.mark.parametrize("capture_outside", [True, False])
def test_a_capture_shows_another_recorders_edit_whichever_with_opened_first(tiny_rn, layer, capture_outside):
    """The notebook pattern: one capturing Recorder around ablations. Its capture showed the values before
    the inner recorder's edit (hooks ran in registration order), while the forward went on edited."""
    pixels = torch.randn(2, 3, 64, 64)
    capture, edit = Recorder(tiny_rn, layer), Recorder(tiny_rn, edits=[zero_units(layer, "0-3")])
    outer, inner = (capture, edit) if capture_outside else (edit, capture)
    with outer, inner:
        embedded = embed(tiny_rn, pixels)
    assert torch.all(capture[layer][:, :4] == 0) and torch.any(capture[layer][:, 4:] != 0)
    torch.testing.assert_close(embedded, embed_edited(tiny_rn, pixels, [zero_units(layer, "0-3")]))
    assert hook_count(tiny_rn.module) == 0


def test_edits_of_two_recorders_on_one_layer_run_the_last_attached_first(tiny_rn):
    """Within one recorder edits run in the order given; across recorders, the one attached last edits first
    and an outer recorder's edit applies to its result (what the README documents)."""
    pixels, layer = torch.randn(2, 3, 64, 64), "visual.layer4.0"
    in_order = record(tiny_rn, pixels, layer, edits=[set_units(layer, [3], 1.0), set_units(layer, [3], 2.0)])[layer]
    assert torch.all(in_order[:, 3] == 2.0)
    with Recorder(tiny_rn, layer) as capture, Recorder(tiny_rn, edits=[set_units(layer, [3], 5.0)]):
        with Recorder(tiny_rn, edits=[set_units(layer, [3], 7.0), mean_ablate(layer, [4], means=[0.5])]):
            embed(tiny_rn, pixels)
    assert torch.all(capture[layer][:, 3] == 5.0) and torch.all(capture[layer][:, 4] == 0.5)


def embed_edited(model, pixels, edits):
    with Recorder(model, edits=edits):
        return embed(model, pixels)


def test_edit_only_recorder_on_a_vit(tiny_vit):
    pixels = torch.randn(1, 3, 64, 64)
    baseline = embed(tiny_vit, pixels)
    with Recorder(tiny_vit, edits=[zero_units("neurons")]):
        assert not torch.allclose(embed(tiny_vit, pixels), baseline)
    torch.testing.assert_close(embed(tiny_vit, pixels), baseline)


def test_an_input_edit_reaches_every_argument_that_is_the_input(tiny_vit):
    # open_clip calls attn(x, x, x): an edit of attn:input is the query's, the key's and the value's.
    pixels = torch.randn(2, 3, 64, 64)
    attn = "visual.transformer.resblocks.0.attn"

    def attention_output(edited_layer: str) -> torch.Tensor:
        with Recorder(tiny_vit, attn, edits=[zero_units(edited_layer, "all")]) as recorder:
            return recorder.run(pixels)[attn]

    torch.testing.assert_close(attention_output(f"{attn}:input"),
                               attention_output("visual.transformer.resblocks.0.ln_1"))


# --------------------------------------------------------------------------- precision, gradients


def test_bf16_autocast_captures_and_record_returns_float32():
    model = load_model("tiny-rn", weights="random", precision="bf16")
    assert model.precision.channels_last
    with Recorder(model, "neurons") as recorder:
        raw = recorder.run(torch.randn(1, 3, 64, 64))["visual.layer4.1.act3:input"]
    assert raw.dtype == torch.bfloat16
    assert record(model, torch.randn(1, 3, 64, 64), "neurons")["visual.layer4.1.act3:input"].dtype == torch.float32


def test_gradients_flow_to_the_input_when_asked(tiny_rn):
    pixels = torch.randn(1, 3, 64, 64, requires_grad=True)
    acts = record(tiny_rn, pixels, "neurons", grad=True, reduce="mean")
    acts["visual.layer4.1.act3:input"][0, 5].backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


# ----------------------------------------------------------------- the caller's train mode


def test_evaluating_gives_every_submodule_its_own_mode_back():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout())
    net.train()
    net[1].eval()  # a caller's mix: a BatchNorm frozen inside a training model
    with evaluating(net):
        assert not any(module.training for module in net.modules())
    assert [module.training for module in net.modules()] == [True, True, False, True]


def test_record_runs_a_training_model_in_eval_mode_and_gives_its_mode_back(tiny_rn):
    pixels = torch.randn(3, 3, *tiny_rn.preprocess.image_size, generator=torch.Generator().manual_seed(0))
    expected = record(tiny_rn, pixels, "neurons")  # eval mode, as loaded
    with training(tiny_rn.module):  # as a freshly built open_clip model is
        batch = record(tiny_rn, pixels, "neurons", edits=[zero_units("visual.layer3.0", [0])])
        alone = record(tiny_rn, pixels[:1], "neurons")
        with Recorder(tiny_rn, "neurons") as recorder:
            ran = recorder.run(pixels)
    layer = tiny_rn.resolve_layer("neurons")
    assert torch.allclose(alone[layer], expected[layer][:1], atol=1e-5)  # not normalised by its batch's statistics
    assert torch.allclose(ran[layer], expected[layer], atol=1e-5)
    assert not torch.allclose(batch[layer], expected[layer], atol=1e-5)  # the edit applied, in eval mode too


def test_record_runs_a_plain_module_in_eval_mode():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    pixels = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with training(net):
        batch, alone = record(net, pixels, ["1"])["1"], record(net, pixels[:1], ["1"])["1"]
    assert torch.allclose(batch[:1], alone, atol=1e-6)


def test_a_forward_of_your_own_inside_a_recorder_runs_in_your_mode(tiny_rn):
    bn = tiny_rn.module.visual.bn1
    before = bn.running_mean.clone()
    tiny_rn.module.train()
    try:
        with Recorder(tiny_rn, "neurons"):
            tiny_rn.encode_images(torch.randn(2, 3, *tiny_rn.preprocess.image_size))
    finally:
        tiny_rn.module.eval()
    assert not torch.equal(bn.running_mean, before)  # your forward, your mode: train mode updates BatchNorms


def test_record_takes_its_model_by_name_too(tiny_rn):
    pixels = torch.randn(1, 3, *tiny_rn.preprocess.image_size, generator=torch.Generator().manual_seed(0))
    layer = tiny_rn.resolve_layer("neurons")
    assert torch.equal(record(model=tiny_rn, images=pixels, layers="neurons")[layer],
                       record(tiny_rn, pixels, "neurons")[layer])
