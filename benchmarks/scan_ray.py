"""Scan on Ray vs the local backend: the same images, model, layer, precision and batch, side by side.

    .venv/bin/python benchmarks/scan_ray.py [--model mini-clip] [--images SRC] [--limit 2000]
                                            [--batch-size 64] [--workers 2] [--threads 2]

Local: one process running the forwards with ``--threads`` intra-op threads
and one decoding worker process (the CLI's setup). Ray: a local Ray with
``--workers`` CPUs and as many model replicas, one thread each, each decoding
its own shards. Ray's start-up (``ray.init``) is timed apart; the Ray scan's
time includes its actor pool's start-up (each replica imports torch and
receives the model) and the duplicate check; the time until the first shard
is merged is printed beside it. Both scans skip thumbnails (the
driver draws them the same way after either). Default images: the mini CLIP's
shipped test split (a tar of 64 px PNGs).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from neuronscope.atlas import Atlas
from neuronscope.mining import ScanSettings, open_source, scan
from neuronscope.mining.ray_backend import import_ray, scan_ray
from neuronscope.models import load_model
from neuronscope.runtime import seed_everything

SPLIT = Path(__file__).resolve().parents[1] / "src" / "neuronscope" / "data" / "mini_clip" / "test_split.tar"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mini-clip")
    parser.add_argument("--images", default=str(SPLIT))
    parser.add_argument("--limit", type=int, default=2000, help="scan the first N entries of the source")
    parser.add_argument("--layers", default="neurons")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="Ray: CPUs and model replicas")
    parser.add_argument("--threads", type=int, default=2, help="local: intra-op threads of the forward")
    args = parser.parse_args()

    ray = import_ray()
    seed_everything(0)
    model = load_model(args.model, device="cpu", precision="auto")  # fp32 on a CPU without native bf16
    source = open_source(args.images)
    source = replace(source, entries=source.entries[: args.limit])
    settings = ScanSettings()
    layers = args.layers.split(",")
    print(f"{model.key}, {len(source)} entries of {source.name}, layers {layers}, {model.precision.name}, "
          f"batch {args.batch_size}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory() as scratch:
        torch.set_num_threads(args.threads)
        with Atlas(Path(scratch) / "local") as atlas:
            started = time.perf_counter()
            local = scan(model, source, atlas, layers, settings=settings, batch_size=args.batch_size, workers=1,
                         thumbnails=False)
            local_s = time.perf_counter() - started
            local_top = [atlas.unit(None, layers[0], unit)["top"] for unit in range(0, 64)]
        print(f"local: {local.images} images in {local_s:.1f} s = {local.images / local_s:.0f} img/s "
              f"({args.threads} threads, 1 decoding worker)")

        started = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - started
        try:
            with Atlas(Path(scratch) / "ray") as atlas:
                merged: list[float] = []  # when each shard was merged
                started = time.perf_counter()
                remote = scan_ray(model, source, atlas, layers, settings=settings, batch_size=args.batch_size,
                                  workers=args.workers, thumbnails=False,
                                  on_batch=lambda _progress: merged.append(time.perf_counter()))
                ray_s = time.perf_counter() - started
                ray_top = [atlas.unit(None, layers[0], unit)["top"] for unit in range(0, 64)]
        finally:
            ray.shutdown()
    print(f"ray: ray.init {init_s:.1f} s; scan {remote.images} images in {ray_s:.1f} s = "
          f"{remote.images / ray_s:.0f} img/s ({args.workers} replicas x 1 thread, {len(merged)} shards); "
          f"first shard merged after {merged[0] - started:.1f} s (actor start-up + one shard)")
    same_ids = all([e["image"] for e in a] == [e["image"] for e in b] for a, b in zip(local_top, ray_top))
    largest = max(abs(x["activation"] - y["activation"]) for a, b in zip(local_top, ray_top) for x, y in zip(a, b))
    print(f"ray / local throughput: {local_s / ray_s:.2f} (scan only), {local_s / (ray_s + init_s):.2f} "
          f"(with ray.init); load average {os.getloadavg()[0]:.1f}; top-k ids equal on units 0-63: {same_ids}, "
          f"largest activation difference {largest:.1e}")


if __name__ == "__main__":
    main()
