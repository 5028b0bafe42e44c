"""Feature visualization speed: batching across units, per-step overhead, RN50x4 precisions.

    .venv/bin/python benchmarks/featurevis.py [--steps 32] [--repeats 3] [--rn50x4-steps 2] [--threads 1]
                                              [--skip-rn50x4]

(a) One batched render of 16 units / 16 single-unit renders of the same units (same steps, layer,
    precision): mini CLIP (target <= 0.35) and RN50x4 with random weights (few steps; its 16 single
    renders are timed on 4 units and scaled by 4, and the script says so).
(b) Per-step cost of a render (parameterization, transforms, preprocessing, recorder, objective,
    backward, Adam) / a bare forward+backward of the model on the same batch of 16, both stopping at
    the same layer (target <= 1.2). The two alternate step by step (a bare step, on a copy of the model
    so the render's hooks never see it, runs between every two render steps) and the ratio is of their
    medians: load from other processes falls on both sides alike. Redirected-ReLU steps are excluded
    from both sides (they are the first 16 of 512).
(c) RN50x4 seconds per step at batch 1 and 8, bf16 autocast (forced) vs fp32, each after a 1-step render at
    the same batch (the first render of a precision and shape pays oneDNN's kernel set-up).
All ratios are measured side by side in one run; figures go in benchmarks/RESULTS.md.

Times are this process's CPU seconds (``time.process_time``), not wall time: on a shared machine other
processes' load inflates wall time unevenly between the two sides of a ratio, while the CPU time of a
one-thread run is what the work costs. ``--wall`` switches to wall time (use it on a quiet machine; every model
here loads on the CPU, for GPU figures see benchmarks/gpu.py).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from neuronscope.activations import Recorder
from neuronscope.models import LoadedModel, load_model
from neuronscope.objectives import channel
from neuronscope.runtime import seed_everything
from neuronscope.visualize import RenderConfig, render, render_units

clock = time.process_time


def seconds_per_step(model: LoadedModel, units: list[int], steps: int, layer: str = "neurons") -> float:
    """Seconds (``clock``: CPU, or wall with ``--wall``) per step of one render of ``units`` (one image each),
    redirect steps excluded, after an untimed 1-step render of the same batch."""
    render(model, channel(layer, units), batch=len(units), config=RenderConfig(steps=1, redirect_steps=0))
    config = RenderConfig(steps=steps, redirect_steps=0)
    started = clock()
    render(model, channel(layer, units), batch=len(units), config=config)
    return (clock() - started) / steps


def batched_vs_single(model: LoadedModel, steps: int, singles: int) -> tuple[float, float, float]:
    """(batched seconds, 16 single renders' seconds, ratio); singles beyond ``singles`` are extrapolated."""
    units = list(range(16))
    config = RenderConfig(steps=steps)
    render_units(model, "neurons", units[:1], batch_size=1, config=RenderConfig(steps=2))  # warm-up
    started = clock()
    render_units(model, "neurons", units, batch_size=16, config=config)
    batched = clock() - started
    started = clock()
    render_units(model, "neurons", units[:singles], batch_size=1, config=config)
    single = (clock() - started) * 16 / singles
    return batched, single, batched / single


def interleaved_steps(model: LoadedModel, batch: int, steps: int, layer: str = "neurons") -> tuple[float, float]:
    """(median render step, median bare forward+backward) in seconds, the two alternating step by step.

    The bare step runs in the render's per-step callback, on a deep copy of the model (the render's
    early-stop hooks and redirected ReLUs are on the original), so each render step is timed between two
    bare steps and both see the same machine.
    """
    twin = copy.deepcopy(model)
    height, width = model.preprocess.image_size
    inputs = torch.randn(batch, 3, height, width, device=model.device, requires_grad=True)
    marks: list[tuple[float, float]] = []  # (bare step start, bare step end), after each render step
    with Recorder(twin, [layer], early_stop=True, detach=False) as recorder:
        (name,) = recorder.layers
        recorder.run(inputs, grad=True)[name].mean().backward()  # warm-up

        def bare_after_step(done: int, total: int) -> None:
            started = clock()
            recorder.run(inputs, grad=True)[name].mean().backward()
            marks.append((started, clock()))

        render(model, channel(layer, list(range(batch))), batch=batch,
               config=RenderConfig(steps=steps + 1, redirect_steps=0), on_step=bare_after_step)
    render_steps = [start - previous_end for (_, previous_end), (start, _) in zip(marks, marks[1:])]
    bare_steps = [end - start for start, end in marks[1:]]
    return statistics.median(render_steps), statistics.median(bare_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=32, help="steps per render on the mini CLIP")
    parser.add_argument("--rn50x4-steps", type=int, default=2, help="steps per render on RN50x4")
    parser.add_argument("--bf16-batches", default="1,8", help="RN50x4 batches timed in bf16 (slow on CPUs "
                                                              "without native bf16)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats on the mini CLIP (fastest kept)")
    parser.add_argument("--skip-rn50x4", action="store_true")
    parser.add_argument("--wall", action="store_true", help="time wall seconds instead of CPU seconds")
    args = parser.parse_args()
    global clock
    clock = time.perf_counter if args.wall else time.process_time
    torch.set_num_threads(args.threads)
    seed_everything(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU cores: {os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.1f}; {'wall' if args.wall else 'CPU'} seconds")

    mini = load_model("mini-clip", weights="bundled", precision="fp32")
    print(f"\nmini CLIP ({mini.key}, neurons, 64 px, fp32), {args.steps} steps per render, "
          f"fastest of {args.repeats} interleaved repeats")
    runs = [batched_vs_single(mini, args.steps, singles=16) for _ in range(args.repeats)]
    batched, single = min(r[0] for r in runs), min(r[1] for r in runs)
    print(f"(a) batched 16 units {batched:.2f} s / 16 single renders {single:.2f} s = {batched / single:.3f}  "
          f"(target <= 0.35)")
    step, bare = interleaved_steps(mini, 16, args.steps * args.repeats)
    print(f"(b) render step {step * 1000:.1f} ms / bare forward+backward {bare * 1000:.1f} ms "
          f"(batch 16, medians of {args.steps * args.repeats} alternating steps) = {step / bare:.3f}  "
          f"(target <= 1.2)")

    if args.skip_rn50x4:
        return
    print(f"\nRN50x4 (random weights, neurons, 288 px), {args.rn50x4_steps} steps per render")
    for precision in ("fp32", "bf16"):
        rn = load_model("RN50x4", weights="random", precision=precision)
        if precision == "fp32":
            batched, single, ratio = batched_vs_single(rn, args.rn50x4_steps, singles=4)
            print(f"(a) batched 16 units {batched:.1f} s / 16 single renders {single:.1f} s "
                  f"(timed on 4, x4) = {ratio:.3f}")
            step, bare = interleaved_steps(rn, 8, args.rn50x4_steps)
            print(f"(b) render step {step:.2f} s / bare forward+backward {bare:.2f} s (batch 8, medians of "
                  f"{args.rn50x4_steps} alternating steps) = {step / bare:.3f}")
        batches = [1, 8] if precision == "fp32" else [int(b) for b in args.bf16_batches.split(",") if b]
        for batch in batches:
            per_step = seconds_per_step(rn, list(range(batch)), args.rn50x4_steps)
            print(f"(c) {precision} ({rn.precision.reason}) batch {batch}: {per_step:.2f} s/step, "
                  f"{batch / per_step:.2f} images*steps/s")


if __name__ == "__main__":
    main()
