"""Training batches of the world, rendered on the fly from the step number.

A batch is a pure function of (world, seed, step): a killed run that resumes
at step s sees exactly the batches it would have seen.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .build import unpack_drawing
from .concepts import CAPTION_TEMPLATES
from .recipe import Mix
from .render import TRAIN_FONTS, augment_drawing, font_path, render_drawing, render_labelled, render_word

KINDS = ("drawing", "word", "composite", "reading")


def check_fonts(mix: Mix) -> None:
    """Resolve each training font the mix draws text in (none for drawings alone), so that a missing font
    package fails in the trainer's own process with its advice, not inside a rendering worker."""
    if mix.word or mix.composite or mix.reading:
        for name in TRAIN_FONTS:
            font_path(name)


class WorldSampler:
    """Renders training batches: images [B, H, W, 3] uint8, captions, and a concept key per sample.

    The key is the concept's index for drawings, words and composites, and
    ``n_concepts + word index`` for reading text; the trainer counts samples
    with equal keys as positives of each other.
    """

    def __init__(self, world_dir: str | Path, size: int, seed: int = 0, mix: Mix = Mix(), augment: bool = False):
        world_dir = Path(world_dir)
        world = json.loads((world_dir / "world.json").read_text())
        packed = np.load(world_dir / "drawings.npz")
        self.size, self.seed, self.mix, self.augment = size, seed, mix, augment
        self.concepts: list[str] = world["concepts"]
        self.reading_words: list[str] = world["reading_words"]
        self.drawings_by_concept = [[d["id"] for d in world["drawings"] if d["concept"] == c and d["split"] == "train"]
                                    for c in self.concepts]
        self._pixels, self._sizes = packed["pixels"], packed["sizes"]
        self._cache: dict[int, Image.Image] = {}

    def drawing(self, drawing_id: int) -> Image.Image:
        if drawing_id not in self._cache:
            self._cache[drawing_id] = unpack_drawing(self._pixels[drawing_id], self._sizes[drawing_id])
        return self._cache[drawing_id]

    def sample(self, step: int, index: int) -> tuple[np.ndarray, str, int]:
        """One training sample: image [H, W, 3] uint8, caption, concept key."""
        rng = np.random.default_rng([self.seed, step, index])
        kind = KINDS[int(rng.choice(len(KINDS), p=self.mix.probabilities()))]
        template = CAPTION_TEMPLATES[kind]
        caption_template = template[int(rng.integers(len(template)))]
        # Drawn for every sample (the stream of draws is part of the batch), resolved only where text is drawn:
        # a sampler of drawings alone needs no font package.
        font_name = TRAIN_FONTS[int(rng.integers(len(TRAIN_FONTS)))]
        if kind == "reading":
            word_index = int(rng.integers(len(self.reading_words)))
            word = self.reading_words[word_index]
            image = render_word(word, font_path(font_name), rng, self.size)
            return np.asarray(image), caption_template.format(word, word), len(self.concepts) + word_index
        concept_index = int(rng.integers(len(self.concepts)))
        concept = self.concepts[concept_index]
        if kind == "word":
            image = render_word(concept, font_path(font_name), rng, self.size)
        else:
            choices = self.drawings_by_concept[concept_index]
            drawing = self.drawing(choices[int(rng.integers(len(choices)))])
            if self.augment:
                drawing = augment_drawing(drawing, rng, self.size)
            image = (render_drawing(drawing, rng, self.size) if kind == "drawing"
                     else render_labelled(drawing, concept, font_path(font_name), rng, self.size))
        return np.asarray(image), caption_template.format(concept, concept), concept_index

    def batch(self, step: int, batch_size: int) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Batch ``step``: images [B, H, W, 3] uint8, B captions, keys [B] int64."""
        samples = [self.sample(step, i) for i in range(batch_size)]
        images = np.stack([s[0] for s in samples])
        return images, [s[1] for s in samples], np.array([s[2] for s in samples], dtype=np.int64)


class BatchStream(torch.utils.data.IterableDataset):
    """Batches ``start_step, start_step + 1, ...`` (tokenized in the loader's workers).

    With W workers, worker w renders steps ``start_step + w, + w + W, ...``; the DataLoader takes
    one batch from each worker in turn, so the trainer still sees the steps in order.
    """

    def __init__(self, world_dir: str | Path, size: int, seed: int, mix: Mix, batch_size: int,
                 start_step: int, end_step: int, context_length: int, augment: bool = False):
        self.args = (world_dir, size, seed, mix, augment)
        self.batch_size, self.start_step, self.end_step = batch_size, start_step, end_step
        self.context_length = context_length

    def __iter__(self):
        import open_clip

        sampler = WorldSampler(*self.args)
        worker = torch.utils.data.get_worker_info()
        first, stride = (0, 1) if worker is None else (worker.id, worker.num_workers)
        for step in range(self.start_step + first, self.end_step, stride):
            images, captions, keys = sampler.batch(step, self.batch_size)
            tokens = open_clip.tokenize(captions, context_length=self.context_length)
            yield step, torch.from_numpy(images), tokens, torch.from_numpy(keys)
