"""The mini CLIP's model card: tables from ``world eval``, pictures of its multimodal units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..atlas import Atlas
from ..models.loader import LoadedModel
from .evaluate import layer_responses
from .split import TestSplit

#: The ``source`` of the labels the card writes (``neuronscope label`` writes ``user``).
CARD_LABEL_SOURCE = "world-card"


def top_images_sheet(split: TestSplit, responses: dict[str, torch.Tensor], unit: int, per_row: int = 8,
                     scale: int = 2) -> Image.Image:
    """Two rows: the unit's top held-out drawings (renders), then its top held-out-font words.

    ``responses`` maps ``"drawing"`` and ``"word"`` to the layer's responses [N_kind, U]
    to that kind's images, in the split's order.
    """
    rows = []
    for kind in ("drawing", "word"):
        index = split.indices(kind)
        best = index[responses[kind][:, unit].argsort(descending=True)[:per_row].numpy()]
        rows.append(np.concatenate([split.images[i] for i in best], axis=1))
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    return sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def card_tables(report: dict) -> str:
    """Markdown tables of a ``world eval`` report."""
    zeroshot, reading, multimodal = report["zeroshot"], report["reading"], report["multimodal"]
    parts = [
        "### Zero-shot (template `a {}`, all concepts)",
        _table(["held-out drawings", "held-out-font words", "typographic attack success"],
               [[f"{zeroshot['drawings']:.1%}", f"{zeroshot['words_heldout_font']:.1%}",
                 f"{zeroshot['attack_success']:.1%}"]]),
        f"### Reading ({reading['gallery']} reading captions, held-out fonts)",
        _table(["top-1", "top-5", "median rank"],
               [[f"{reading['top1']:.1%}", f"{reading['top5']:.1%}", reading["median_rank"]]]),
        "### Concepts with a multimodal unit, by layer",
        _table(["layer", "trained 0.85", "trained 0.90", "trained 0.95",
                f"untrained 0.90 ({len(multimodal['untrained'])} seeds)",
                f"deranged labels 0.90 ({len(multimodal['shuffled_seeds'])} seeds)"],
               [[name, c["trained"]["0.85"], c["trained"]["0.9"], c["trained"]["0.95"],
                 ", ".join(map(str, c.get("untrained", []))), ", ".join(map(str, c.get("shuffled", [])))]
                for name, c in multimodal["by_layer"].items()]),
        f"Best layer: `{multimodal['layer']}`; live units of the untrained controls there: "
        + ", ".join(f"{share:.1%}" for share in multimodal["untrained_live"]) + ".",
        f"### Multimodal units on `{multimodal['layer']}` (AUROC ≥ 0.90, one best unit per concept)",
        _table(["concept", "unit", "AUROC drawings", "AUROC words"],
               [[u["concept"], u["unit"], f"{u['auroc_drawings']:.3f}", f"{u['auroc_words']:.3f}"]
                for u in multimodal["units"]]),
    ]
    if "generalization" in report:
        found = report["generalization"]
        parts += [f"### Training vs held-out drawings ({found['train_images']:,} renders of the training drawings)",
                  _table(["zero-shot, training drawings", "zero-shot, held-out drawings",
                          "linear probe fit to the training drawings, held-out drawings"],
                         [[f"{found['drawings_train']:.1%}", f"{found['drawings_heldout']:.1%}",
                           f"{found['probe_drawings_heldout']:.1%}"]])]
    return "\n\n".join(parts)


def write_unit_sheets(model: LoadedModel, split: TestSplit, report: dict, out_dir: str | Path,
                      count: int = 4) -> list[Path]:
    """PNG sheets of the top held-out drawings and words of the first ``count`` multimodal units."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    units = report["multimodal"]["units"][:count]
    if not units:
        return []
    layer = units[0]["layer"]  # one best layer for every reported unit
    responses = {kind: next(iter(layer_responses(model, split.pixels(split.indices(kind)), [layer]).values()))
                 for kind in ("drawing", "word")}  # one forward per kind, shared by every sheet
    paths = []
    for unit in units:
        path = out_dir / f"unit_{unit['unit']}_{unit['concept']}.png"
        top_images_sheet(split, responses, unit["unit"]).save(path)
        paths.append(path)
    return paths


def label_card_units(atlas: Atlas | str | Path, model_key: str, card: dict, *, keep_existing: bool = True) -> int:
    """Label each multimodal unit of ``card`` (the card, or any ``world eval`` report) with its concept, under
    ``model_key``, in an open atlas or the one at a path; returns how many labels were written.

    With ``keep_existing`` (the default) a unit that already has a label, a user's own or an earlier
    card's, keeps it: ``neuronscope label`` is how a label is replaced.
    """
    if not isinstance(atlas, Atlas):
        with Atlas(atlas) as opened:
            return label_card_units(opened, model_key, card, keep_existing=keep_existing)
    written = 0
    for entry in card["multimodal"]["units"]:
        if keep_existing and atlas.label(model_key, entry["layer"], entry["unit"]) is not None:
            continue
        atlas.set_label(model_key, entry["layer"], entry["unit"], entry["concept"], source=CARD_LABEL_SOURCE)
        written += 1
    return written
