"""GPU figures (issues 4 and 5): feature visualization of a whole RN50x4 layer, and the scan against a forward.

    python benchmarks/gpu.py [--model RN50x4] [--layer neurons] [--batches 32,64,128] [--steps 512]
                             [--check-batch 64] [--check-steps 128] [--precision auto]
                             [--images 2048] [--scan-batch 128] [--workers 12] [--parts featurevis,scan]

Random weights (speed does not depend on them); ``--precision auto`` (bf16 autocast on a GPU that has it).
Every figure is wall time after a warm-up, with the GPU synchronised around it. Writing the scan's PNGs
takes about 20 s per 1,000 on one core: give the scan part that much more time.

(1) Feature vis: seconds per render step at each batch (one image per unit), the FLOPs of one step (forward
    to the layer + backward, counted by torch's FlopCounterMode) and so the achieved TFLOP/s; the time to
    render every unit of the layer at ``--steps`` steps = ceil(units / batch) x steps x seconds per step.
    One render of ``--check-batch`` units at ``--check-steps`` steps is timed end to end to check the
    per-step figure.
(2) Issue 5 (b) on the GPU: a render step / a bare forward+backward on the same batch, same layer. A render
    step is timed between the render's per-step callbacks (set-up and the final image copy left out).
(3) Issue 4 (a) on the GPU: ``scan`` over PNGs at the input size / a bare forward to the same layer
    (steady state and end to end), beside what bounds it: the decoding workers alone (images/s out of
    the loader) and the per-batch merges alone (top-k on the device, moments and histograms on the CPU),
    and, from a second scan with the scanner's parts wrapped in timers, milliseconds a batch spent waiting
    for the loader, in the main thread's ``forward_batch``, in the merge thread, and waiting for merges.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from _common import forward_rate, synchronize  # noqa: E402 - shared with scan.py and words.py
from scan import write_shard  # noqa: E402 - the CPU benchmark's shard writer

from neuronscope.activations import Recorder, layer_geometry  # noqa: E402
from neuronscope.atlas import Atlas  # noqa: E402
from neuronscope.mining import ScanSettings, open_source, scan, scanner  # noqa: E402
from neuronscope.mining.accumulator import LayerAccumulator  # noqa: E402
from neuronscope.mining.loader import iter_batches  # noqa: E402
from neuronscope.models import load_model  # noqa: E402
from neuronscope.objectives import channel  # noqa: E402
from neuronscope.runtime import seed_everything  # noqa: E402
from neuronscope.visualize import RenderConfig, render  # noqa: E402


def timed(device: torch.device, fn) -> float:
    """Wall seconds of ``fn()``, the device synchronised before and after."""
    synchronize(device)
    started = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - started


def render_step_seconds(model, layer: str, units: list[int], steps: int) -> float:
    """Seconds per step of one batched render (redirect steps excluded), after a 3-step warm-up.

    Timed between the render's per-step callbacks (the device synchronised at each), from the end of its
    first step to the end of its last: the render's set-up and the final copy of the image to the host are
    outside, as they are outside the bare forward+backward it is compared with.
    """
    objective = channel(layer, units)
    render(model, objective, batch=len(units), config=RenderConfig(steps=3, redirect_steps=0))
    ends: list[float] = []

    def step_done(done: int, total: int) -> None:
        synchronize(model.device)
        ends.append(time.perf_counter())

    render(model, objective, batch=len(units), config=RenderConfig(steps=steps + 1, redirect_steps=0),
           on_step=step_done)
    return (ends[-1] - ends[0]) / steps


def bare_step_seconds(model, layer: str, batch: int, steps: int) -> tuple[float, float]:
    """(seconds per bare forward+backward to ``layer``, FLOPs of one)."""
    height, width = model.preprocess.image_size
    inputs = torch.randn(batch, 3, height, width, device=model.device, requires_grad=True)
    with Recorder(model, [layer], early_stop=True, detach=False) as recorder:
        (name,) = recorder.layers

        def step() -> None:
            recorder.run(inputs, grad=True)[name].float().mean().backward()

        step()
        with FlopCounterMode(display=False) as counter:
            step()
        seconds = timed(model.device, lambda: [step() for _ in range(steps)]) / steps
    return seconds, float(counter.get_total_flops())


def featurevis(model, args) -> dict:
    with Recorder(model, [args.layer], early_stop=True) as recorder:
        (name,) = recorder.layers
        height, width = model.preprocess.image_size
        units = recorder.run(torch.zeros(1, 3, height, width, device=model.device))[name].shape[1]
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        step = render_step_seconds(model, args.layer, list(range(batch)), args.timed_steps)
        bare, flops = bare_step_seconds(model, args.layer, batch, args.timed_steps)
        rows.append({"batch": batch, "render_step_s": step, "bare_fwd_bwd_s": bare, "step_over_bare": step / bare,
                     "tflop_per_step": flops / 1e12, "achieved_tflops": flops / step / 1e12,
                     "all_units_minutes": math.ceil(units / batch) * args.steps * step / 60})
        print(json.dumps({"featurevis": rows[-1]}), flush=True)
    check, check_steps = args.check_batch, args.check_steps
    measured = timed(model.device, lambda: render(model, channel(args.layer, list(range(check))), batch=check,
                                    config=RenderConfig(steps=check_steps)))
    estimate = next((r["render_step_s"] for r in rows if r["batch"] == check), None)
    return {"layer": name, "units": units, "steps": args.steps, "rows": rows,
            "check": {"batch": check, "steps": check_steps, "render_s": measured,
                      "estimate_s": None if estimate is None else estimate * check_steps}}


def steady_rate(batches) -> float:
    """Images/s from the end of the first batch to the end of the last (``batches`` yields batch sizes)."""
    ends = []
    for size in batches:
        ends.append((time.perf_counter(), size))
    (t0, _), (t1, _) = ends[0], ends[-1]
    return sum(size for _, size in ends[1:]) / (t1 - t0)


def loader_rate(model, shard: Path, args) -> float:
    """Images/s the decoding workers deliver alone (no model), steady state."""
    entries = open_source(shard).entries
    return steady_rate(len(batch.ordinals) for batch in iter_batches(
        entries, model.preprocess, batch_size=args.scan_batch, workers=args.workers))


def merge_rate(model, args) -> float:
    """Images/s of the scan's per-batch merges alone, as its merge thread runs them, on the batches the
    scan sees (this layer's reduced activations of random pixels, made beforehand on the device)."""
    (geometry,) = layer_geometry(model, ["neurons"]).values()
    accumulator = LayerAccumulator.for_geometry(geometry, ScanSettings(), model.device)
    height, width = model.preprocess.image_size
    reduced = []
    with Recorder(model, ["neurons"], early_stop=True) as recorder, torch.no_grad():
        (name,) = recorder.layers
        for _ in range(args.images // args.scan_batch):
            pixels = model.preprocess.normalize(torch.rand(args.scan_batch, 3, height, width, device=model.device))
            reduced.append(accumulator.reduce(recorder.run(pixels)[name]))
    generator = np.random.default_rng(0)

    def merges():
        for index, (values, cells, map_means) in enumerate(reduced):
            ordinals = np.arange(index * args.scan_batch, (index + 1) * args.scan_batch, dtype=np.int64)
            accumulator.update(values, cells, map_means, ordinals,
                               generator.integers(0, 2**62, args.scan_batch, dtype=np.int64))
            synchronize(model.device)
            yield args.scan_batch

    return steady_rate(merges())


@contextlib.contextmanager
def scan_timers() -> Iterator[dict[str, list[float]]]:
    """Seconds per batch inside a scan, by wrapping the scanner's parts (benchmark only): ``loader`` (the
    main thread waiting for the next decoded batch), ``forward_batch`` (the main thread: copy to the device,
    forward, reductions queued), ``merge`` (the merge thread, one batch's merges start to end) and
    ``merge_wait`` (the main thread waiting for the previous batch's merges)."""
    timers: dict[str, list[float]] = {"loader": [], "forward_batch": [], "merge": [], "merge_wait": []}

    def timed(name, fn):
        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timers[name].append(time.perf_counter() - started)
        return wrapper

    def timed_batches(*a, **k):
        batches = iter_batches_of_scanner(*a, **k)
        while True:
            started = time.perf_counter()
            batch = next(batches, None)
            timers["loader"].append(time.perf_counter() - started)
            if batch is None:
                return
            yield batch

    iter_batches_of_scanner, forward_batch, merge_batch = scanner.iter_batches, scanner.forward_batch, \
        scanner.ScanState.merge_batch
    result = concurrent.futures.Future.result
    scanner.iter_batches, scanner.forward_batch = timed_batches, timed("forward_batch", forward_batch)
    scanner.ScanState.merge_batch = timed("merge", merge_batch)
    # Only the scan's main thread waits on futures while this runs.
    concurrent.futures.Future.result = timed("merge_wait", result)
    try:
        yield timers
    finally:
        scanner.iter_batches, scanner.forward_batch, scanner.ScanState.merge_batch = \
            iter_batches_of_scanner, forward_batch, merge_batch
        concurrent.futures.Future.result = result


def scan_vs_forward(model, args) -> dict:
    """End to end (workers' start-up, the final write of every unit into SQLite) and steady state (from the
    end of the first batch to the end of the last, as the progress bar sees it); then the same scan again
    with :func:`scan_timers` for where a batch's time goes (milliseconds a batch, means after the first)."""
    progress = []
    with tempfile.TemporaryDirectory() as work:
        shard = write_shard(Path(work) / "input_size.tar", args.images, model.preprocess.image_size[::-1])
        forward = forward_rate(model, ["neurons"], args.images, args.scan_batch, stop=True)
        with Atlas(Path(work) / "atlas") as atlas:
            started = time.perf_counter()
            scan(model, open_source(shard), atlas, ["neurons"], batch_size=args.scan_batch, workers=args.workers,
                 thumbnails=False, checkpoint_every=10**9,
                 on_batch=lambda p: progress.append((time.perf_counter(), p.images)))
            end_to_end = args.images / (time.perf_counter() - started)
        with Atlas(Path(work) / "timed") as atlas, scan_timers() as timers:
            scan(model, open_source(shard), atlas, ["neurons"], batch_size=args.scan_batch, workers=args.workers,
                 thumbnails=False, checkpoint_every=10**9)
        breakdown = {name: round(1000 * statistics.mean(times[1:] or times), 1) for name, times in timers.items()}
        loader = loader_rate(model, shard, args)
    (t0, n0), (t1, n1) = progress[0], progress[-1]
    steady = (n1 - n0) / (t1 - t0)
    return {"images": args.images, "batch": args.scan_batch, "workers": args.workers, "forward_img_s": forward,
            "scan_steady_img_s": steady, "scan_end_to_end_img_s": end_to_end, "ratio_steady": steady / forward,
            "ratio_end_to_end": end_to_end / forward, "loader_alone_img_s": loader,
            "merges_alone_img_s": merge_rate(model, args), "ms_per_batch": breakdown}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="RN50x4")
    parser.add_argument("--layer", default="neurons")
    parser.add_argument("--batches", default="32,64,128")
    parser.add_argument("--steps", type=int, default=512, help="steps of a full render")
    parser.add_argument("--timed-steps", type=int, default=20, help="steps timed per batch size")
    parser.add_argument("--check-batch", type=int, default=64)
    parser.add_argument("--check-steps", type=int, default=128, help="steps of the end-to-end check render")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--scan-batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--parts", default="featurevis,scan")
    parser.add_argument("--device", default="cuda", help="cuda (cpu only to try the script on a small model)")
    parser.add_argument("--precision", default="auto", help="auto (bf16 autocast on a GPU with bf16), fp32, ...")
    args = parser.parse_args()
    if "scan" in args.parts.split(",") and args.images < 2 * args.scan_batch:
        # The steady rate is taken from the end of the first batch to the end of the last: it needs two.
        parser.error(f"--images {args.images} is under two --scan-batch {args.scan_batch} batches: "
                     f"pass --images {2 * args.scan_batch} or more")
    seed_everything(0)
    torch.backends.cudnn.benchmark = True
    model = load_model(args.model, weights="random", device=args.device, precision=args.precision)
    device_name = torch.cuda.get_device_name() if model.device.type == "cuda" else "cpu"
    print(f"{model.key} on {device_name}, precision {model.precision.name}, "
          f"torch {torch.__version__}", flush=True)
    parts = {"featurevis": featurevis, "scan": scan_vs_forward}
    for part in args.parts.split(","):
        started = time.perf_counter()
        result = parts[part](model, args)
        print(json.dumps({part: result}), f"[{time.perf_counter() - started:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
