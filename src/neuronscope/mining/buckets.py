"""Uniform buckets of a unit's histogram for conditional-probability plots, in pure Python.

Kept apart from the streaming histogram (NumPy, and torch through the top-k accumulator) because the
microscope draws these plots: ``serve`` and ``export`` read an atlas and must not import torch.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping

from neuronscope.mining.sources import image_folder


def sample_hash(image_id: str, seed: int) -> int:
    """A 63-bit hash of ``(seed, image id)``: reservoir samples keep the smallest."""
    digest = hashlib.blake2b(f"{seed}\0{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


#: The category of the images with neither a category nor a folder, in a source where others have one.
TOP_FOLDER = "(top)"


def category_of(image: str, known: Mapping[str, str]) -> str | None:
    """The category a conditional plot counts ``image`` under: the one a scan stored (``known``, from its
    source's ``index.json``), else the folder it sits in; None at the top of its source (shown as
    :data:`TOP_FOLDER` where other images have a category). Unit pages caption examples with it too."""
    return known.get(image) or image_folder(image)


def uniform_buckets(edges: list[float], counts: list[int], samples: list[list[str]], seed: int, *,
                    std: float, reservoir: int, n_buckets: int = 10, per_bucket: int | None = None,
                    categories: Mapping[str, str] | None = None) -> list[dict]:
    """Uniform buckets from min to max, in SDs from zero, for conditional-probability plots.

    The paper's plots: activations in standard deviations from zero, uniform
    buckets between the smallest and largest, a fixed number of images per
    bucket. Buckets are unions of the dyadic bins (each bin goes to the bucket
    holding its centre, the upper one on a tie; bucket edges are exact to one bin width); a
    bucket's sample is the ``per_bucket`` images with the smallest
    ``hash(id, seed)`` among its bins' reservoirs, which is exactly the
    reservoir the union would have kept.

    Args:
        edges, counts, samples, seed, reservoir: a unit's histogram as ``Atlas.histogram`` returns it
            (``reservoir``: the samples a bin keeps at most; a bin holding fewer held all its images).
        std: the unit's standard deviation (``stats["std"]``); 0 gives one bucket.
        per_bucket: images per bucket (at most, and by default, the reservoir size).

    A bucket's ``categories`` are the paper's y axis: an image's category is ``categories[image id]`` (what
    its source's ``index.json`` says, :func:`~neuronscope.mining.sources.index_categories`), else the
    folder it sits in (:func:`~neuronscope.mining.sources.image_folder`), standing in for its blind labels:
    the share of the bucket's images in each category, estimated from every sample of its bins, each
    weighing its bin's count over the bin's samples (a sparse bin keeps as many samples as a full one).
    ``{}`` when no sample has a category.

    Returns:
        ``[{"from_sd", "to_sd", "count", "samples": [image ids], "categories": {category: share}}]``, low to high.
    """
    if not counts:
        return []
    # More than a bin's reservoir per bucket would not be the union's smallest hashes any more. (The
    # fullest bin's sample count is no stand-in: when every bin holds fewer images than the reservoir,
    # a bucket of several bins can show more.)
    per_bucket = min(per_bucket or reservoir, reservoir)
    scale = std if std > 0 else 1.0
    low, high = edges[0] / scale, edges[-1] / scale
    if std <= 0 or n_buckets == 1 or high <= low:
        n_buckets = 1
    width = (high - low) / n_buckets
    buckets = [{"from_sd": low + i * width, "to_sd": low + (i + 1) * width, "count": 0, "samples": []}
               for i in range(n_buckets)]
    pooled: list[list[str]] = [[] for _ in range(n_buckets)]
    weights: list[Counter[str | None]] = [Counter() for _ in range(n_buckets)]
    known = categories or {}
    for index, count in enumerate(counts):
        # Bins are equal in width, so the bucket of a bin's centre is integer arithmetic (no rounding at
        # bucket edges): centre (index + 1/2) of len(counts) bins, in units of a bucket.
        bucket = (2 * index + 1) * n_buckets // (2 * len(counts))
        buckets[bucket]["count"] += count
        pooled[bucket].extend(samples[index])
        for image in samples[index]:
            weights[bucket][category_of(image, known)] += count / len(samples[index])
    categorised = any(category is not None for weight in weights for category in weight)
    for bucket, ids, weight in zip(buckets, pooled, weights):
        bucket["samples"] = sorted(ids, key=lambda image: (sample_hash(image, seed), image))[:per_bucket]
        total = sum(weight.values())
        bucket["categories"] = {TOP_FOLDER if category is None else category: share / total
                                for category, share in sorted(weight.items(), key=lambda item: item[0] or "")
                                } if categorised else {}
    return buckets
