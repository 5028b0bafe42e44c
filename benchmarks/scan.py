"""Scan benchmarks (issue 4): throughput vs a bare forward, decode, the naive way, memory at 1k vs 10k.

    .venv/bin/python benchmarks/scan.py [--model tiny-rn] [--images 2000] [--batch-size 64]
                                        [--workers 1] [--threads 1] [--parts a,b,c,d]
                                        [--precision auto]    # (d): always 1,000 and 10,000 PNGs of 64x64

(a) images already at the model's input size (PNG files): scan throughput /
    forward throughput on pre-decoded tensors, same model, precision and batch;
    the forward stops at the scanned layer like the scan does (like with like),
    and the full tower is shown beside it.
(b) full-size JPEGs (800x600): decode throughput of one worker, and the scan's
    throughput against min(forward, decode x workers).
(c) against the naive way: fp32 in PyTorch's default layout (as a user's own
    loop over an open_clip model runs), one full forward pass per layer, every
    activation kept, top-k at the end (images decoded once, shared by the
    passes: the naive side is not charged for decoding three times). The scan
    runs at the default precision of this machine (fp32 without native bf16,
    with channels_last for ResNets).
(d) peak memory (max RSS of the scanning process) at 1k and 10k images, each in
    a fresh subprocess (fixed sizes: 10,000 PNGs of 64x64 are written whatever
    ``--images``; ``--model``, ``--weights``, ``--precision``, ``--batch-size``,
    ``--workers`` and ``--threads`` apply).

Weights are random by default (speed and memory do not depend on them); ``--weights default``
takes the model's bundled or cached ones (e.g. the mini CLIP).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import forward_rate  # noqa: E402 - shared with words.py and gpu.py

from neuronscope.activations import record, resolve_layers
from neuronscope.atlas import Atlas
from neuronscope.mining import open_source, scan
from neuronscope.mining.loader import decode_entry
from neuronscope.models import load_model
from neuronscope.runtime import Precision, seed_everything

NAIVE_LAYERS = ["neurons", "visual.layer3.1", "visual.layer2.1"]


def write_shard(path: Path, count: int, size: tuple[int, int], fmt: str = "PNG", seed: int = 0) -> Path:
    """A tar of ``count`` images (smooth blobs on noise, so they compress like photos, not like noise)."""
    rng = np.random.default_rng(seed)
    width, height = size
    with tarfile.open(path, "w") as tar:
        for index in range(count):
            # Every image distinct (the scan skips repeated content as duplicates).
            colours = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
            image = Image.fromarray(colours).resize((width, height), Image.Resampling.BILINEAR)
            buffer = io.BytesIO()
            image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
            info = tarfile.TarInfo(f"{index:06d}.{fmt.lower().replace('jpeg', 'jpg')}")
            info.size = len(buffer.getvalue())
            tar.addfile(info, io.BytesIO(buffer.getvalue()))
    return path


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def scan_rate(model, shard: Path, layers: list[str], batch_size: int, workers: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as atlas_dir, Atlas(atlas_dir) as atlas:
        start = time.perf_counter()
        outcome = scan(model, open_source(shard), atlas, layers, batch_size=batch_size, workers=workers,
                       thumbnails=False, checkpoint_every=10**9)
        seconds = time.perf_counter() - start
        assert outcome.images == len(open_source(shard)), f"only {outcome.images} images scanned: {outcome.skipped}"
        return rate(outcome.images, seconds), outcome.images


def part_a(model, args, work: Path) -> dict:
    shard = write_shard(work / "input_size.tar", args.images, model.preprocess.image_size[::-1])
    stopped = forward_rate(model, ["neurons"], args.images, args.batch_size, stop=True)
    full = forward_rate(model, ["neurons"], args.images, args.batch_size, stop=False)
    scanned, _ = scan_rate(model, shard, ["neurons"], args.batch_size, args.workers)
    return {"forward_to_layer_img_s": stopped, "forward_full_img_s": full, "scan_img_s": scanned,
            "ratio_vs_forward_to_layer": scanned / stopped, "ratio_vs_full_forward": scanned / full}


def part_b(model, args, work: Path) -> dict:
    count = max(args.images // 4, 64)
    shard = write_shard(work / "full_size.tar", count, (800, 600), fmt="JPEG")
    source = open_source(shard)
    start = time.perf_counter()
    for ordinal, entry in enumerate(source.entries[: min(count, 200)]):
        decode_entry(entry, ordinal, model.preprocess, 10**9)
    decode = rate(min(count, 200), time.perf_counter() - start)
    forward = forward_rate(model, ["neurons"], count, args.batch_size, stop=True)
    scanned, _ = scan_rate(model, shard, ["neurons"], args.batch_size, args.workers)
    bound = min(forward, decode * max(args.workers, 1))
    return {"images": count, "decode_per_worker_img_s": decode, "forward_img_s": forward, "scan_img_s": scanned,
            "workers": args.workers, "ratio_vs_min_forward_decode": scanned / bound}


def naive_model(model):
    """The model as a user's own loop runs it: fp32 in PyTorch's default (NCHW) layout."""
    module = copy.deepcopy(model.module).to(memory_format=torch.contiguous_format)
    return dataclasses.replace(model, module=module, precision=Precision("fp32", "fp32", "naive: default layout"))


def naive_topk(model, shard: Path, layers: list[str], batch_size: int, k: int) -> float:
    """The naive way: decode all, then per layer a full forward pass keeping every activation, top-k at the end."""
    model = naive_model(model)
    start = time.perf_counter()
    source = open_source(shard)
    decoded = [decode_entry(entry, i, model.preprocess, 10**9) for i, entry in enumerate(source.entries)]
    pixels = model.preprocess.normalize(torch.stack([d.pixels for d in decoded]).float() / 255)
    for layer in layers:
        with torch.no_grad():
            acts = record(model, pixels, [layer], early_stop=False, batch_size=batch_size)  # every activation kept
        maps = next(iter(acts.values()))  # [N, C, H, W]
        values = maps.flatten(2).max(dim=2).values  # [N, C]
        values.topk(min(k, len(values)), dim=0)
        values.topk(min(k, len(values)), dim=0, largest=False)
    return time.perf_counter() - start


def part_c(model, args, work: Path) -> dict:
    count = max(args.images // 2, 64)
    shard = write_shard(work / "naive.tar", count, model.preprocess.image_size[::-1])
    layers = resolve_layers(model.module, NAIVE_LAYERS, model.layer_aliases)
    naive_seconds = naive_topk(model, shard, layers, args.batch_size, 48)
    with tempfile.TemporaryDirectory() as atlas_dir, Atlas(atlas_dir) as atlas:
        start = time.perf_counter()
        scan(model, open_source(shard), atlas, layers, batch_size=args.batch_size, workers=args.workers,
             thumbnails=False, checkpoint_every=10**9)
        scan_seconds = time.perf_counter() - start
    return {"images": count, "layers": layers, "naive_s": naive_seconds, "scan_s": scan_seconds,
            "speedup": naive_seconds / scan_seconds}


MEMORY_CHILD = """
import json, resource, sys, tempfile, torch
torch.set_num_threads({threads})
from neuronscope.atlas import Atlas
from neuronscope.mining import open_source, scan
from neuronscope.models import load_model
model = load_model({model!r}, weights={weights!r}, device="cpu", precision={precision!r})
with tempfile.TemporaryDirectory() as atlas_dir, Atlas(atlas_dir) as atlas:
    outcome = scan(model, open_source({shard!r}), atlas, ["neurons"], batch_size={batch}, workers={workers},
                   thumbnails=False)
print(json.dumps({{"images": outcome.images, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def part_d(model_name: str, args, work: Path) -> dict:
    results = {}
    big = write_shard(work / "memory_10k.tar", 10_000, (64, 64))
    small = work / "memory_1k.tar"
    with tarfile.open(big) as source, tarfile.open(small, "w") as target:
        for member in source.getmembers()[:1000]:
            target.addfile(member, source.extractfile(member))
    for name, shard in (("1k", small), ("10k", big)):
        code = MEMORY_CHILD.format(threads=args.threads, model=model_name, shard=str(shard), batch=args.batch_size,
                                   workers=args.workers, weights=args.weights,
                                   precision=args.precision)
        output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
    results["growth"] = results["10k"]["max_rss_mb"] / results["1k"]["max_rss_mb"] - 1
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-rn")
    parser.add_argument("--weights", default="random", help="random (default), or as load_model takes them")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default="a,b,c,d")
    parser.add_argument("--precision", default="auto", help="the scan's precision (auto: this machine's default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(0)
    # "default" is load_model's DEFAULT (the bundled or cached weights); None there would mean random.
    model = load_model(args.model, weights=args.weights, device="cpu", precision=args.precision)
    print(f"{model.key}, {model.precision.reason}, channels_last={model.precision.channels_last}, batch {args.batch_size}, {args.workers} worker(s), {args.threads} thread(s), "
          f"torch {torch.__version__}")
    parts = {"a": part_a, "b": part_b, "c": part_c}
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        for part in args.parts.split(","):
            start = time.perf_counter()
            result = part_d(args.model, args, work) if part == "d" else parts[part](model, args, work)
            printable = {key: round(value, 3) if isinstance(value, float) else value for key, value in result.items()}
            print(f"({part}) {json.dumps(printable)}  [{time.perf_counter() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
