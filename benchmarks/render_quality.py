"""Render quality on the mini CLIP: what a setting does to the two checks of tests/test_featurevis.py.

    .venv/bin/python benchmarks/render_quality.py [--seeds 0,1] [--threads 1] [SETTING ...]
    .venv/bin/python benchmarks/render_quality.py lucid decay_power=1.5 "decay_power=1.5 steps=128 lr=0.1"

Each SETTING is ``lucid`` (``RenderConfig()``: Lucid's defaults) or space-separated ``field=value``
changes to it (fields of ``RenderConfig``; values are Python literals, e.g. ``transforms='none'``). The
tests' settings (``MINI_CLIP_RENDER`` in tests/test_featurevis.py) are ``decay_power=1.25``.

For the card's multimodal units, one render per unit and seed, saved as PNG and read back through the preprocessing:

- zero-shot: how many renders the world's zero-shot classifier ("a {}") names as the unit's concept, per
  seed, and the median rank of the concept over all renders (of 43; chance about 22);
- activation: how many renders beat the unit's best held-out example (max over space), per seed.

Not a speed benchmark: it prints counts, for choosing settings. Figures go in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import statistics
import time

import torch
from PIL import Image

from neuronscope.activations import record, spatial_max
from neuronscope.models import load_model
from neuronscope.models.bundled import bundled_dir
from neuronscope.probing.zeroshot import ZeroShotClassifier
from neuronscope.visualize import RenderConfig, render_units
from neuronscope.world.concepts import ZEROSHOT_TEMPLATE, concept_names
from neuronscope.world.split import load_test_split


def parse_setting(text: str) -> dict:
    """``"lucid"`` -> {}; ``"tv=3 decay_power=1.5"`` -> {"tv": 3, "decay_power": 1.5}."""
    if text == "lucid":
        return {}
    changes = {}
    for part in text.split():
        field, _, value = part.partition("=")
        if field not in RenderConfig.__dataclass_fields__ or not value:
            raise SystemExit(f"{part!r}: use field=value with a RenderConfig field "
                             f"({', '.join(RenderConfig.__dataclass_fields__)})")
        try:
            changes[field] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise SystemExit(f"{part!r}: values are Python literals, e.g. transforms='none' "
                             f"(quoted once more for the shell: \"transforms='none'\")") from None
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="*", default=["lucid"])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    # Every setting parsed before the model loads: a typo in the last is not found after minutes of renders.
    settings = [(setting, parse_setting(setting)) for setting in args.settings]

    card = json.loads((bundled_dir() / "mini_clip_card.json").read_text())["multimodal"]
    layer, units = card["layer"], [(u["unit"], u["concept"]) for u in card["units"]]
    model = load_model("mini-clip", weights="bundled", precision="fp32")
    split = load_test_split()
    dataset = record(model, model.preprocess.normalize(split.pixels()), [layer], batch_size=512)[layer]
    best_example = spatial_max(dataset)[0].max(dim=0).values  # [C]
    names = concept_names()
    classifier = ZeroShotClassifier.build(model, names, ZEROSHOT_TEMPLATE)
    concept = torch.tensor([names.index(c) for _, c in units])
    print(f"mini CLIP, {layer}, the card's {len(units)} units, seeds {seeds}")

    for setting, changes in settings:
        started = time.perf_counter()
        named, ranks, beats = [], [], []
        for seed in seeds:
            config = RenderConfig(seed=seed, **changes)
            renders = render_units(model, layer, [u for u, _ in units], batch_size=16, config=config)
            pixels = model.preprocess.to_pixels([Image.open(io.BytesIO(r.png())) for r in renders])
            probabilities = classifier.probabilities(pixels)
            seed_ranks = ((probabilities > probabilities.gather(1, concept[:, None])).sum(dim=1) + 1).tolist()
            ranks += seed_ranks
            named.append(sum(rank == 1 for rank in seed_ranks))
            reached = spatial_max(record(model, model.preprocess.normalize(pixels), [layer])[layer])[0]
            beats.append(sum(float(reached[i, u]) > float(best_example[u]) for i, (u, _) in enumerate(units)))
        print(f"{setting:32s} zero-shot names the concept {named} of {len(units)}, median rank "
              f"{statistics.median(ranks)}; beats the best example {beats} of {len(units)} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
