"""Recorder overhead and early-stop saving on RN50x4 (random weights).

    .venv/bin/python benchmarks/recorder.py [--batch-size 8] [--repeats 2] [--threads N]

For each precision (fp32; bf16 autocast + channels_last), times the same
forward of RN50x4 on the same batch with and without a Recorder on one layer
(``neurons``, 2560 x 9 x 9), interleaved, and prints the ratio of the fastest
runs (target <= 1.05). Then, in fp32, times recording ``visual.layer3.*``
with early stop against the same recording without it. Like with like: same
model, layer, precision and batch on both sides of every ratio; each side is
warmed up at the timed batch, and the side that runs first alternates.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from typing import Callable

import torch

from neuronscope.activations import Recorder
from neuronscope.models import LoadedModel, load_model
from neuronscope.runtime import resolve_precision, seed_everything


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def plain_forward(model: LoadedModel, pixels: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return model.encode_images(model.prepare_images(pixels))

    return run


def recorded_forward(model: LoadedModel, pixels: torch.Tensor, layers: str, early_stop: bool) -> Callable[[], object]:
    recorder = Recorder(model, layers, early_stop=early_stop)
    return lambda: recorder.run(pixels)  # attaches and removes its hooks on every call, as users do


def compare(label: str, first: Callable[[], object], second: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Interleave the two, ``repeats`` times each; returns the fastest time of each.

    Both are warmed up first (one untimed run each: oneDNN builds its kernels for a new shape or layout on
    first use), and the side that runs first alternates, so neither always runs on a cold cache.
    """
    first(), second()
    times_first, times_second = [], []
    for repeat in range(repeats):
        order = [(first, times_first), (second, times_second)]
        for run, times in order if repeat % 2 == 0 else order[::-1]:
            times.append(timed(run))
    print(f"  {label}: {', '.join(f'{t:.2f}' for t in times_first)} s | {', '.join(f'{t:.2f}' for t in times_second)} s"
          f"  (medians {statistics.median(times_first):.2f} / {statistics.median(times_second):.2f})")
    return min(times_first), min(times_second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side in fp32")
    parser.add_argument("--bf16-repeats", type=int, default=1, help="timed runs per side in bf16")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-bf16", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    start = time.perf_counter()
    model = load_model("RN50x4", weights="random")
    pixels = torch.randn(args.batch_size, 3, 288, 288)
    print(f"RN50x4@random built in {time.perf_counter() - start:.1f} s; batch {args.batch_size} at 288 px, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")

    plans = [("fp32", model, args.repeats)]
    if not args.skip_bf16:
        bf16 = resolve_precision("bf16", model.device, model.family)
        print(f"bf16: {bf16.reason}; channels_last={bf16.channels_last}")
        plans.append(("bf16", None, args.bf16_repeats))

    for name, loaded, repeats in plans:
        if loaded is None:  # bf16: the same weights, converted after the fp32 runs
            bf16.prepare(model.module)
            loaded = dataclasses.replace(model, precision=bf16)
        print(f"{name}: forward without | with a Recorder on 'neurons'")
        plain, recorded = compare("times", plain_forward(loaded, pixels),
                                  recorded_forward(loaded, pixels, "neurons", early_stop=False), repeats)
        print(f"{name}: recorder overhead ratio {recorded / plain:.3f} (target <= 1.05)")
        if name == "fp32":
            print("fp32: recording visual.layer3.* without | with early stop")
            full, stopped = compare("times", recorded_forward(loaded, pixels, "visual.layer3.*", early_stop=False),
                                    recorded_forward(loaded, pixels, "visual.layer3.*", early_stop=True), repeats)
            print(f"fp32: early stop at visual.layer3.* saves {100 * (1 - stopped / full):.0f}% "
                  f"({full:.2f} s -> {stopped:.2f} s)")


if __name__ == "__main__":
    main()
