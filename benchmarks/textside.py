"""Text-side costs on the mini CLIP: per-prompt attribution against the attribution basis.

    .venv/bin/python benchmarks/textside.py [--sample 256] [--prompts 2,16] [--repeats 3] [--threads 1]

Both paths compute the same scores (``tests/test_textside.py`` checks it):
``attribute_texts`` takes one backward pass per prompt, ``compute_basis``
one per embedding dimension, after which a text costs only its text-tower
forward. Prints, measured in one run on the same model, layer, sample and
precision: a plain forward of the sample, the cost of ``attribute_texts``
split into a fixed part (the no-grad forward of the sample, the grad
forward, set-up) and a marginal part per prompt (from the call timed at
the two ``--prompts`` counts, warm, best of ``--repeats`` each), the basis
time, the number of prompts past which the basis is cheaper, the rate at
which the basis scores a vocabulary (english-10k, text tower included),
and one unit's text feature visualization.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from neuronscope.models import DEFAULT, load_model
from neuronscope.probing.attribution import attribute_texts, compute_basis, default_image_sample
from neuronscope.probing.textvis import TextVisSettings, optimize_text
from neuronscope.probing.vocab import load_vocabulary
from neuronscope.probing.zeroshot import encode_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=256)
    parser.add_argument("--prompts", default="2,16", help="the two prompt counts attribute_texts is timed at")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per prompt count (fastest kept)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    counts = sorted({int(p) for p in args.prompts.split(",")})
    if len(counts) != 2 or counts[0] < 1:
        parser.error(f"--prompts takes two different positive counts, e.g. 2,16 (got {args.prompts!r})")
    torch.set_num_threads(args.threads)

    model = load_model("mini-clip", weights=DEFAULT)
    sample = default_image_sample(args.sample, preprocess=model.preprocess)
    pixels = model.preprocess.normalize(sample.pixels)
    prompts = [f"a photo of a {word}" for word in load_vocabulary("english-10k")[:counts[1]]]

    def forward_seconds() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.encode_images(pixels)
        return time.perf_counter() - start

    forward_seconds()  # warm-up: the first forward pays one-off set-up the ratios must not divide by
    forward_s = min(forward_seconds() for _ in range(3))

    def attribution_seconds(count: int) -> float:
        start = time.perf_counter()
        attribute_texts(model, "neurons", prompts[:count], sample, batch_size=args.sample)
        return time.perf_counter() - start

    attribution_seconds(counts[0])  # warm-up: the first backward pays one-off set-up
    small_s, large_s = (min(attribution_seconds(count) for _ in range(args.repeats)) for count in counts)
    # A call is a fixed part (text encoding, one no-grad and one grad forward) plus a backward per prompt:
    # the slope between the two counts is the per-prompt cost, the intercept the fixed one.
    per_prompt_s = (large_s - small_s) / (counts[1] - counts[0])
    fixed_s = large_s - counts[1] * per_prompt_s

    start = time.perf_counter()
    basis = compute_basis(model, "neurons", sample, batch_size=args.sample)
    basis_s = time.perf_counter() - start

    vocabulary = load_vocabulary("english-10k")
    start = time.perf_counter()
    basis.scores(encode_texts(model, vocabulary))
    vocabulary_s = time.perf_counter() - start

    start = time.perf_counter()
    result = optimize_text(model, basis, 473, TextVisSettings(lengths=(1, 2, 3), restarts=1))
    textvis_s = time.perf_counter() - start

    dims = basis.per_image.shape[2]
    print(f"mini-clip@bundled {basis.layer}, {args.sample} images, fp32, {args.threads} thread(s); "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"plain forward of the sample:           {forward_s:8.2f} s")
    calls = f"attribute_texts, {counts[0]} | {counts[1]} prompts:"
    print(f"{calls:38s} {small_s:8.2f} | {large_s:.2f} s  (best of {args.repeats} each)")
    print(f"attribute_texts, fixed part:           {fixed_s:8.2f} s  ({fixed_s / forward_s:.1f}x a forward)")
    print(f"attribute_texts, per prompt (marginal):{per_prompt_s:8.3f} s  ({per_prompt_s / forward_s:.2f}x a forward)")
    print(f"compute_basis ({dims} backward passes):  {basis_s:8.2f} s  ({basis_s / forward_s:.1f}x a forward)")
    # P prompts cost fixed + P x per prompt through attribute_texts, basis_s once through the basis.
    print(f"basis pays off past:                   {(basis_s - fixed_s) / per_prompt_s:8.1f} prompts "
          f"(basis - fixed) / per prompt")
    print(f"english-10k scored through the basis:  {vocabulary_s:8.2f} s  ({len(vocabulary) / vocabulary_s:.0f} texts/s)")
    print(f"text feature vis, unit 473 (3 climbs): {textvis_s:8.2f} s  ({result.evaluated} texts, "
          f"best {result.best[0]!r} {result.best[1]:.3f})")


if __name__ == "__main__":
    main()
