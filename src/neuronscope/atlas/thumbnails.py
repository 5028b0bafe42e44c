"""Thumbnails of dataset examples with the firing cell marked."""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:  # only the contract's fields are read; the atlas never imports the models package at run time
    from neuronscope.models.preprocess import Preprocess

#: Largest side of a thumbnail in pixels. Smaller inputs (a 64 px model) are kept at their size:
#: enlarging costs 4x the time and disk for no information (a browser can scale them up).
THUMB_SIZE = 128
MARK_COLOUR = (255, 40, 40)


def marked_thumbnail(pixels: np.ndarray, cell: tuple[int, int], grid: tuple[int, int],
                     size: int | None = None) -> Image.Image:
    """The image as the model saw it, with the cell that fired outlined.

    Args:
        pixels: [H, W, 3] uint8, the model's input before normalisation.
        cell: (row, col) of the unit's max on the layer's grid.
        grid: (rows, cols) of the layer's map; a cell covers ``H / rows`` x ``W / cols`` pixels.
        size: side of the square thumbnail; default ``min(input side, THUMB_SIZE)``.
    """
    image = Image.fromarray(pixels)
    size = size or min(max(image.size), THUMB_SIZE)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    rows, cols = grid
    row, col = cell
    if rows * cols > 1:  # a 1x1 map (a pooled vector) has no cell worth marking
        cell_h, cell_w = size / rows, size / cols
        left, top = round(col * cell_w), round(row * cell_h)
        # A grid finer than the thumbnail (an input-size layer: 224 or 288 cells on 128 px) has cells under a
        # pixel: the box is at least the pixel the cell falls in.
        box = (left, top, max(left, round((col + 1) * cell_w) - 1), max(top, round((row + 1) * cell_h) - 1))
        ImageDraw.Draw(image).rectangle(box, outline=MARK_COLOUR, width=max(1, size // 64))
    return image


def input_contract_key(preprocess: Preprocess) -> str:
    """8 hex digits naming how a model turns an image into the pixels a thumbnail shows.

    Two models that resize, crop or pad an image differently see different pixels, and their
    thumbnails of the same image and cell must not share a file. Mean and std are left out:
    a thumbnail is drawn before normalisation.
    """
    contract = {"image_size": list(preprocess.image_size), "resize_mode": preprocess.resize_mode,
                "interpolation": preprocess.interpolation, "fill_color": preprocess.fill_color,
                "thumb_size": THUMB_SIZE}
    return hashlib.sha256(json.dumps(contract, sort_keys=True).encode()).hexdigest()[:8]


#: A thumbnail's name before names carried the input contract: no scan draws one any more.
LEGACY_THUMBNAIL = re.compile(r"[0-9a-f]{16}_g\d+x\d+_r\d+c\d+\.png")


def thumbnail_name(sha256: str, grid: tuple[int, int], cell: tuple[int, int], preprocess: Preprocess) -> str:
    """File name of a marked thumbnail: one per (image content, input contract, grid, cell), shared by every
    unit (and every model with the same contract)."""
    return f"{sha256[:16]}_{input_contract_key(preprocess)}_g{grid[0]}x{grid[1]}_r{cell[0]}c{cell[1]}.png"
