"""The optimiser loop: parameterised images, random transforms, the model's own preprocessing, Adam.

    result = render(model, channel("neurons", [3, 5, 8]), batch=3)   # one image per unit
    result.images        # [3, 3, 64, 64] in [0, 1]
    result.final         # each finished image's objective, as the model sees it (no transforms, no penalties)
    result.curve         # [steps, 3]: each image's objective (with penalties) on each step's transformed view

Only the objective's layers are hooked (through :class:`Recorder`), and the
forward stops once they are captured. The model is frozen and in eval mode
for the duration; everything the loop changes is restored when it returns.

Each image draws its init and its random transforms from its own generator,
seeded by the config's seed and the image's key (``render_units`` keys an
image by its unit), so a unit starts from the same image and sees the same
transforms whichever units share its batch. The render itself is
reproducible for the same pass composition (same units, same batch size):
the same unit in another batch differs only through float rounding (a
batched convolution sums in another order than a single one), which Adam
amplifies over its steps (on the mini CLIP: 1e-6 at 16 steps, visible
after 50 or more). Determinism is per device and torch build too: on a GPU
the backward of ``grid_sample`` (the scale-and-rotate transform) adds with
atomics and is not bit-deterministic, so two GPU renders of one seed agree
to float rounding, not bit for bit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from neuronscope.activations.catalog import layer_layouts
from neuronscope.activations.layout import CHANNELS_FIRST
from neuronscope.activations.recorder import Recorder
from neuronscope.models.loaded import LoadedModel, evaluating, require_loaded
from neuronscope.objectives import Context, Objective, as_objective, l2, total_variation
from neuronscope.visualize.param import make_param
from neuronscope.visualize.relu import redirect_relus, redirected_relu
from neuronscope.visualize.results import RenderConfig, RenderResult
from neuronscope.visualize.transforms import CropOrPad, Transforms, standard_transforms

StepCallback = Callable[[int, int], None]


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Eval mode (:func:`evaluating`) and no weight gradients within the block; the module's own settings come
    back after."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        with evaluating(module):
            yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


def _canonical(model: LoadedModel, names: tuple[str, ...]) -> dict[str, str]:
    """``{name as the objective wrote it: canonical layer}``."""
    return {name: model.resolve_layer(name) for name in names}


def full_objective(objective: Objective | str, config: RenderConfig) -> Objective:
    """The objective plus the config's image penalties (L2, TV), as maximised."""
    total = as_objective(objective)
    if config.l2:
        total = total - config.l2 * l2()
    if config.tv:
        total = total - config.tv * total_variation()
    return total


def image_generator(seed: int, key: int) -> torch.Generator:
    """The CPU generator of one image: a function of the render's seed and the image's key alone."""
    state = np.random.SeedSequence([seed, key]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def render(
    model: LoadedModel,
    objective: Objective | str,
    *,
    batch: int = 1,
    config: RenderConfig = RenderConfig(),
    transforms: nn.Module | None = None,
    on_step: StepCallback | None = None,
    keys: Sequence[int] | None = None,
    score: Objective | None = None,
) -> RenderResult:
    """Optimise ``batch`` images to maximise ``objective``.

    Args:
        model: a loaded model; its device, precision and preprocessing are used.
        objective: an :class:`Objective` (value per image [B]) or ``"layer:unit"``.
        batch: images optimised together.
        config: steps, lr, size, parameterization, penalties, seed (Lucid's defaults).
        transforms: a custom transform module (default: the config's ``transforms``).
        on_step: called with (steps done, total) after every step (progress bars).
        keys: one non-negative int per image (default ``0 .. batch-1``): image ``i``'s init and random
            transforms come from a generator seeded by ``(config.seed, keys[i])``, whatever shares
            its batch (its result still depends on its batch through float rounding; see above).
            Images of one key start alike and see the same transforms.
        score: what ``RenderResult.final`` reports, scored once on the finished images as the model
            sees them (centre-cropped or padded to its input; no transforms, no redirected ReLUs), e.g.
            the unit's channel alone where ``objective`` adds a diversity or facet term (default:
            ``objective`` itself, without the config's penalties). It may read only ``objective``'s layers
            (by any of their names). With ``config.alpha`` the finished image is composited over noise from
            each image's generator, as in every step, so its score depends on that draw.

    Returns:
        A :class:`RenderResult` with the images, their final scores, per-step objective curves and the config.
    """
    require_loaded(model, "render")
    keys = list(range(batch)) if keys is None else list(keys)
    if len(keys) != batch:
        raise ValueError(f"{len(keys)} keys for {batch} images: give one per image")
    score = as_objective(objective) if score is None else score
    objective = full_objective(objective, config)
    device = model.device
    input_size = model.preprocess.image_size
    size = (config.size, config.size) if config.size else input_size
    generators = [image_generator(config.seed, key) for key in keys]
    param = make_param(config.param, batch, size, param_size=config.param_size, sd=config.sd,
                       decorrelate=config.decorrelate, alpha=config.alpha, device=device, generator=generators,
                       **({"decay_power": config.decay_power} if config.param == "fft" else {}))
    if transforms is None:
        transforms = (standard_transforms(size, pad=config.pad, jitter=config.jitter, scales=config.scales,
                                          angles=config.angles, out=input_size)
                      if config.transforms == "standard" else Transforms())
    if isinstance(transforms, Transforms):
        transforms.use_generators(generators)
    fit = CropOrPad(input_size)
    # every name the objective or the score reads (the score may write a layer by another of its names)
    names = _canonical(model, objective.layers + objective.live_layers + score.layers + score.live_layers)
    if not ({names[n] for n in score.layers + score.live_layers}
            <= {names[n] for n in objective.layers + objective.live_layers}):
        raise ValueError(f"the score {score} reads layers the objective {objective} does not: score a part of it")
    live = {name: names[name] for name in objective.live_layers + score.live_layers}
    # Where each layer holds its units (timm ConvNeXt's MLPs run channels last): the model's catalogue, read
    # once per model and before any hook of the render is attached. Layers that are not maps are not in it.
    catalogue = layer_layouts(model)
    layouts = {name: catalogue.get(canonical, CHANNELS_FIRST) for name, canonical in names.items()}
    # One fused kernel for the update (CPU and CUDA): the parameter is a single tensor, so the default
    # per-op Adam spends more time dispatching than computing.
    optimizer = torch.optim.Adam(param.parameters(), lr=config.lr, fused=True)
    # On the model's device: a per-step copy to the host would make the host wait for every GPU step.
    curve = torch.empty(config.steps, batch, device=device)
    started = time.perf_counter()

    recorder = Recorder(model, list(dict.fromkeys(names.values())), early_stop=True, detach=False)
    live_recorder = Recorder(model, list(dict.fromkeys(live.values())), detach=False, clone=False) if live else None

    def context(image: Tensor, view: Callable[[Tensor], Tensor], step: int) -> Context:
        """One forward of ``image`` seen through ``view`` (before the model's input crop): the objective's layers."""
        pixels = _composite(image, generators) if config.alpha else image
        captured = recorder.run(model.preprocess.normalize(fit(view(pixels))), grad=torch.is_grad_enabled())
        acts = {name: captured[canonical] for name, canonical in names.items()}
        if live_recorder is not None:
            acts.update({name: live_recorder.activations[canonical] for name, canonical in live.items()})
        return Context(acts, image, step, model.token_grid, layouts=layouts, prefix_tokens=model.prefix_tokens,
                       relu=redirected_relu if step < config.redirect_steps else torch.relu)

    # The live recorder is attached first: a module runs its hooks in the order they were added, and the
    # early-stop recorder's hook on the deepest layer ends the forward before any hook after it runs.
    with frozen(model.module), (live_recorder or contextlib.nullcontext()), recorder:
        for step in range(config.steps):
            optimizer.zero_grad(set_to_none=True)
            image = param()  # [B, C, H, W] in [0, 1]
            with redirect_relus(model.image_module, enabled=step < config.redirect_steps):
                seen = context(image, transforms, step)
            values = objective(seen)  # [B]
            (-values.sum()).backward()
            optimizer.step()
            curve[step] = values.detach().float()
            if on_step is not None:
                on_step(step + 1, config.steps)
        # The curve's last value is the image before the last update, on a random view, with penalties: what
        # a stored render reports is the finished image's own score. Autograd only for a score that
        # differentiates with respect to a layer (a facet term).
        with torch.set_grad_enabled(bool(score.live_layers)):
            image = param()
            scores = score(context(image, _untransformed, config.steps)).detach().float().cpu()
        images = image.detach().float().cpu()
    return RenderResult(images, scores, curve.cpu(), str(objective), config, time.perf_counter() - started)


def _untransformed(images: Tensor) -> Tensor:
    """The view a finished image is scored on: itself (only cropped or padded to the model's input)."""
    return images


def _composite(image: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """RGBA [B, 4, H, W] over uniform noise -> RGB [B, 3, H, W]: what is transparent must not matter.

    Image ``i``'s noise comes from ``generators[i]``.
    """
    background = torch.cat([torch.rand(1, 3, *image.shape[2:], generator=generator) for generator in generators])
    background = background.to(image.device, image.dtype)
    alpha = image[:, 3:]
    return image[:, :3] * alpha + background * (1 - alpha)
