"""Feature visualization: parameterizations, transforms, the loop's guarantees, batching, the CLI,
and behaviour on the bundled mini CLIP (renders beat dataset examples; zero-shot reads the concept;
facets steer)."""

from __future__ import annotations

import io
import json
import statistics
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from typer.testing import CliRunner

from tests.helpers import hook_count
from neuronscope.activations import record, spatial_max
from neuronscope.cli import app
from neuronscope.models import load_model
from neuronscope.objectives import Context, channel, l2
from neuronscope.visualize import (
    CropOrPad,
    FFTImage,
    Jitter,
    Pad,
    RandomAffine,
    RenderConfig,
    Transforms,
    redirect_relus,
    redirected_relu,
    render,
    render_units,
    make_param,
    standard_transforms,
)
from neuronscope.visualize import facets

# --------------------------------------------------------------------------- pieces


def test_fft_image_starts_near_grey_and_alpha_adds_a_channel():
    generator = torch.Generator().manual_seed(0)
    image = FFTImage(2, (32, 48), generator=generator)()
    assert image.shape == (2, 3, 32, 48)
    assert (image - 0.5).abs().mean() < 0.1  # faint 1/f noise around grey
    assert FFTImage(1, (16, 16), alpha=True)().shape == (1, 4, 16, 16)


@pytest.mark.parametrize("side", [64, 224, 288])
def test_fft_image_has_lucids_scale_at_every_size(side):
    """Lucid's spectrum times sqrt(H*W) through TensorFlow's irfft2d (which divides by H*W) is an orthonormal
    inverse: the raw image's std at init is about 0.02 whatever the size (Lucid at 224 px: 0.019), not
    sqrt(H*W) times that (a saturated start, and a step size that grows with the image)."""
    raw = FFTImage(4, (side, side), generator=torch.Generator().manual_seed(0)).raw().detach()
    assert 0.012 < float(raw.std()) < 0.03


def test_a_low_resolution_parameterization_is_upsampled_and_holds_no_finer_detail():
    low = make_param("fft", 2, (64, 48), param_size=16, sd=0.5, generator=torch.Generator().manual_seed(0))
    full = make_param("fft", 2, (64, 48), sd=0.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        image, reference = low(), full()
    assert image.shape == reference.shape == (2, 3, 64, 48) and low.inner.size == (16, 12)

    def neighbour_difference(x: torch.Tensor) -> float:  # high-frequency energy: neighbouring pixels' squared step
        return float(x.diff(dim=-1).square().mean() + x.diff(dim=-2).square().mean())

    # Each low-resolution pixel spans 4 x 4 image pixels, so steps between neighbours are about 4x smaller.
    assert neighbour_difference(image) < neighbour_difference(reference) / 4
    assert isinstance(make_param("fft", 1, (32, 32), param_size=32), FFTImage)  # its own size: no wrapper
    for wrong in (2, 40):
        with pytest.raises(ValueError, match="only ever upsampled"):
            make_param("fft", 1, (32, 32), param_size=wrong)


def test_transforms_keep_dtype_and_device_and_standard_amounts_scale_with_size():
    images = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    # "meta" stands in for a GPU on a CPU-only machine: a transform that made a tensor on the CPU would fail
    # to combine with it or return a CPU tensor.
    for batch in (images, torch.empty(2, 3, 64, 64, device="meta")):
        for transform in (Jitter(3), RandomAffine([0.9], [5]), CropOrPad((50, 70)), standard_transforms(64)):
            out = transform(batch)
            assert out.dtype == batch.dtype and out.device == batch.device
    assert Jitter(3)(images).shape == (2, 3, 61, 61)
    assert CropOrPad((50, 70))(images).shape == (2, 3, 50, 70)
    small, large = standard_transforms(64), standard_transforms(224)
    assert (small[0].pad, small[0].jitter, large[0].pad, large[0].jitter) == (3, (2, 1), 12, (8, 4))
    rn50x4 = standard_transforms(288)  # Lucid's pixels from 224 px up, as the paper rendered RN50x4
    assert (rn50x4[0].pad, rn50x4[0].jitter) == (12, (8, 4))
    assert (min(small[0].scales), max(small[0].scales), min(small[0].angles)) == (0.9, 1.1, -10)
    assert (standard_transforms(64, jitter=3)[0].jitter, standard_transforms(64, jitter=0)[0].jitter) == ((3, 1), (0, 0))
    assert torch.equal(standard_transforms(64, pad=0, jitter=0, scales=[1], angles=[0])(images), images)  # all off
    assert small(images).shape == (2, 3, 64 + 6 - 3, 64 + 6 - 3)  # padded by 3 a side, cropped by 2 and 1
    assert standard_transforms(64, out=(64, 60))(images).shape == (2, 3, 64, 60)


def test_jitters_folded_into_the_affine_resample_are_the_crops_around_it():
    """Pad -> RandomAffine(jitter=(8, 4)) is Pad -> Jitter(8) -> RandomAffine -> Jitter(4), draw for draw:
    the crops are translations of the one resample's grid (the padding covers what the first crop cuts)."""
    images = torch.rand(5, 3, 64, 64, dtype=torch.float64)
    scales, angles = [0.9, 1.0, 1.1], [-10, 0, 10]

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(k) for k in range(5)]

    cropped = Transforms(Pad(12), Jitter(8), RandomAffine(scales, angles), Jitter(4)).use_generators(generators())
    folded = Transforms(Pad(12), RandomAffine(scales, angles, jitter=(8, 4))).use_generators(generators())
    torch.testing.assert_close(folded(images), cropped(images), atol=1e-12, rtol=0)


@pytest.mark.parametrize("window", [(64, 64), (63, 66), (40, 67)])
def test_padding_and_window_folded_into_the_affine_resample_are_the_pad_and_crop_around_it(window):
    """RandomAffine(pad=, size=) is Pad -> RandomAffine -> CropOrPad(size), draw for draw, for a window within
    the 67 px the jitters leave: the grey border is where the resample reads outside the image, the window
    which pixels it computes."""
    images = torch.rand(5, 3, 64, 64, dtype=torch.float64)
    scales, angles = [0.9, 1.0, 1.1], [-10, 0, 10]

    def generators() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(k) for k in range(5)]

    materialised = Transforms(Pad(3), RandomAffine(scales, angles, jitter=(2, 1)), CropOrPad(window))
    folded = Transforms(RandomAffine(scales, angles, jitter=(2, 1), pad=3, size=window))
    torch.testing.assert_close(folded.use_generators(generators())(images),
                               materialised.use_generators(generators())(images), atol=1e-12, rtol=0)


def test_random_transforms_draw_each_image_from_its_own_generator():
    """Image i's transform depends on its own generator only, not on which images share its batch."""
    images = torch.rand(3, 3, 32, 32)

    def transformed(keys: list[int], batch: torch.Tensor) -> torch.Tensor:
        stack = standard_transforms(32).use_generators([torch.Generator().manual_seed(k) for k in keys])
        return stack(batch)

    together = transformed([5, 6, 7], images)
    alone = transformed([7], images[2:])
    assert torch.allclose(together[2:], alone, atol=1e-6)
    same = images[:1].expand(3, -1, -1, -1)  # one image three times: only the draws can tell them apart
    drawn = transformed([5, 6, 7], same)
    assert not torch.allclose(drawn[0], drawn[1], atol=1e-3) and not torch.allclose(drawn[1], drawn[2], atol=1e-3)
    twice = transformed([5, 5], same[:2])
    assert torch.equal(twice[0], twice[1])  # one key, one sequence of draws


def test_redirected_relu_lets_a_dead_unit_take_off_and_keeps_a_live_gradient():
    dead = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    (-redirected_relu(dead).sum()).backward()  # loss = -objective: the objective wants the output up
    assert torch.equal(dead.grad, torch.tensor([[-1.0, -1.0]]))  # descent pushes the input up
    live = torch.tensor([[1.0, -2.0]], requires_grad=True)
    (-redirected_relu(live).sum()).backward()
    assert torch.equal(live.grad, torch.tensor([[-1.0, 0.0]]))  # the ordinary ReLU gradient


def test_the_facet_term_reads_a_redirected_relu_as_the_render_does():
    """During the redirect steps, relu(df/dg) must be the gradient the render's loss (-f) gets, negated.

    Here the unit is a dead ReLU of g - 10 (g > 0): the redirected gradient lets f rise through it, so
    the unit uses all of g and the facet term is positive. Differentiating +f instead reads the
    redirection backwards and weighs nothing.
    """
    g = torch.rand(2, 3, 2, 2, requires_grad=True) + 0.1
    ctx = Context({"g": g, "u": redirected_relu(g - 10)}, torch.full((2, 3, 4, 4), 0.5))
    probe = facets.FacetProbe("x", "m", ["g"], {"g": torch.ones(3, 2, 2)}, {"g": 0.0}, {"g": 1.0}, "key")
    objective = facets.facet_objective(channel("u", 0), probe, 1.0)
    unit = channel("u", 0)(ctx)  # 0: the unit is dead
    expected = g[:, 0].flatten(1).sum(dim=1) / 4  # d(mean of u[:, 0])/dg = 1/4 on channel 0 only
    # OpenAI's facet code weighs each of n probe layers 5 / n: 5 for this one layer.
    assert torch.allclose(objective(ctx) - unit, facets.FACET_REFERENCE_LAYERS * expected)
    two_layers = facets.FacetProbe("x", "m", ["g", "g2"], {"g": torch.ones(3, 2, 2), "g2": torch.zeros(3, 2, 2)},
                                   {"g": 0.0, "g2": 0.0}, {"g": 1.0, "g2": 1.0}, "key")
    g2 = torch.rand(2, 3, 2, 2, requires_grad=True)  # a second probe layer the unit reads, weighed 0 by its probe
    ctx = Context({"g": g, "g2": g2, "u": redirected_relu(g + 0 * g2 - 10)}, torch.full((2, 3, 4, 4), 0.5))
    objective = facets.facet_objective(channel("u", 0), two_layers, 1.0)
    assert torch.allclose(objective(ctx) - unit, facets.FACET_REFERENCE_LAYERS / 2 * expected)


def test_redirect_relus_is_undone_on_exit(tiny_rn):
    relus = [m for m in tiny_rn.module.modules() if isinstance(m, torch.nn.ReLU)]
    with redirect_relus(tiny_rn.module) as switched:
        assert switched == len(relus) > 0
        assert all("forward" in vars(m) for m in relus)
    assert not any("forward" in vars(m) for m in relus)


def test_render_is_seeded_leaves_weights_frozen_and_untouched(tiny_rn):
    state = {k: v.clone() for k, v in tiny_rn.module.state_dict().items()}
    config = RenderConfig(steps=4, seed=3)
    first = render(tiny_rn, "neurons:5", batch=2, config=config)
    second = render(tiny_rn, "neurons:5", batch=2, config=config)
    assert torch.equal(first.images, second.images)
    assert not torch.equal(first.images, render(tiny_rn, "neurons:5", batch=2,
                                                config=RenderConfig(steps=4, seed=4)).images)
    assert all(torch.equal(v, tiny_rn.module.state_dict()[k]) for k, v in state.items())
    assert not any(p.requires_grad for p in tiny_rn.module.parameters())
    assert first.curve.shape == (4, 2) and first.config == config
    assert first.images.min() >= 0 and first.images.max() <= 1


@pytest.mark.parametrize("settings, message", [
    (dict(transforms="standrad"), "transforms 'standrad': use 'standard' or 'none'"),
    (dict(param="ftt"), "param 'ftt': use 'fft' or 'pixel'"),
    (dict(steps=0), "steps 0: a render takes at least 1 step"),
    (dict(lr=0.0), "lr 0.0: Adam needs a positive learning rate"),
    (dict(size=0), "size 0: give a positive side"),
    (dict(param_size=-4), "param_size -4: give a positive side"),
])
def test_a_render_config_that_cannot_run_is_refused_when_made(settings, message):
    """Not in the loop: a misspelt transforms ran with none, steps=0 failed after the render."""
    with pytest.raises(ValueError, match=message):
        RenderConfig(**settings)


def test_a_unit_starts_alike_whatever_its_batch_mates(tiny_rn):
    """Each image is seeded by its unit: in another pass (units 2, 3 instead of 0-3) unit 2 starts from the
    same image and sees the same transforms, so its first steps agree to float rounding. Only the first
    few: a batched convolution rounds differently from a smaller batch's, and Adam amplifies that over the
    steps (on the mini CLIP 1e-6 at 16 steps, 0.15 at 64), so the final image is reproduced exactly only by
    the same pass composition."""
    config = RenderConfig(steps=4, seed=1)
    full = render_units(tiny_rn, "neurons", [0, 1, 2, 3], batch_size=4, config=config)
    resumed = render_units(tiny_rn, "neurons", [2, 3], batch_size=4, config=config)
    assert torch.allclose(full[2].image, resumed[0].image, atol=1e-6, rtol=0)
    assert not torch.allclose(full[2].image, full[3].image, atol=1e-3)
    again = render_units(tiny_rn, "neurons", [0, 1, 2, 3], batch_size=4, config=config)
    assert all(torch.equal(a.image, b.image) for a, b in zip(full, again))  # the same pass: bit for bit


def test_a_renders_objective_is_its_finished_images_unit_value(tiny_rn):
    """What the atlas stores is the unit's channel on the stored image as the model sees it, not the curve's
    last value (the image before the last update, on a random transformed view, with penalties) nor a
    diversity term."""
    from neuronscope.activations import spatial_mean
    from neuronscope.visualize import render_diverse

    config = RenderConfig(steps=3, l2=0.5)
    renders = [*render_units(tiny_rn, "neurons", [3, 5], config=config),
               *render_diverse(tiny_rn, "neurons", 7, 2, config=config)]
    images = torch.stack([r.image for r in renders])
    layer = tiny_rn.layer_aliases["neurons"]
    means = spatial_mean(record(tiny_rn, tiny_rn.preprocess.normalize(images), [layer])[layer])
    expected = means[torch.arange(4), torch.tensor([3, 5, 7, 7])]
    torch.testing.assert_close(torch.tensor([r.objective for r in renders]), expected, atol=1e-5, rtol=1e-5)
    assert all(abs(r.objective - float(r.curve[-1])) > 1e-4 for r in renders)


def test_a_smaller_canvas_meets_the_model_by_padding_not_resizing(tiny_rn):
    """A 40 px canvas reaches the 64 px model as itself in the centre of a grey border (12 px a side)."""
    inputs = []
    hook = tiny_rn.image_module.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach()))
    try:
        result = render(tiny_rn, "neurons:1", config=RenderConfig(steps=2, size=40, transforms="none"))
    finally:
        hook.remove()
    assert result.images.shape == (1, 3, 40, 40)
    seen = inputs[-1]  # the last forward: the finished image, scored
    assert seen.shape == (1, 3, 64, 64)
    grey = tiny_rn.preprocess.normalize(torch.full((1, 3, 64, 64), 0.5))
    border = torch.ones(64, 64, dtype=torch.bool)
    border[12:52, 12:52] = False
    assert torch.allclose(seen[..., border], grey[..., border])
    assert torch.allclose(seen[..., 12:52, 12:52], tiny_rn.preprocess.normalize(result.images), atol=1e-6)


def test_render_units_batches_one_unit_per_image_in_order(tiny_rn):
    passes = []
    renders = render_units(tiny_rn, "neurons", [7, 3, 9], batch_size=2, config=RenderConfig(steps=3),
                           on_pass=lambda batch: passes.append([r.unit for r in batch]))
    assert passes == [[7, 3], [9]]
    assert [(r.unit, r.kind, r.index) for r in renders] == [(7, "plain", 0), (3, "plain", 0), (9, "plain", 0)]
    assert renders[0].curve.shape == (3,) and renders[0].image.shape == (3, 64, 64)
    assert Image.open(io.BytesIO(renders[0].png())).size == (64, 64)


class _OpCounter(TorchDispatchMode):
    """Counts aten ops run (forward and backward), a clock-free measure of work per render."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def test_200_renders_leave_no_hooks_and_do_the_same_work_each_time(tiny_rn):
    """Nothing accumulates: hooks, switched ReLUs and the ops of a render are the same after 200 renders."""
    hooks = hook_count(tiny_rn.module)
    config = RenderConfig(steps=1, redirect_steps=1)  # one redirected step and the final score: all a render does
    objective = channel("visual.layer1.0", [1, 2])  # an early layer: the forward stops there, renders are cheap

    def counted() -> Counter:
        with _OpCounter() as counter:
            render(tiny_rn, objective, batch=2, config=config)
        return counter.ops

    render(tiny_rn, objective, batch=2, config=config)  # a model's first render also reads its layouts (cached)
    first = counted()
    for _ in range(197):
        render(tiny_rn, objective, batch=2, config=config)
    assert counted() == first
    assert hook_count(tiny_rn.module) == hooks
    assert not any("forward" in vars(m) for m in tiny_rn.module.modules())


# --------------------------------------------------------------------------- the mini CLIP

MINI_CLIP_CARD = Path(__file__).parents[1] / "src/neuronscope/data/mini_clip/mini_clip_card.json"
#: Lucid's recipe (512 steps, lr 0.05, its standard transforms scaled to 64 px) with a steeper spectrum
#: (decay power 1.25 instead of 1): the setting of benchmarks/render_quality.py's sweep whose renders the
#: zero-shot head names as the concept most often.
MINI_CLIP_RENDER = dict(decay_power=1.25)
SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def mini_clip():
    return load_model("mini-clip", weights="bundled", precision="fp32")


@pytest.fixture(scope="module")
def card_units():
    multimodal = json.loads(MINI_CLIP_CARD.read_text())["multimodal"]
    return multimodal["layer"], [(u["unit"], u["concept"]) for u in multimodal["units"]]


@pytest.fixture(scope="module")
def card_renders(mini_clip, card_units):
    """The card's units rendered with 6 seeds, each read back through PNG and the model's preprocessing:
    {seed: pixels [11, 3, 64, 64]}."""
    layer, units = card_units
    pixels = {}
    for seed in SEEDS:
        renders = render_units(mini_clip, layer, [u for u, _ in units], batch_size=16,
                               config=RenderConfig(seed=seed, **MINI_CLIP_RENDER))
        pixels[seed] = mini_clip.preprocess.to_pixels([Image.open(io.BytesIO(r.png())) for r in renders])
    return pixels


def test_mini_clip_renders_beat_the_best_held_out_example(mini_clip, card_units, card_renders):
    """Units tried = the card's units first: 10 of them. The render (seed 0), saved as PNG and read back,
    reaches a higher max-over-space activation than the unit's best image in the held-out split."""
    from neuronscope.world.split import load_test_split

    layer, units = card_units
    tried = [u for u, _ in units][:10]
    split = load_test_split()
    dataset = record(mini_clip, mini_clip.preprocess.normalize(split.pixels()), [layer], batch_size=512)[layer]
    best = spatial_max(dataset)[0].max(dim=0).values  # [C]
    rendered = spatial_max(record(mini_clip, mini_clip.preprocess.normalize(card_renders[0][:10]), [layer])[layer])[0]
    wins = [float(rendered[i, unit]) > float(best[unit]) for i, unit in enumerate(tried)]
    assert sum(wins) >= 9, f"renders beat the best example for {sum(wins)} of 10 units: {dict(zip(tried, wins))}"


def test_mini_clip_zero_shot_reads_the_concept_from_its_units_render(mini_clip, card_units, card_renders):
    """The card's 11 multimodal units x 6 seeds, zero-shot over the world's 43 concepts ("a {}"): the concept is
    the top class for at least 0.4 of the renders, median concept rank at most 3 (chance: a share of 1/43, a
    median rank of about 22).

    Measured with MINI_CLIP_RENDER: 4, 5, 4, 7, 4 and 5 of 11 for seeds 0-5 (a share of 0.44), median rank 2.5;
    before the padding and the crop to the input were folded into the resample (equal to 1e-12 in float64),
    6, 5, 6, 6, 4 and 5 (0.48). Six seeds, because one seed's count moves by one to three with float
    rounding alone: the spread of this share is about +-0.05. For scale: the model names its own held-out
    drawings 0.52 of the time (the card), so a render is named about as often as a real drawing. The issue
    asks for half: not reached with the FFT parameterization at Lucid's scale (over the same six seeds:
    Lucid's defaults 0.39, decay power 1.5 0.45, with lr 0.03 0.47; benchmarks/RESULTS.md).
    """
    from neuronscope.probing.zeroshot import ZeroShotClassifier
    from neuronscope.world.concepts import ZEROSHOT_TEMPLATE, concept_names

    _, units = card_units
    names = concept_names()
    classifier = ZeroShotClassifier.build(mini_clip, names, ZEROSHOT_TEMPLATE)
    shares, ranks = [], []
    for seed in SEEDS:
        probabilities = classifier.probabilities(card_renders[seed])  # [11, 43]
        concept = torch.tensor([names.index(c) for _, c in units])
        target = probabilities.gather(1, concept[:, None])
        seed_ranks = (probabilities > target).sum(dim=1) + 1
        ranks.extend(seed_ranks.tolist())
        shares.append(float((seed_ranks == 1).float().mean()))
    mean_share, median_rank = statistics.mean(shares), statistics.median(ranks)
    print(f"zero-shot: mean top-1 share {mean_share:.2f} over seeds {shares}, median concept rank {median_rank} "
          f"of {len(names)}")
    assert mean_share >= 0.4, (shares, ranks)
    assert median_rank <= 3, (shares, ranks)


def test_a_faceted_render_raises_the_facet_probe_score(mini_clip, card_units):
    """The built-in "text" facet: its probe separates words from drawings, and the faceted render of each
    unit scores higher on it than the plain render of the same unit (same seed, steps and lr)."""
    layer, units = card_units
    probe = facets.train_facet_probe(mini_clip, facets.builtin_facet("text", mini_clip))
    assert probe.layers == ["visual.layer3.0", "visual.layer3.1"]
    assert min(probe.accuracy.values()) > 0.9
    chosen = [u for u, _ in units][:3]
    config = RenderConfig(steps=64, lr=facets.FACET_LR, seed=0)
    plain = render_units(mini_clip, layer, chosen, config=config)
    faceted = facets.render_faceted(mini_clip, layer, chosen, probe, config=config)
    assert [r.kind for r in faceted] == ["facet:text"] * 3
    plain_score = probe.score(mini_clip, torch.stack([r.image for r in plain]))
    faceted_score = probe.score(mini_clip, torch.stack([r.image for r in faceted]))
    assert (faceted_score > plain_score).all(), (plain_score, faceted_score)


def _tiny_probe(model) -> facets.FacetProbe:
    """A probe of bright vs dark noise on a tiny model (its only probe layer: visual.layer3.0)."""
    images = facets.FacetImages("x", torch.rand(6, 3, 64, 64), torch.rand(6, 3, 64, 64) * 0.2, ["a"] * 6, ["b"] * 6)
    return facets.train_facet_probe(model, images, max_iter=50)


def test_one_grey_forward_gives_units_grid_and_firing_order(tiny_rn):
    """layer_geometry answers what the CLI (units), the atlas (grid) and the facet check (order) ask."""
    from neuronscope.activations import record
    from neuronscope.activations.geometry import layer_geometry

    geometry = layer_geometry(tiny_rn, ["neurons", "visual.layer3.0"])
    neurons = tiny_rn.resolve_layer("neurons")
    assert list(geometry) == ["visual.layer3.0", neurons]  # firing order, not the order asked
    acts = record(tiny_rn, torch.zeros(1, 3, 64, 64), [neurons])[neurons]
    assert (geometry[neurons].units, geometry[neurons].grid) == (acts.shape[1], tuple(acts.shape[2:]))
    assert tiny_rn.layer_shape("neurons") == (geometry[neurons].units, geometry[neurons].grid)


def test_a_layers_shape_costs_one_forward_however_many_ask(tiny_rn, monkeypatch):
    """``neuronscope visualize`` asked layer_shape, and render_units its own copy layer_size: a grey forward
    each (the run's writer a third). The answer is the model's: LoadedModel.layer_shape keeps it (a function in
    visualize wrote the model's private cache before), and a fresh model (dataclasses.replace) asks anew."""
    import dataclasses

    from neuronscope.activations import geometry

    forwards = []
    layer_geometry = geometry.layer_geometry
    monkeypatch.setattr(geometry, "layer_geometry",
                        lambda model, layers: forwards.append(len(layers)) or layer_geometry(model, layers))
    model = dataclasses.replace(tiny_rn)  # a fresh model: another test may have asked tiny_rn already
    n_units, grid = model.layer_shape("neurons")
    renders = render_units(model, "neurons", [0, n_units - 1], batch_size=2, config=RenderConfig(steps=1))
    assert [r.unit for r in renders] == [0, n_units - 1]
    assert model.layer_shape(model.resolve_layer("neurons")) == (n_units, grid) and forwards == [1]
    assert dataclasses.replace(model).layer_shape("neurons") == (n_units, grid) and forwards == [1, 1]


def test_the_readmes_maps_line_reads_one_layer_of_records_dict(tiny_rn):
    """README: ``layer_geometry(model, [layer])[layer].maps(acts[layer])`` after ``acts = record(...)`` (the
    snippet passed the whole dict and was not imported: AttributeError 'dict' has no 'ndim')."""
    from neuronscope.activations import layer_geometry, record

    acts = record(tiny_rn, torch.zeros(2, 3, 64, 64), ["neurons", "visual.layer3.0"])
    layer = tiny_rn.resolve_layer("neurons")
    maps = layer_geometry(tiny_rn, [layer])[layer].maps(acts[layer])
    assert torch.equal(maps, acts[layer])  # a channels-first map layer reads as itself
    with pytest.raises(TypeError, match=r"pass acts\[layer\]"):
        layer_geometry(tiny_rn, [layer])[layer].maps(acts)


def test_a_channels_last_layer_has_its_channels_as_units_on_its_grid():
    """fc1 runs on [B, H, W, C] = [B, 3, 4, 12]: 12 units on 3x4 (rows read as units gave 3 on 4x12)."""
    from neuronscope.activations import layer_geometry
    from tests.helpers import channels_last_model

    model = channels_last_model()
    geometry = layer_geometry(model, ["fc1", "conv"])
    assert [(name, g.units, g.grid, g.layout) for name, g in geometry.items()] == [
        ("conv", 6, (3, 4), "channels_first"), ("fc1", 12, (3, 4), "channels_last")]
    assert model.layer_shape("fc1") == (12, (3, 4))


def test_the_score_is_the_finished_images_and_may_name_a_layer_by_its_alias(tiny_rn):
    """``final`` is the score of the finished images, untransformed (not the curve's last, transformed step);
    the score may write the objective's layer by an alias; a layer the objective does not read is refused."""
    canonical = "visual.layer4.1.act3:input"
    objective = channel(canonical, [3, 7]) - 0.1 * l2()
    result = render(tiny_rn, objective, batch=2, config=RenderConfig(steps=2), score=channel("neurons", [3, 7]))
    means = record(tiny_rn, tiny_rn.preprocess.normalize(result.images), [canonical], reduce="mean")[canonical]
    torch.testing.assert_close(result.final, means[torch.arange(2), torch.tensor([3, 7])], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="reads layers the objective"):
        render(tiny_rn, objective, batch=2, config=RenderConfig(steps=1), score=channel("visual.layer3.0", 0))


def test_convnext_mlp_units_are_its_channels_to_render_and_attribute():
    """open_clip's ConvNeXt runs its timm blocks' MLPs channels last: fc1 of the last stage has 3072 units
    on 7x7 for the atlas, a render and a text attribution (each read 7 rows as its units)."""
    from neuronscope.errors import UnitsError
    from neuronscope.probing.attribution import attribute_texts, default_image_sample

    model = load_model("convnext_tiny", weights="random")
    layer = "visual.trunk.stages.3.blocks.2.mlp.fc1"
    assert model.layer_shape(layer) == (3072, (7, 7))
    result = render(model, channel(layer, [0, 5]), batch=2, config=RenderConfig(steps=1, transforms="none"))
    means = record(model, model.preprocess.normalize(result.images), [layer], reduce="mean")[layer]  # [2, 3072]
    torch.testing.assert_close(result.final, means[torch.arange(2), torch.tensor([0, 5])])
    with pytest.raises(UnitsError, match="the layer has 3072 units"):
        render(model, channel(layer, 3072), config=RenderConfig(steps=1))
    attribution = attribute_texts(model, layer, ["a dog"], default_image_sample(2, preprocess=model.preprocess))
    assert attribution.scores.shape == (1, 3072)

def test_probe_round_trips_through_bytes(tiny_rn):
    probe = _tiny_probe(tiny_rn)
    assert probe.layers == ["visual.layer3.0"]  # no registry entry: every other block of layer3
    again = facets.FacetProbe.from_bytes(probe.to_bytes())
    assert again.key == probe.key and again.layers == probe.layers
    assert all(torch.equal(again.weights[k], probe.weights[k]) for k in probe.layers)
    assert probe.key != facets.probe_cache_key(tiny_rn.key, probe.layers, ["c"] * 6, ["b"] * 6)
    assert probe.key != facets.probe_cache_key(tiny_rn.key, probe.layers, ["b"] * 6, ["a"] * 6)  # sides swapped


def test_faceted_render_at_the_probe_layer_in_whole_units_and_refused_before_it(tiny_rn):
    """The unit's layer may be the last probe layer (both recorders hook it); a pass holds every strength
    of its units (a stored pass leaves no unit half done); a layer before a probe layer is refused."""
    from neuronscope.errors import NeuronscopeError

    probe = _tiny_probe(tiny_rn)
    passes = []
    renders = facets.render_faceted(tiny_rn, "visual.layer3.0", [4, 5, 6], probe, strengths=[0.5, 1.0, 5.0],
                                    batch_size=7, config=RenderConfig(steps=2),
                                    on_pass=lambda batch: passes.append([(r.unit, r.index) for r in batch]))
    assert passes == [[(u, k) for u in (4, 5) for k in range(3)], [(6, 0), (6, 1), (6, 2)]]
    assert [r.extra["strength"] for r in renders[:3]] == [0.5, 1.0, 5.0]
    with pytest.raises(NeuronscopeError, match="the facet probe reads visual.layer3.0, which runs after visual.layer2.0: render a unit of visual.layer3.0 or"):
        facets.render_faceted(tiny_rn, "visual.layer2.0", [0], probe, config=RenderConfig(steps=1))


def test_facet_strengths_are_the_numbers_written_not_float32_noise():
    """The strengths are stored as each render's extra and printed in its description: 0.1, not float32's
    0.10000000149011612 (nor float64's 1.3250000000000002)."""
    ramp = facets.facet_strengths(9)
    assert ramp == [0.1, 0.7125, 1.325, 1.9375, 2.55, 3.1625, 3.775, 4.3875, 5.0]
    assert all(type(s) is float for s in ramp)
    assert facets.facet_strengths(1) == [5.0] and facets.facet_strengths(3, 0.0, 1.0) == [0.0, 0.5, 1.0]


def test_facet_images_and_probes_have_short_reprs():
    images = facets.FacetImages("text", torch.rand(200, 3, 64, 64), torch.rand(150, 3, 64, 64), ["a" * 64] * 200,
                                ["b" * 64] * 150)
    assert repr(images) == "FacetImages('text', 200 facet and 150 generic images of 64x64 px)"
    layers = [f"visual.transformer.resblocks.{i}" for i in range(4, 13)]
    probe = facets.FacetProbe("text", "mini-clip@bundled", layers, {layer: torch.randn(50, 768) for layer in layers},
                              dict.fromkeys(layers, 0.0), dict.fromkeys(layers, 1.0), "k" * 24)
    assert repr(probe) == ("FacetProbe('text' on mini-clip@bundled, 9 probe layers: visual.transformer.resblocks.4 "
                           "... visual.transformer.resblocks.12)")


def test_render_results_have_short_reprs(tiny_rn):
    result = render(tiny_rn, channel("neurons", [3, 4]), batch=2, config=RenderConfig(steps=2))
    assert repr(result) == f"RenderResult({result.description}, 2 images 64x64, 2 steps)"
    (unit,) = render_units(tiny_rn, "neurons", [5], config=RenderConfig(steps=2))
    assert repr(unit).startswith("UnitRender(neurons unit 5, plain #0, objective ")


def test_probe_layers_default_by_family_and_say_what_to_register_when_none_fits(tiny_rn, tiny_vit):
    """A ResNet's default is every other block of layer3, a ViT's the middle third of its blocks; a conv net
    without a layer3 (ConvNeXt) was told "no layer matches 'visual.layer3.*'", a layer it never named."""
    from dataclasses import replace

    from neuronscope.activations.names import resolve_layers
    from neuronscope.errors import NeuronscopeError
    from tests.helpers import channels_last_model

    def without_entry(model):
        return replace(model, spec=replace(model.spec, probe_layers=()))

    def layers(model, pattern):
        return resolve_layers(model.module, [pattern], model.layer_aliases, model_key=model.key)

    assert facets.probe_layers(without_entry(tiny_rn)) == layers(tiny_rn, "visual.layer3.*")[::2]
    blocks = layers(tiny_vit, "visual.transformer.resblocks.*")
    assert facets.probe_layers(without_entry(tiny_vit)) == blocks[len(blocks) // 3: 2 * len(blocks) // 3 + 1]
    convnext_like = channels_last_model()
    assert convnext_like.family == "conv"
    with pytest.raises(NeuronscopeError, match="has no facet-probe layers; register them as ModelSpec.probe_layers"):
        facets.probe_layers(convnext_like)


def test_a_faceted_render_keeps_the_papers_lr_and_l2_over_a_callers_config(tiny_rn, monkeypatch):
    """RenderConfig(steps=1) alone used to render at lr 0.05; the facet's lr applies over it, and its penalty is
    the paper's: 10 x the mean squared distance from grey (not RenderConfig.l2's RMS, 60-120x stronger near
    grey, which left faceted renders almost grey)."""
    from neuronscope.objectives import Context

    probe = _tiny_probe(tiny_rn)
    used = []
    real_render = facets.render

    def spy(*args, config, **kwargs):
        used.append((config, args[1]))
        return real_render(*args, config=config, **kwargs)

    monkeypatch.setattr(facets, "render", spy)
    facets.render_faceted(tiny_rn, "visual.layer3.0", [4], probe, config=RenderConfig(steps=1, seed=3))
    facets.render_faceted(tiny_rn, "visual.layer3.0", [4], probe, config=RenderConfig(steps=1, l2=0.5),
                          settings=facets.FacetSettings(lr=0.03, l2=0.0))
    assert [(c.steps, c.seed, c.lr, c.l2) for c, _ in used] == [(1, 3, 0.02, 0.0), (1, 0, 0.03, 0.5)]
    paper, without = (objective for _, objective in used)
    assert str(paper).endswith("- 10 * L2 [image - 0.5] * L2 [image - 0.5]") and "L2" not in str(without)
    image = torch.full((1, 3, 8, 8), 0.5)
    image[..., :4] = 0.7  # mean squared distance from grey 0.02, RMS 0.1414
    assert torch.allclose(facets.FacetSettings().penalty()(Context({}, image, 0)), torch.tensor([0.2]))


# --------------------------------------------------------------------------- the command line

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, ["visualize", "--model", "tiny-rn", "--weights", "random", "--steps", "3", *args])


def test_cli_needs_somewhere_to_write():
    result = _invoke("--units", "0")
    assert result.exit_code == 1 and "--out ATLAS, --png DIR" in result.output


def test_cli_param_size_larger_than_the_image_is_refused(tmp_path: Path):
    result = _invoke("--units", "0", "--png", str(tmp_path), "--param-size", "65")  # tiny-rn takes 64 px
    assert result.exit_code == 1 and "at most 64" in result.output
    assert not list(tmp_path.iterdir())


def test_cli_png_and_atlas(tmp_path: Path):
    atlas = tmp_path / "atlas"
    result = _invoke("--units", "0-2,5", "--batch-size", "3", "--png", str(tmp_path / "png"), "--out", str(atlas),
                     "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {"atlas", "run_id", "model", "layers", "units", "seconds", "skipped"} <= set(payload)
    assert payload["model"] == "tiny-rn@random" and payload["layers"] == ["visual.layer4.1.act3:input"]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["0.png", "1.png", "2.png", "5.png"]
    shown = runner.invoke(app, ["show", str(atlas), "--layer", "neurons", "--unit", "5", "--json"])
    featurevis = json.loads(shown.stdout)["featurevis"]
    assert [f["kind"] for f in featurevis] == ["plain"]
    assert (atlas / featurevis[0]["path"]).is_file()
    from neuronscope.atlas import Atlas

    with Atlas(atlas, create=False) as store:
        assert store.run(payload["run_id"])["status"] == "finished"
        assert store.run(payload["run_id"])["images"] == 4
    again = _invoke("--units", "0-2,5", "--batch-size", "3", "--out", str(atlas), "--json")
    assert json.loads(again.stdout)["already_rendered"] == 4
    with Atlas(atlas, create=False) as store:  # a rerun with nothing left to do keeps the run's count
        assert store.run(payload["run_id"])["images"] == 4


def test_cli_into_an_atlas_renders_only_what_the_same_settings_have_not(tmp_path: Path, monkeypatch):
    """Killed after its first pass, the same command renders only the rest; more units add only the new ones."""
    from neuronscope.visualize import units as units_module

    atlas = tmp_path / "atlas"
    real_render = units_module.render
    calls = []

    def killed_after_first_pass(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(units_module, "render", killed_after_first_pass)
    assert _invoke("--units", "0-3", "--batch-size", "2", "--out", str(atlas)).exit_code == 130
    monkeypatch.setattr(units_module, "render", real_render)
    resumed = json.loads(_invoke("--units", "0-3", "--batch-size", "2", "--out", str(atlas), "--json").stdout)
    assert resumed["already_rendered"] == 2 and [r["unit"] for r in resumed["renders"]] == [2, 3]
    more = json.loads(_invoke("--units", "0-5", "--batch-size", "2", "--out", str(atlas), "--json").stdout)
    assert more["already_rendered"] == 4 and [r["unit"] for r in more["renders"]] == [4, 5]
    assert more["run_id"] == resumed["run_id"]
    longer = json.loads(_invoke("--units", "0", "--steps", "4", "--out", str(atlas), "--json").stdout)
    assert longer["already_rendered"] == 0 and longer["run_id"] != resumed["run_id"]  # other settings: a new run
    # another batch size composes other passes, whose renders differ by float rounding that Adam amplifies
    rebatched = json.loads(_invoke("--units", "0-3", "--batch-size", "4", "--out", str(atlas), "--json").stdout)
    assert rebatched["already_rendered"] == 0 and rebatched["run_id"] != resumed["run_id"]
    from neuronscope.visualize import store

    monkeypatch.setattr(store, "RENDER_VERSION", store.RENDER_VERSION + 1)  # the same settings give other images
    upgraded = json.loads(_invoke("--units", "0-1", "--batch-size", "2", "--out", str(atlas), "--json").stdout)
    assert upgraded["already_rendered"] == 0 and upgraded["run_id"] != resumed["run_id"]


def test_cli_records_every_option_that_changes_the_images(tmp_path: Path):
    atlas = tmp_path / "atlas"
    result = _invoke("--units", "1", "--size", "48", "--param-size", "24", "--lr", "0.03", "--l2", "0.5",
                     "--tv", "0.25", "--facet", "drawing", "--facet-strengths", "2", "--png", str(tmp_path / "png"),
                     "--out", str(atlas), "--json")
    assert result.exit_code == 0, result.output
    from neuronscope.atlas import Atlas

    with Atlas(atlas, create=False) as store:
        run = store.run(json.loads(result.stdout)["run_id"])
    command = run["command"]
    assert run["config"]["threads"] == torch.get_num_threads()  # in the key: another count is another run
    for option in ("--model tiny-rn@random", "--steps 3", "--size 48", "--param-size 24", "--lr 0.03", "--l2 0.5",
                   "--tv 0.25", "--facet drawing", "--facet-strengths 2", "--out atlas"):
        assert option in command, (option, command)
    # a CPU render depends on torch's thread count (other kernels, other rounding, which the steps amplify)
    assert command.startswith(f"neuronscope --threads {torch.get_num_threads()} visualize "), command
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["1_drawing_0.png", "1_drawing_1.png"]


def test_cli_facet_lr_and_l2_reach_the_render(tmp_path: Path, monkeypatch):
    """--lr replaces the faceted recipe's 0.02; --l2 adds the RMS penalty every render can have, beside the
    paper's squared-L2 term (10), which stays."""
    from neuronscope.visualize import facets

    seen = []

    def capture(*args, config, settings, **kwargs):
        seen.append((settings, config.lr, config.l2))
        raise KeyboardInterrupt

    monkeypatch.setattr(facets, "render_faceted", capture)
    _invoke("--units", "1", "--lr", "0.03", "--l2", "0.5", "--facet", "drawing", "--png", str(tmp_path))
    _invoke("--units", "1", "--facet", "drawing", "--png", str(tmp_path))
    assert seen == [(facets.FacetSettings(lr=0.03), 0.03, 0.5), (facets.FacetSettings(), facets.FACET_LR, 0.0)]


@pytest.mark.parametrize("args, message", [
    (("--facet", "nosuch"), "--facet nosuch: no such folder or file; built-in facets are text, drawing"),
    (("--facet", "facez/", "--generic", "."), "--facet facez/: no such folder or file; built-in facets are"),
    (("--facet", "."), "give the contrast images with --generic"),
    (("--facet", ".", "--generic", "nosuch.tar"), "--generic nosuch.tar: no such folder or file"),
    (("--facet", "text", "--generic", "."), "the built-in facet 'text' brings its own"),
    (("--generic", "."), "--generic goes with --facet"),
    (("--facet-strengths", "3"), "--facet-strengths goes with --facet"),
    (("--layer", "visual.layer2.0", "--facet", "drawing"), "the facet probe reads visual.layer3.0"),
])
def test_cli_refuses_a_bad_facet_before_it_opens_the_atlas(tmp_path: Path, args, message):
    atlas = tmp_path / "atlas"
    result = _invoke("--units", "0", *args, "--out", str(atlas))
    assert result.exit_code == 1 and message in result.output, result.output
    assert not atlas.exists()  # no run left "running"


def test_cli_a_facet_folder_without_images_leaves_no_atlas_behind(tmp_path: Path):
    """The facet's images are loaded before the atlas is opened: an empty facet folder is an error and no new,
    empty atlas is left at --out."""
    (tmp_path / "faces").mkdir()
    (tmp_path / "generic").mkdir()
    (tmp_path / "generic" / "notes.txt").write_text("not an image")
    atlas = tmp_path / "atlas"
    result = _invoke("--units", "0", "--layer", "visual.layer4.0", "--facet", str(tmp_path / "faces"),
                     "--generic", str(tmp_path / "generic"), "--out", str(atlas))
    assert result.exit_code == 1 and "faces: no images found" in result.output, result.output
    assert not atlas.exists()


def test_cli_diverse_writes_unit_k_pngs(tmp_path: Path):
    result = _invoke("--units", "4", "--diverse", "3", "--png", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4_0.png", "4_1.png", "4_2.png"]


def test_cli_diversity_weight_reaches_the_render_and_needs_diverse(tmp_path: Path, monkeypatch):
    import neuronscope.visualize as visualize

    weights = []
    original = visualize.render_diverse
    monkeypatch.setattr(visualize, "render_diverse", lambda *a, **k: weights.append(k["weight"]) or original(*a, **k))
    result = _invoke("--units", "4", "--diverse", "2", "--diversity-weight", "0.25", "--steps", "2", "--png",
                     str(tmp_path))
    assert result.exit_code == 0, result.output
    assert weights == [0.25]
    refused = _invoke("--units", "4", "--diversity-weight", "0.25", "--png", str(tmp_path))
    assert refused.exit_code == 1 and "add --diverse" in refused.output


def test_cli_facet_probe_is_cached_in_the_atlas(tmp_path: Path, monkeypatch):
    atlas = tmp_path / "atlas"
    args = ("--units", "1", "--facet", "drawing", "--out", str(atlas), "--json")
    first = _invoke(*args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["kind"] == "facet:drawing"
    trained = []
    original = facets.train_facet_probe
    monkeypatch.setattr(facets, "train_facet_probe", lambda *a, **k: trained.append(1) or original(*a, **k))
    second = _invoke(*args)
    assert second.exit_code == 0, second.output
    assert trained == []  # the second run read the probe from the atlas
    from neuronscope.atlas import Atlas

    with Atlas(atlas, create=False) as store:
        assert [a["kind"] for a in store.artifacts("tiny-rn@random", "visual.layer3.0")] == ["facet-probe"]


def test_facet_folders_are_read_like_a_scan_and_a_bad_file_is_named(tiny_rn, tmp_path: Path):
    import hashlib

    from neuronscope.errors import NeuronscopeError

    for folder, colour in (("faces", (200, 40, 40)), ("generic", (40, 40, 200))):
        (tmp_path / folder / "sub").mkdir(parents=True)
        for index in range(3):
            Image.new("RGB", (80, 48), tuple(c + index for c in colour)).save(tmp_path / folder / "sub" / f"{index}.png")
        (tmp_path / folder / "notes.txt").write_text("not an image, not listed")
    images = facets.facet_from_folders(tmp_path / "faces", tmp_path / "generic", tiny_rn)
    assert images.name == "faces" and images.facet.shape == images.generic.shape == (3, 3, 64, 64)
    def hashes(folder: str) -> list[str]:
        return [hashlib.sha256((tmp_path / folder / "sub" / f"{i}.png").read_bytes()).hexdigest() for i in range(3)]

    assert (images.facet_hashes, images.generic_hashes) == (hashes("faces"), hashes("generic"))
    assert images.facet[:, 0].mean() > images.facet[:, 2].mean()  # red facet, blue generic
    (tmp_path / "faces" / "sub" / "3.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(NeuronscopeError, match=r"3\.png: cannot read it as an image"):
        facets.facet_from_folders(tmp_path / "faces", tmp_path / "generic", tiny_rn)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NeuronscopeError, match="no images found"):
        facets.source_images(tmp_path / "empty", tiny_rn)


def test_a_facet_reads_a_tar_shard_or_a_list_like_a_folder_and_names_a_bad_member(tiny_rn, tmp_path: Path):
    """Any source --images takes is a facet source: the same images give the same pixels and content hashes
    (the probe cache key), in listing order; a bad tar member is named with its shard."""
    import tarfile

    from neuronscope.errors import NeuronscopeError

    folder = tmp_path / "faces"
    folder.mkdir()
    for index in range(3):
        Image.new("RGB", (80, 48), (200 - 50 * index, 40, 40)).save(folder / f"{index}.png")
    with tarfile.open(tmp_path / "faces.tar", "w") as tar:
        for index in (2, 0, 1):  # stored out of order: read in name order
            tar.add(folder / f"{index}.png", arcname=f"{index}.png")
    (tmp_path / "faces.txt").write_text("faces/1.png\nfaces/0.png\nfaces/2.png\n")
    pixels, hashes = facets.source_images(folder, tiny_rn)
    for source in ("faces.tar", "faces.txt"):
        from_source, source_hashes = facets.source_images(tmp_path / source, tiny_rn)
        assert source_hashes == hashes and torch.equal(from_source, pixels)
    assert facets.source_images(tmp_path / "faces.tar", tiny_rn, limit=2)[1] == hashes[:2]
    images = facets.facet_from_folders(tmp_path / "faces.tar", folder, tiny_rn)
    assert images.name == "faces.tar" and images.facet_hashes == hashes
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        tar.add(folder / "0.png", arcname="0.png")
        info = tarfile.TarInfo("9.png")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"\x89PNG!"))
    with pytest.raises(NeuronscopeError, match=r"bad\.tar::9\.png: cannot read it as an image"):
        facets.source_images(tmp_path / "bad.tar", tiny_rn)
    with pytest.raises(NeuronscopeError, match="no such folder or file"):
        facets.source_images(tmp_path / "nowhere.tar", tiny_rn)


def test_swapped_facet_folders_are_another_probe_named_after_the_facet(tiny_rn, tmp_path: Path):
    """--facet A --generic B and --facet B --generic A are opposite probes: the atlas caches both."""
    from neuronscope.atlas import Atlas
    from neuronscope.visualize.store import facet_probe

    for folder, level in (("bright", 200), ("dark", 30)):
        (tmp_path / folder).mkdir()
        for index in range(4):
            Image.new("RGB", (64, 64), (level + index, level, level - index)).save(tmp_path / folder / f"{index}.png")
    bright, dark = str(tmp_path / "bright"), str(tmp_path / "dark")
    with Atlas(tmp_path / "atlas") as atlas:
        forward = facet_probe(tiny_rn, bright, dark, atlas)
        backward = facet_probe(tiny_rn, dark, bright, atlas)
        assert forward.key != backward.key and (forward.name, backward.name) == ("bright", "dark")
        assert len(atlas.artifacts(tiny_rn.key, ",".join(forward.layers), "facet-probe")) == 2
        (tmp_path / "renamed").symlink_to(tmp_path / "bright")
        assert facet_probe(tiny_rn, str(tmp_path / "renamed"), dark, atlas).name == "renamed"  # from the cache
    grey = torch.full((1, 3, 64, 64), 0.9)
    assert float(forward.score(tiny_rn, grey)) > 0 > float(backward.score(tiny_rn, grey))


def test_cli_a_killed_render_job_is_interrupted_even_when_reopened_after_it_finished(tmp_path: Path, monkeypatch):
    """A job killed mid-render is `interrupted`, not left `running`; a finished job reopened for more units is
    `running` again, and `interrupted` if that rerun is killed (not `finished` with half its renders)."""
    from neuronscope.atlas import Atlas
    from neuronscope.visualize import units as units_module

    atlas = tmp_path / "atlas"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    def statuses() -> list[str]:
        with Atlas(atlas, create=False) as store:
            return [run["status"] for run in store.runs()]

    with monkeypatch.context() as patch:
        patch.setattr(units_module, "render", killed)
        assert _invoke("--units", "0-1", "--out", str(atlas)).exit_code == 130
    assert statuses() == ["interrupted"]
    assert _invoke("--units", "0-1", "--out", str(atlas)).exit_code == 0
    assert statuses() == ["finished"]
    with monkeypatch.context() as patch:
        patch.setattr(units_module, "render", killed)
        assert _invoke("--units", "0-3", "--out", str(atlas)).exit_code == 130
    assert statuses() == ["interrupted"]


def test_render_jobs_and_facet_probes_of_two_random_inits_are_kept_apart(tmp_path: Path):
    """`tiny-rn@random` names every seed's init: the job key and the probe cache key take the state dict's hash,
    so one init's renders and probe are never taken for another's."""
    from neuronscope.atlas import Atlas
    from neuronscope.visualize.store import FeatureVisWriter, facet_probe

    inits = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        inits.append(load_model("tiny-rn", weights="random"))
    with Atlas(tmp_path / "atlas") as atlas:
        writers = [FeatureVisWriter.start(atlas, model, "neurons", kind="plain", settings={"steps": 3},
                                          batch_size=2, command="test") for model in inits]
        assert writers[0].config_key != writers[1].config_key and writers[0].run_id != writers[1].run_id
        probes = [facet_probe(model, "drawing", atlas=atlas) for model in inits]
        assert probes[0].key != probes[1].key
        assert len(atlas.artifacts("tiny-rn@random", "visual.layer3.0", "facet-probe")) == 2


def test_a_timm_vit_without_probe_layers_is_told_its_own_blocks():
    """A timm ViT was taken for a conv net and told to register 'visual.layer3.{0,2,4}', a ResNet's names."""
    from neuronscope.errors import NeuronscopeError
    from neuronscope.models import Preprocess, load_model
    from tests.helpers import TimmClip, timm_trunks

    model = load_model(TimmClip(timm_trunks()["vit"]), preprocess=Preprocess(image_size=(16, 16)))
    with pytest.raises(NeuronscopeError, match=r"e\.g\. 'visual\.trunk\.blocks\.\{0,1\}'"):
        facets.probe_layers(model)


def test_a_facet_of_your_own_may_be_a_tar_shard_or_a_list_and_is_named_by_it(tmp_path: Path):
    """--facet and --generic took folders only, although facets read shards and lists since source_images."""
    from neuronscope.visualize.store import facet_name

    shard, listing = tmp_path / "faces.tar", tmp_path / "generic.txt"
    shard.write_bytes(b""), listing.write_text("")
    assert facet_name(str(shard), str(listing)) == "faces"
    assert facet_name(str(tmp_path), str(shard)) == tmp_path.name


def test_unit_arguments_of_the_render_functions_are_read_by_parse_units_into_plain_ints(tiny_rn):
    """render_units(model, layer, torch.tensor([1, 2])) / "1-2" / np.int64(3) failed with TypeErrors, and
    render_diverse kept a NumPy unit, which the atlas writer's entries then carried into JSON."""
    import numpy as np

    from neuronscope.errors import UnitsError
    from neuronscope.visualize import render_diverse

    config = RenderConfig(steps=1)
    for units, expected in ((torch.tensor([1, 2]), [1, 2]), ("1-2", [1, 2]), (np.int64(3), [3]),
                            (np.array([4]), [4])):
        renders = render_units(tiny_rn, "neurons", units, config=config)
        assert [r.unit for r in renders] == expected and all(type(r.unit) is int for r in renders)
    diverse = render_diverse(tiny_rn, "neurons", np.int64(3), 2, config=config)
    assert [type(r.unit) for r in diverse] == [int, int] and diverse[0].unit == 3
    (faceted,) = facets.render_faceted(tiny_rn, "neurons", torch.tensor([5]), _tiny_probe(tiny_rn), config=config)
    assert type(faceted.unit) is int and faceted.unit == 5
    with pytest.raises(UnitsError, match="unit 600 is out of range: the layer has 512 units"):
        render_units(tiny_rn, "neurons", [600], config=config)
    with pytest.raises(UnitsError, match="names 2 units where one is wanted"):
        render_diverse(tiny_rn, "neurons", "1-2", 2, config=config)


def test_a_render_into_an_atlas_under_a_recorders_edits_is_refused_also_when_it_reopens_its_run(tmp_path: Path):
    """Only scan refused attached edits: `visualize --out` stored renders of the edited model as the model's
    own, and a later plain render reopened that run as its own."""
    from neuronscope.activations import Recorder, zero_units
    from neuronscope.atlas import Atlas
    from neuronscope.errors import NeuronscopeError
    from neuronscope.visualize.store import FeatureVisWriter

    model = load_model("tiny-rn", weights="random")
    options = dict(kind="plain", settings={"steps": 3}, batch_size=2, command="test")
    with Atlas(tmp_path / "atlas") as atlas:
        with Recorder(model, edits=[zero_units("neurons", "0-3")]):
            with pytest.raises(NeuronscopeError, match=r"edits \(neurons: zero\) are attached to tiny-rn.*outside"):
                FeatureVisWriter.start(atlas, model, "neurons", **options)
        assert atlas.runs() == []
        writer = FeatureVisWriter.start(atlas, model, "neurons", **options)  # the block closed: its own again
        writer.finish()
        with Recorder(model, edits=[zero_units("neurons", "0-3")]):
            with pytest.raises(NeuronscopeError, match="are attached to tiny-rn"):
                FeatureVisWriter.start(atlas, model, "neurons", **options)  # would reopen the finished run
        assert [run["status"] for run in atlas.runs()] == ["finished"]
