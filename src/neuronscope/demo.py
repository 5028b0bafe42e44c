"""The interim main job: load a model, list its layers, summarise its neurons on a few images.

Compute only; ``neuronscope demo`` prints the :class:`DemoReport`.
"""

from __future__ import annotations

import io
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from neuronscope.activations import LayerInfo, Recorder, list_layers, spatial_max, spatial_mean
from neuronscope.models import LoadedModel


@dataclass(frozen=True)
class UnitScore:
    unit: int
    score: float


@dataclass(frozen=True)
class ImageTop:
    """The units an image excites most: max over space, with the cell (row, col)."""

    image: str
    top: list[dict[str, Any]]


@dataclass
class DemoReport:
    model: str
    layer: str
    precision: str
    precision_reason: str
    image_source: str
    layers: list[LayerInfo]
    stats: dict[str, float]
    top_units: list[UnitScore]
    images: list[ImageTop] = field(default_factory=list)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "layer": self.layer, "precision": self.precision,
            "precision_reason": self.precision_reason, "note": self.note,
            "image_source": self.image_source, "stats": self.stats,
            "top_units": [{"unit": u.unit, "score": u.score} for u in self.top_units],
            "images": [{"image": i.image, "top": i.top} for i in self.images],
            "layers": [info.to_dict() for info in self.layers],
        }


def images_from_tar(path: Path, count: int) -> list[tuple[str, Image.Image]]:
    """The first ``count`` PNGs of a tar shard (member name, RGB image), in archive order."""
    found: list[tuple[str, Image.Image]] = []
    with tarfile.open(path) as archive:
        for member in archive:
            if len(found) >= count:
                break
            if member.isfile() and member.name.lower().endswith(".png"):
                data = archive.extractfile(member)
                if data is not None:
                    found.append((member.name, Image.open(io.BytesIO(data.read())).convert("RGB")))
    return found


def synthetic_images(count: int, size: int, seed: int) -> list[tuple[str, Image.Image]]:
    """Seeded shapes on plain backgrounds: stand-ins when no test split is shipped."""
    rng = random.Random(seed)
    images = []
    for index in range(count):
        background = tuple(rng.randrange(256) for _ in range(3))
        image = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 4)):
            colour = tuple(rng.randrange(256) for _ in range(3))
            x0, y0 = rng.randrange(size // 2), rng.randrange(size // 2)
            x1, y1 = x0 + rng.randint(size // 8, size // 2), y0 + rng.randint(size // 8, size // 2)
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        images.append((f"synthetic-{index:02d}", image))
    return images


def demo_report(model: LoadedModel, images: list[tuple[str, Image.Image]], *, image_source: str,
                layer: str = "neurons", top: int = 5, batch_size: int = 8, note: str | None = None) -> DemoReport:
    """Layers of ``model`` and a summary of ``layer`` over ``images``."""
    names = [name for name, _ in images]
    maps: list[torch.Tensor] = []
    with Recorder(model, layer, early_stop=True) as recorder:
        canonical = recorder.layers[0]
        for start in range(0, len(images), batch_size):
            batch = [image for _, image in images[start:start + batch_size]]
            maps.append(recorder.run(batch)[canonical].float().cpu())
    acts = torch.cat(maps)  # [N, C, H, W] (or tokens [N, T, D])
    grid = model.token_grid if acts.ndim == 3 else None
    means = spatial_mean(acts, grid=grid)  # [N, C]
    peaks, cells = spatial_max(acts, grid=grid)  # [N, C], [N, C, 2]
    overall = means.mean(dim=0)  # [C]
    best = overall.topk(min(top, overall.numel()))
    per_image = []
    for row, name in enumerate(names):
        values, units = peaks[row].topk(min(top, peaks.shape[1]))
        per_image.append(ImageTop(name, [
            {"unit": int(u), "activation": round(float(v), 4), "cell": [int(c) for c in cells[row, u]]}
            for v, u in zip(values, units)
        ]))
    stats = {"mean": float(acts.mean()), "std": float(acts.std()), "max": float(acts.max()), "min": float(acts.min()),
             "units": int(means.shape[1]), "images": len(names)}
    return DemoReport(
        model=model.key, layer=canonical, precision=model.precision.name,
        precision_reason=model.precision.reason, image_source=image_source,
        layers=list_layers(model), stats={k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()},
        top_units=[UnitScore(int(u), round(float(v), 4)) for v, u in zip(best.values, best.indices)],
        images=per_image, note=note,
    )
