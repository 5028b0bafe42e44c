"""Text-side costs on the mini CLIP: per-prompt attribution against the attribution basis.

    .venv/bin/python benchmarks/textside.py [--sample 256] [--prompts 8] [--threads 1]

Both paths compute the same scores (``tests/test_textside.py`` checks it):
``attribute_texts`` takes one backward pass per prompt, ``compute_basis``
one per embedding dimension, after which a text costs only its text-tower
forward. Prints, measured in one run on the same model, layer, sample and
precision: a plain forward of the sample, the per-prompt attribution time,
the basis time, the number of prompts past which the basis is cheaper, the
rate at which the basis scores a vocabulary (english-10k, text tower
included), and one unit's text feature visualization.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model("mini-clip", weights=DEFAULT)
    sample = default_image_sample(args.sample, preprocess=model.preprocess)
    pixels = model.preprocess.normalize(sample.pixels)
    prompts = [f"a photo of a {word}" for word in load_vocabulary("english-10k")[:args.prompts]]

    def forward_seconds() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.encode_images(pixels)
        return time.perf_counter() - start

    forward_seconds()  # warm-up: the first forward pays one-off set-up the ratios must not divide by
    forward_s = min(forward_seconds() for _ in range(3))

    start = time.perf_counter()
    attribute_texts(model, "neurons", prompts, sample, batch_size=args.sample)
    per_prompt_s = (time.perf_counter() - start) / len(prompts)

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
    print(f"mini-clip@bundled {basis.layer}, {args.sample} images, fp32, {args.threads} thread(s)")
    print(f"plain forward of the sample:           {forward_s:8.2f} s")
    print(f"attribute_texts, per prompt:           {per_prompt_s:8.2f} s  ({per_prompt_s / forward_s:.1f}x a forward)")
    print(f"compute_basis ({dims} backward passes):  {basis_s:8.2f} s  ({basis_s / forward_s:.1f}x a forward)")
    print(f"basis pays off past:                   {basis_s / per_prompt_s:8.1f} prompts")
    print(f"english-10k scored through the basis:  {vocabulary_s:8.2f} s  ({len(vocabulary) / vocabulary_s:.0f} texts/s)")
    print(f"text feature vis, unit 473 (3 climbs): {textvis_s:8.2f} s  ({result.evaluated} texts, "
          f"best {result.best[0]!r} {result.best[1]:.3f})")


if __name__ == "__main__":
    main()
