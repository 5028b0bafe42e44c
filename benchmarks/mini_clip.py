"""Mini CLIP: offline load time (imports excluded; target < 2 s) and training step cost.

    .venv/bin/python benchmarks/mini_clip.py [--steps 5] [--threads N]

The training step is timed on random batches of the shipped architecture
(fp32 vs bf16 autocast, batch 256), so the card's ms/step can be checked on
another machine without building the world.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from neuronscope.models import load_model
from neuronscope.world.train import TrainConfig, build_model, soft_target_loss


def load_seconds(repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load_model("mini-clip")
        times.append(time.perf_counter() - start)
    return times


def step_seconds(precision: str, steps: int, batch_size: int) -> float:
    config = TrainConfig(precision=precision, batch_size=batch_size)
    model = build_model(config).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(batch_size, 3, config.image_size, config.image_size).contiguous(memory_format=torch.channels_last)
    tokens = torch.randint(1, 49407, (batch_size, config.context_length))
    keys = torch.randint(0, 40, (batch_size,))
    times = []
    for _ in range(steps + 1):  # the first step warms up oneDNN
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            image_features, text_features, scale = model(images, tokens)
            loss = soft_target_loss(image_features.float(), text_features.float(), scale.float(), keys)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_model("mini-clip")  # imports and first-touch file cache excluded
    loads = load_seconds(5)
    print(f"load_model('mini-clip'): median {statistics.median(loads):.3f} s, max {max(loads):.3f} s (target < 2 s)")
    fp32 = step_seconds("fp32", args.steps, args.batch_size)
    bf16 = step_seconds("bf16", args.steps, args.batch_size)
    print(f"training step, batch {args.batch_size}, {torch.get_num_threads()} threads: fp32 {fp32 * 1000:.0f} ms, "
          f"bf16 autocast {bf16 * 1000:.0f} ms, bf16 / fp32 = {bf16 / fp32:.2f}")


if __name__ == "__main__":
    main()
