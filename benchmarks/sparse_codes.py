"""Emotion codes' fits: one process against one process per core, side by side.

    .venv/bin/python benchmarks/sparse_codes.py [--classes 126] [--units 512,3072] [--repeats 1]

The problem has the shape of ``neuronscope emotions``: the feeling wheel's 126 words x the paper's 3 prompts
as samples, a layer's units as features (512 on the mini CLIP, 2,560 on RN50x4, 3,072 on a ViT-B MLP), each
word's prompts close together as the text tower puts them, codes of at most 5 units. Both sides fit the same
features (the codes are checked equal); the ratio is parallel / one process (under 1: faster).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from neuronscope.analysis.sparse_codes import fit_sparse_codes


def _problem(classes: int, units: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    generator = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), 3)
    features = generator.normal(size=(classes, units))[labels] + 0.05 * generator.normal(size=(len(labels), units))
    return features, labels, [f"word{c}" for c in range(classes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=126)
    parser.add_argument("--units", default="512,3072")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores")
    for units in (int(u) for u in args.units.split(",")):
        features, labels, names = _problem(args.classes, units)
        best = {}
        for _ in range(args.repeats):
            for jobs in (1, None):  # in turns, so that the machine's load falls on both alike
                started = time.perf_counter()
                codes = fit_sparse_codes(features, labels, names, max_units=5, jobs=jobs)
                best[jobs] = min(best.get(jobs, float("inf")), time.perf_counter() - started)
                best.setdefault(("codes", jobs), codes.coefficients)
        assert np.array_equal(best[("codes", 1)], best[("codes", None)]), "parallel codes differ"
        print(f"{args.classes} classes x {units} units: one process {best[1]:.1f} s, "
              f"one per core {best[None]:.1f} s, ratio {best[None] / best[1]:.2f}")


if __name__ == "__main__":
    main()
