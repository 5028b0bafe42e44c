"""Rastered-word probing throughput: rendered images probed per second / images per second of a bare forward.

    .venv/bin/python benchmarks/words.py [--model mini-clip] [--weights default] [--words 300]
                                         [--batch-size 243] [--workers 1] [--threads 1] [--repeats 2]

Both sides run the same model, layer (``neurons``), precision (``--precision``,
resolved by the scanner's rules), batch size and early stop at that layer,
interleaved and repeated; each side's best run counts. The bare forward
runs on tensors already made (no rendering); the probe renders every word
in ``--workers`` processes (default settings: 1 font x 3 sizes x 3
positions = 9 images a word) and reduces per word. Target: >= 0.8
(rendering is not the bottleneck).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import forward_rate  # noqa: E402 - shared with scan.py and gpu.py

from neuronscope.activations.reduce import reduce_units
from neuronscope.models import DEFAULT, load_model
from neuronscope.probing.raster import RasterSettings
from neuronscope.probing.vocab import load_vocabulary
from neuronscope.probing.words import probe_words
from neuronscope.runtime import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mini-clip")
    parser.add_argument("--weights", default="default", help="default (bundled/cached) or random")
    parser.add_argument("--layer", default="neurons")
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=243, help="images per forward (27 words x 9)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(0)
    model = load_model(args.model, weights=DEFAULT if args.weights == "default" else args.weights,
                       precision=args.precision)
    settings = RasterSettings()
    words = load_vocabulary("english-10k")[: args.words]
    images = len(words) * settings.variants
    print(f"{model.key}, layer {args.layer}, {model.preprocess.image_size[0]} px, precision "
          f"{model.precision.name} ({model.precision.reason}); {len(words)} words x {settings.variants} images "
          f"= {images}, batch {args.batch_size}, {args.workers} rendering worker(s), {args.threads} thread(s), "
          f"torch {torch.__version__}")
    forward, probe = [], []
    for _ in range(args.repeats):
        # The probe reduces each map to its spatial mean in the hook: so does the bare side.
        forward.append(forward_rate(model, args.layer, images, args.batch_size,
                                    capture_fn=lambda a: reduce_units(a, "mean")))
        result = probe_words(model, args.layer, words, settings=settings, batch_size=args.batch_size,
                             workers=args.workers)
        probe.append(images / result.seconds)
        print(f"  forward {forward[-1]:.1f} img/s | probe {probe[-1]:.1f} img/s")
    print(f"probe / forward = {max(probe):.1f} / {max(forward):.1f} img/s = {max(probe) / max(forward):.3f} "
          f"(target >= 0.8)")


if __name__ == "__main__":
    main()
