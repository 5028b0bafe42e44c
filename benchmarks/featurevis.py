"""Feature visualization speed: batching across units, per-step overhead, RN50x4 precisions.

    .venv/bin/python benchmarks/featurevis.py [--steps 32] [--repeats 3] [--rn50x4-steps 2] [--threads 1]
                                              [--skip-rn50x4]

(a) One batched render of 16 units / 16 single-unit renders of the same units (same steps, layer,
    precision): mini CLIP (target <= 0.35) and RN50x4 with random weights (few steps; its 16 single
    renders are timed on 4 units and scaled by 4, and the script says so).
(b) Per-step cost of a render (parameterization, transforms, preprocessing, recorder, objective,
    backward, Adam) / a bare forward+backward of the model on the same batch of 16, both stopping at
    the same layer (target <= 1.2). Redirected-ReLU steps are excluded from both sides (they are the
    first 16 of 512).
(c) RN50x4 seconds per step at batch 1 and 8, bf16 autocast (forced) vs fp32.
All ratios are measured side by side in one run; figures go in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from neuronscope.activations import Recorder
from neuronscope.models import LoadedModel, load_model
from neuronscope.objectives import channel
from neuronscope.runtime import seed_everything
from neuronscope.visualize import RenderConfig, render, render_units


def seconds_per_step(model: LoadedModel, units: list[int], steps: int, layer: str = "neurons") -> float:
    """Wall seconds per step of one render of ``units`` (one image each), redirect steps excluded."""
    config = RenderConfig(steps=steps, redirect_steps=0)
    started = time.perf_counter()
    render(model, channel(layer, units), batch=len(units), config=config)
    return (time.perf_counter() - started) / steps


def batched_vs_single(model: LoadedModel, steps: int, singles: int) -> tuple[float, float, float]:
    """(batched seconds, 16 single renders' seconds, ratio); singles beyond ``singles`` are extrapolated."""
    units = list(range(16))
    config = RenderConfig(steps=steps)
    render_units(model, "neurons", units[:1], batch_size=1, config=RenderConfig(steps=2))  # warm-up
    started = time.perf_counter()
    render_units(model, "neurons", units, batch_size=16, config=config)
    batched = time.perf_counter() - started
    started = time.perf_counter()
    render_units(model, "neurons", units[:singles], batch_size=1, config=config)
    single = (time.perf_counter() - started) * 16 / singles
    return batched, single, batched / single


def bare_step(model: LoadedModel, batch: int, steps: int, layer: str = "neurons") -> float:
    """Seconds per forward+backward of the model alone: a leaf input, early stop at ``layer``, no Adam."""
    height, width = model.preprocess.image_size
    inputs = torch.randn(batch, 3, height, width, device=model.device, requires_grad=True)
    with Recorder(model, [layer], early_stop=True, detach=False) as recorder:
        (name,) = recorder.layers
        recorder.run(inputs, grad=True)[name].mean().backward()  # warm-up
        started = time.perf_counter()
        for _ in range(steps):
            recorder.run(inputs, grad=True)[name].mean().backward()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32, help="steps per render on the mini CLIP")
    parser.add_argument("--rn50x4-steps", type=int, default=2, help="steps per render on RN50x4")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats on the mini CLIP (fastest kept)")
    parser.add_argument("--skip-rn50x4", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU cores: {os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.1f}")

    mini = load_model("mini-clip", weights="bundled", precision="fp32")
    print(f"\nmini CLIP ({mini.key}, neurons, 64 px, fp32), {args.steps} steps per render, "
          f"fastest of {args.repeats} interleaved repeats")
    runs = [batched_vs_single(mini, args.steps, singles=16) for _ in range(args.repeats)]
    batched, single = min(r[0] for r in runs), min(r[1] for r in runs)
    print(f"(a) batched 16 units {batched:.2f} s / 16 single renders {single:.2f} s = {batched / single:.3f}  "
          f"(target <= 0.35)")
    steps, bares = [], []
    for _ in range(args.repeats):
        steps.append(seconds_per_step(mini, list(range(16)), args.steps))
        bares.append(bare_step(mini, 16, args.steps))
    step, bare = min(steps), min(bares)
    print(f"(b) render step {step * 1000:.1f} ms / bare forward+backward {bare * 1000:.1f} ms "
          f"(batch 16) = {step / bare:.3f}  (target <= 1.2)")

    if args.skip_rn50x4:
        return
    print(f"\nRN50x4 (random weights, neurons, 288 px), {args.rn50x4_steps} steps per render")
    for precision in ("fp32", "bf16"):
        rn = load_model("RN50x4", weights="random", precision=precision)
        if precision == "fp32":
            batched, single, ratio = batched_vs_single(rn, args.rn50x4_steps, singles=4)
            print(f"(a) batched 16 units {batched:.1f} s / 16 single renders {single:.1f} s "
                  f"(timed on 4, x4) = {ratio:.3f}")
            step, bare = seconds_per_step(rn, list(range(8)), args.rn50x4_steps), bare_step(rn, 8, args.rn50x4_steps)
            print(f"(b) render step {step:.2f} s / bare forward+backward {bare:.2f} s (batch 8) = {step / bare:.3f}")
        for batch in (1, 8):
            per_step = seconds_per_step(rn, list(range(batch)), args.rn50x4_steps)
            print(f"(c) {precision} ({rn.precision.reason}) batch {batch}: {per_step:.2f} s/step, "
                  f"{batch / per_step:.2f} images*steps/s")


if __name__ == "__main__":
    main()
