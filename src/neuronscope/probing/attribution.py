"""Text → units: which units of an image-tower layer a text prompt reads from.

The paper reads CLIP bilinearly: the logit of an image and a text is
``e(x_img) · t``, and to first order in a layer's activations ``a`` it is
``aᵀ W t`` with ``W = ∂e/∂a``, so a text ``t`` puts a weight on every unit.
On an attention-pool ResNet ``W`` depends on the image, so we use the
gradient × activation attribution of the logit, per image:

    A_n(t)[u] = Σ_{positions} a_n[u] · ∂(e_n · t)/∂a_n[u]          (one image n)

and average it over a sample of images, each weighted by how much the text
would retrieve it — CLIP's own text→image posterior over the sample,
``w_n(t) = softmax_n(s · ê_n · t)`` at the model's logit scale ``s``:

    A(t)[u] = Σ_n w_n(t) A_n(t)[u]

Why the weighting: a plain mean over a generic sample is dominated by units
that are on for every image; a text's own units fire on the images the text
describes (on the mini CLIP the plain mean ranks a concept's card unit about
20th of 512 for "a {concept}", the weighted one about 5th). ``e`` is the
image embedding before normalisation: on the normalised one the gradient of
a well-matched image is close to orthogonal to the text and the units that
make the match get no credit.

``A_n(t)`` is linear in ``t``: ``A_n(t) = M_n t`` with ``M_n = Σ_pos a_n ⊙
∂e_n/∂a_n`` of shape [U, D]. :class:`AttributionBasis` stores ``M`` for the
sample (one backward pass per embedding dimension), after which any number
of texts (a 10k-word vocabulary, a text optimizer's candidates) cost no
backward pass at all. For a handful of prompts, :func:`attribute_texts`
takes one backward pass per prompt instead.

Activations and gradients come from the :class:`~neuronscope.activations.Recorder`
(``detach=False``): its capture is a clone, and the gradient *with respect
to the layer* is read on the clone's input edge — the tensor the forward
went on with — so in-place layers such as ``act3:input`` work too.

The image sample (documented default): the mini CLIP's bundled test split —
clipart drawings and rendered words of 43 concepts — brought to the model's
input by its preprocessing contract. It ships with the package, so every
model has a sample offline; for a real CLIP pass your own photos
(``images=``/``--images``): the text side of a photo model is best read on
photos. A sample is built for one model's input size (``preprocess=``); the
entry points refuse a sample of another size rather than resize it silently.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from neuronscope.activations import Layout, Recorder, known_layout, map_grid, unit_axis
from neuronscope.errors import NeuronscopeError
from neuronscope.models.loaded import LoadedModel, require_loaded, runs_in_eval
from neuronscope.models.preprocess import Preprocess
from neuronscope.probing.ranking import top_k
from neuronscope.probing.zeroshot import encode_pixels, encode_texts, logit_scale, text_list
from neuronscope.units import parse_units
from neuronscope.world.split import bundled_split

#: A progress callback: ``(done, total)`` backward passes, as the commands' ProgressBars take it.
OnStep = Callable[[int, int], None]

#: Images in the default sample: enough that every concept of the mini CLIP's
#: world has a few images to be retrieved, few enough for a CPU.
DEFAULT_SAMPLE_SIZE = 256


# ---------------------------------------------------------------------------- the image sample


@dataclass
class ImageSample:
    """Images over which attributions are averaged.

    Attributes:
        pixels: [N, 3, H, W] in [0, 1], at the input size of the model it was built for.
        names: one id per image (split file names or source-relative paths).
        source: what the sample is, for provenance (``"mini-clip test split"``, a folder name).
    """

    pixels: Tensor
    names: list[str]
    source: str

    @property
    def key(self) -> str:
        """The sample's identity: its source, its images' ids and their size. Attribution scores depend on
        the sample, so only scores over the same key are comparable (an atlas merges texts only then)."""
        text = "\n".join([self.source, "x".join(map(str, self.pixels.shape[-2:])), *self.names])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __repr__(self) -> str:  # the default one prints the pixels and every name
        height, width = self.pixels.shape[-2:]
        return f"ImageSample({self.source!r}, {len(self.pixels)} images of {height}x{width} px)"


def default_image_sample(n: int = DEFAULT_SAMPLE_SIZE, seed: int = 0, *,
                         preprocess: Preprocess | None = None) -> ImageSample:
    """``n`` images of the mini CLIP's bundled test split, drawn without replacement, in split order.

    ``preprocess``: the contract of the model the sample is for (``model.preprocess``); None keeps the
    split's own 64 px, the mini CLIP's input. The split is decoded on the first call and kept for the
    life of the process (about 44 MB), so later samples decode nothing.
    """
    split = bundled_split()
    total = len(split.entries)
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    pixels = split.pixels(chosen)
    if preprocess is not None and tuple(pixels.shape[-2:]) != preprocess.image_size:
        pixels = preprocess.to_pixels(split.pil(int(i)) for i in chosen)
    return ImageSample(pixels, [split.entries[i]["file"] for i in chosen], "mini-clip test split")


def image_sample_from(source: str, n: int = DEFAULT_SAMPLE_SIZE, seed: int = 0, *,
                      preprocess: Preprocess) -> ImageSample:
    """Up to ``n`` images of a folder, ``.tar`` shard or path list, drawn at random (seeded), brought to
    the model's input by its contract ``preprocess`` (``model.preprocess``).

    Only the drawn files are decoded (unreadable ones are passed over for the
    next in the draw), so a large folder costs its listing, not its pixels.
    """
    from PIL import Image

    from neuronscope.imagefiles import SkippedFile, decode_image_bytes
    from neuronscope.mining.sources import open_source

    listed = open_source(source)
    picked: list[tuple[int, str, Image.Image]] = []
    for index in np.random.default_rng(seed).permutation(len(listed.entries)):
        entry = listed.entries[int(index)]
        try:
            picked.append((int(index), entry.name, decode_image_bytes(entry.read(), entry.name)))
        except (SkippedFile, OSError):
            continue
        if len(picked) == n:
            break
    if not picked:
        raise NeuronscopeError(f"--images {source}: no readable images; give a folder, .tar shard or .txt list")
    picked.sort(key=lambda item: item[0])  # listing order, like the bundled sample
    return ImageSample(preprocess.to_pixels(image for _, _, image in picked), [name for _, name, _ in picked],
                       listed.name)


def _sample_for(model: LoadedModel, sample: ImageSample | None) -> ImageSample:
    """``sample``, or the default one built for ``model``; a sample of another input size is refused."""
    if sample is None:
        return default_image_sample(preprocess=model.preprocess)
    if tuple(sample.pixels.shape[-2:]) != model.preprocess.image_size:
        height, width = model.preprocess.image_size
        raise NeuronscopeError(
            f"the image sample ({sample.source}) is {sample.pixels.shape[-2]}x{sample.pixels.shape[-1]} px but "
            f"{model.key} takes {height}x{width}: build it for the model, e.g. "
            "default_image_sample(preprocess=model.preprocess) or image_sample_from(path, preprocess=model.preprocess)")
    return sample


# ---------------------------------------------------------------------------- gradients w.r.t. the layer


def _layer_gradient_edge(capture: Tensor) -> torch.autograd.graph.GradientEdge:
    """The autograd edge of the tensor the forward went on with, from the recorder's clone of it."""
    if capture.grad_fn is None or len(capture.grad_fn.next_functions) != 1:
        raise RuntimeError("the layer's capture is not a clone in the autograd graph; record with detach=False")
    node, output_nr = capture.grad_fn.next_functions[0]
    return torch.autograd.graph.GradientEdge(node, output_nr)


def _unit_sums(values: Tensor, layout: Layout) -> Tensor:
    """Sum over everything but batch and units: [N, C, H, W] (or [N, H, W, C] as ``layout`` says) or
    [N, T, D] -> [N, U]."""
    return values.movedim(unit_axis(values, layout), 1).flatten(2).sum(-1)


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _backward_gxa(model: LoadedModel, layer: str, pixels: Tensor,
                  directions: Sequence[Tensor] | None, batch_size: int,
                  on_step: OnStep | None = None) -> tuple[Tensor, Tensor, tuple[int, int]]:
    """Gradient × activation of ``e · direction`` per image, for several directions.

    Args:
        pixels: [N, 3, H, W] in [0, 1].
        directions: K tensors [N, D] (one vector per image and direction), or
            None for the D basis vectors (the Jacobian).
        batch_size: images per forward (the graph of one batch is held in memory).
        on_step: called ``(done, total)`` after each backward pass (K per image batch): a basis of a real
            model takes minutes, a report per batch would leave long silences.

    Returns:
        ``(gxa [K, N, U], embeddings [N, D], grid)``: attributions, the
        unnormalised image embeddings (float32, on the model's device) and the layer's grid.
    """
    gxa_parts, embedding_parts, grid = [], [], (1, 1)
    batch_count = -(-len(pixels) // batch_size)
    for number, rows in enumerate(_batches(len(pixels), batch_size)):
        # The pixels need a graph for the layer to have one (the weights are frozen).
        inputs = model.preprocess.normalize(pixels[rows].to(model.device)).requires_grad_(True)
        with Recorder(model, layer, detach=False) as recorder, torch.enable_grad():
            embeddings = model.encode_images(inputs).float()  # [B, D]; encode_images autocasts
            recorder.check_image_forward()  # a text-tower layer: say so, not "has no capture"
            capture = recorder[layer]
        edge = _layer_gradient_edge(capture)
        acts = capture.detach().float()
        layout = known_layout(model, layer, acts)
        grid = map_grid(acts, model.token_grid, layout=layout, prefix_tokens=model.prefix_tokens)
        count = embeddings.shape[1] if directions is None else len(directions)
        per_direction = []
        for k in range(count):
            if directions is None:
                grad_output = torch.zeros_like(embeddings)
                grad_output[:, k] = 1
            else:
                grad_output = directions[k][rows].to(embeddings)
            (grad,) = torch.autograd.grad(embeddings, edge, grad_outputs=grad_output, retain_graph=k < count - 1)
            per_direction.append(_unit_sums(grad.float() * acts, layout))  # [B, U]
            if on_step is not None:
                on_step(number * count + k + 1, batch_count * count)
        gxa_parts.append(torch.stack(per_direction))  # [K, B, U]
        embedding_parts.append(embeddings.detach())
    return torch.cat(gxa_parts, dim=1), torch.cat(embedding_parts), grid


def retrieval_weights(image_embeddings: Tensor, text_features: Tensor, logit_scale: float) -> Tensor:
    """CLIP's text→image posterior over the sample, [N, P]: softmax over images of the scaled cosine."""
    cosine = torch.nn.functional.normalize(image_embeddings, dim=-1) @ text_features.T  # [N, P]
    return (logit_scale * cosine).softmax(dim=0)


# ---------------------------------------------------------------------------- results


@dataclass
class TextAttribution:
    """Unit weights of some texts at one layer.

    Attributes:
        model: the model key (``mini-clip@bundled``).
        layer: canonical layer name.
        texts: the P texts, in input order.
        scores: [P, U] attribution of each text to each unit (higher: the text reads more from the unit).
        sample: the image sample's description.
    """

    model: str
    layer: str
    texts: list[str]
    scores: Tensor
    sample: str = ""

    def __repr__(self) -> str:  # the default one prints the scores and every text
        return (f"TextAttribution({self.model} {self.layer}, {len(self.texts)} texts x {self.scores.shape[1]} units, "
                f"sample {self.sample!r})")

    def _row(self, index: int) -> int:
        """``index`` checked against the texts: a negative one would wrap, a large one fail inside torch."""
        row, count = operator.index(index), len(self.texts)
        if not 0 <= row < count:
            raise ValueError(f"text {row}: the attribution has {count} texts (0 to {count - 1})")
        return row

    def top(self, index: int = 0, k: int = 20) -> list[dict]:
        """The ``k`` units of text ``index`` with the highest score, ``[{"unit", "score"}]``, best first."""
        values, units = top_k(self.scores[self._row(index)], k)  # ties in unit order
        return [{"unit": int(u), "score": round(float(v), 6)} for v, u in zip(values, units)]

    def rank_of(self, index: int, unit: int) -> int:
        """1-based rank of ``unit`` among the layer's units for text ``index`` (ties counted in its favour)."""
        row = self.scores[self._row(index)]
        (unit,) = parse_units(unit, len(row))
        return int((row > row[unit]).sum()) + 1

    def to_json(self, index: int | None = None, k: int = 20) -> dict | list[dict]:
        """Text ``index``'s ``{"model", "layer", "prompt", "units"}`` (its ``k`` best units, :meth:`top`), or,
        without ``index``, a list of them for every text in order."""
        if index is None:
            return [self.to_json(row, k) for row in range(len(self.texts))]
        return {"model": self.model, "layer": self.layer, "prompt": self.texts[self._row(index)],
                "units": self.top(index, k)}


@dataclass
class AttributionBasis:
    """Per-image linear maps from a text embedding to unit attributions: ``A_n(t) = M_n t``.

    Attributes:
        model, layer: as in :class:`TextAttribution`.
        per_image: ``M`` [N, U, D] (gradient × activation of each embedding dimension).
        image_embeddings: [N, D] unnormalised image embeddings of the sample.
        logit_scale: the model's temperature ``s`` for the retrieval weights.
        grid: (rows, cols) of the layer's map (for registering the layer in an atlas).
        sample: the image sample's description.
        sample_key: the image sample's identity (:attr:`ImageSample.key`).
    """

    model: str
    layer: str
    per_image: Tensor
    image_embeddings: Tensor
    logit_scale: float
    grid: tuple[int, int] = (1, 1)
    sample: str = ""
    sample_key: str = ""
    _flat: Tensor | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # the default one prints M and the embeddings
        images, units, dims = self.per_image.shape
        return (f"AttributionBasis({self.model} {self.layer}, {images} images x {units} units x {dims} dims, "
                f"sample {self.sample!r})")

    @property
    def units(self) -> int:
        return self.per_image.shape[1]

    def scores(self, text_features: Tensor, units: Sequence[int] | None = None,
               chunk_elements: int = 2**25) -> Tensor:
        """Attributions [P, U] of L2-normalised text embeddings [P, D] (no backward pass).

        ``units``: only these columns (in this order), for N × len(units) × D × P work instead of
        N × U × D × P (english-10k against all 512 units of the mini CLIP is ~170 GFLOP).

        Raises:
            UnitsError: a unit the layer does not have.
        """
        if units is None:
            if self._flat is None:
                self._flat = self.per_image.reshape(len(self.per_image), -1)  # [N, U*D], a view
            flat, count = self._flat, self.units
        else:
            units = self._check_units(units)
            flat, count = self.per_image[:, units, :].reshape(len(self.per_image), -1), len(units)
        dim = self.per_image.shape[2]
        text_features = text_features.to(self.per_image)
        weights = retrieval_weights(self.image_embeddings, text_features, self.logit_scale)  # [N, P]
        chunk = max(1, chunk_elements // max(1, count * dim))  # no units: one chunk of empty rows
        parts = []
        for rows in _batches(len(text_features), chunk):
            mixed = (weights[:, rows].T @ flat).view(rows.stop - rows.start, count, dim)  # [p, units, D]: Σ_n w_n M_n
            parts.append(torch.bmm(mixed, text_features[rows].unsqueeze(-1)).squeeze(-1))  # [p, units]
        return torch.cat(parts) if parts else text_features.new_zeros(0, count)

    def _check_units(self, units: str | int | Sequence[int]) -> list[int]:
        """``units`` read by :func:`~neuronscope.units.parse_units` (``"473,65"``, ``"all"``, NumPy / torch
        integers) as plain ints in their order, each checked against the layer: a negative unit would wrap, a
        large one fail inside torch without naming the layer's size (UnitsError naming its range)."""
        return parse_units(units, self.units, repeats=True)

    def attribute(self, model: LoadedModel, texts: str | Sequence[str]) -> TextAttribution:
        """Encode ``texts`` with the text tower and attribute them (a single string is one text)."""
        texts = text_list(texts)
        return TextAttribution(self.model, self.layer, texts, self.scores(encode_texts(model, texts)), self.sample)

    def top_texts(self, texts: str | Sequence[str], text_features: Tensor, units: str | int | Sequence[int],
                  k: int = 20) -> dict[int, list[tuple[str, float]]]:
        """Unit → texts: for each unit, the ``k`` texts that put the most weight on it, best first.

        ``text_features``: [P, D], the embeddings of the P ``texts`` in order (:func:`encode_texts`).
        """
        texts = text_list(texts)
        if len(texts) != len(text_features):
            raise ValueError(f"{len(texts)} texts but {len(text_features)} text embeddings: give the embeddings "
                             "of these texts, encode_texts(model, texts)")
        units = self._check_units(units)
        chosen = self.scores(text_features, units)  # [P, len(units)]
        values, rows = top_k(chosen, k)  # [k, len(units)], ties in the texts' order
        return {unit: [(texts[int(r)], float(v)) for v, r in zip(values[:, j], rows[:, j])]
                for j, unit in enumerate(units)}


# ---------------------------------------------------------------------------- entry points


@runs_in_eval
def attribute_texts(model: LoadedModel, layer: str, texts: str | Sequence[str], sample: ImageSample | None = None,
                    *, batch_size: int = 64) -> TextAttribution:
    """Unit attributions of a few ``texts`` at ``layer``: one backward pass per text (and image batch).

    Args:
        layer: a layer name or alias (``neurons``).
        texts: prompts, e.g. ``["a photo of a spider"]`` (a single string is one prompt).
        sample: the images to average over, at the model's input size (default: :func:`default_image_sample`
            built for the model).
        batch_size: images per forward.

    Returns:
        A :class:`TextAttribution` with ``scores`` [P, U]; equal to
        ``compute_basis(...).scores(...)`` on the same sample.
    """
    require_loaded(model, "attribute_texts")
    texts = text_list(texts)
    if not texts:
        raise NeuronscopeError("no texts given: attribute at least one prompt")
    sample = _sample_for(model, sample)
    canonical = model.resolve_layer(layer)
    text_features = encode_texts(model, texts)  # [P, D]
    # The weights need the embeddings, which need a forward: one cheap no-grad pass first. Unnormalised, as
    # the basis keeps them: retrieval_weights normalises (one place for it).
    embeddings = encode_pixels(model, sample.pixels, batch_size, normalize=False)  # [N, D]
    weights = retrieval_weights(embeddings, text_features, logit_scale(model))  # [N, P]
    directions = [weights[:, p, None] * text_features[p] for p in range(len(texts))]  # P x [N, D]
    gxa, _, _ = _backward_gxa(model, canonical, sample.pixels, directions, batch_size)  # [P, N, U]
    return TextAttribution(model.key, canonical, texts, gxa.sum(dim=1).cpu(), sample.source)


@runs_in_eval
def compute_basis(model: LoadedModel, layer: str, sample: ImageSample | None = None,
                  *, batch_size: int = 64, on_step: OnStep | None = None) -> AttributionBasis:
    """The :class:`AttributionBasis` of ``layer`` over ``sample``: D backward passes per image batch.

    ``on_step(done, total)`` is called after each backward pass (for a progress bar).

    Memory: ``M`` holds N × U × D float32 values (256 × 512 × 128 on the
    mini CLIP: 67 MB; RN50x4 with 64 images: 420 MB).
    """
    require_loaded(model, "compute_basis")
    sample = _sample_for(model, sample)
    canonical = model.resolve_layer(layer)
    gxa, embeddings, grid = _backward_gxa(model, canonical, sample.pixels, None, batch_size,
                                          on_step)  # [D, N, U], [N, D]
    per_image = gxa.permute(1, 2, 0).contiguous().cpu()  # [N, U, D]
    return AttributionBasis(model.key, canonical, per_image, embeddings.cpu(), logit_scale(model), grid,
                            sample.source, sample.key)

