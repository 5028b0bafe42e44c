"""Faceted feature visualization (Goh et al. 2021): steer a unit's render towards a facet.

A *facet probe* is a linear classifier per probe layer (flattened spatial
activations, facet images vs generic images, class-balanced, L-BFGS). The
render maximises

    f(g(x)) + strength * sum_L  w_L . (g_L(x) * relu(d f / d g_L))

where ``f`` is the unit's channel objective and ``g_L`` the probe layers:
of what the unit uses at layer L, the probe's facet direction is
rewarded. The paper ramps the strength over a batch (0.1 -> 5), subtracts
10 times the image's mean squared distance from grey (its ``l2()`` penalty)
and uses Adam's lr 0.02 (:class:`FacetSettings`).

The probe layers are a per-model registry entry (``ModelSpec.probe_layers``);
the mini CLIP's built-in facets ``text`` and ``drawing`` come from its
bundled test split, so facets work offline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from neuronscope.activations.names import resolve_layers
from neuronscope.activations.record import record
from neuronscope.activations.geometry import layer_geometry
from neuronscope.atlas.runs import model_identity
from neuronscope.errors import LayerNotFoundError, NeuronscopeError
from neuronscope.imagefiles import IMAGE_SUFFIXES, SkippedFile, decode_image_bytes
from neuronscope.mining.sources import Entry, content_sha256, open_source
from neuronscope.models.aliases import transformer_block_paths
from neuronscope.models.loaded import LoadedModel, require_loaded
from neuronscope.objectives import Context, Objective, channel, l2
from neuronscope.units import parse_units
from neuronscope.visualize.render import StepCallback, render
from neuronscope.visualize.results import RenderConfig, UnitRender
from neuronscope.visualize.units import chunks, render_passes

BUILTIN_FACETS = ("text", "drawing")

# The paper's faceted settings (OpenAI's facet code for RN50x4).
FACET_STRENGTHS = (0.1, 5.0)
FACET_L2 = 10.0
FACET_LR = 0.02
#: That code weights each probe layer's term 5 / (number of probe layers): 1 for RN50x4's five, so a model
#: with fewer probe layers gets as much facet in all as RN50x4 does.
FACET_REFERENCE_LAYERS = 5
#: Bumped when the faceted objective changes, so an atlas's stored renders of the old one are not taken
#: for renders of this one (2: f reads the unit after a ReLU, and probe layers weigh 5 / their count).
FACET_RECIPE = 2


@dataclass(frozen=True)
class FacetSettings:
    """The faceted recipe's own settings, applied over whatever :class:`RenderConfig` a render is given
    (its steps, size, seed...), so that a caller's config does not silently drop the paper's.

    Attributes:
        lr: Adam's learning rate (the paper's 0.02), replacing the config's.
        l2: the weight of the paper's penalty on the image's *mean squared* distance from grey (its ``l2()``;
            10). It is its own term: ``RenderConfig.l2`` (``--l2``, a weight on the RMS distance) still adds
            its own penalty on top.
    """

    lr: float = FACET_LR
    l2: float = FACET_L2

    def apply(self, config: RenderConfig) -> RenderConfig:
        """``config`` with this lr (the L2 term is the objective's, see :func:`render_faceted`)."""
        return dataclasses.replace(config, lr=self.lr)

    def penalty(self) -> Objective:
        """``l2 * mean((x - 0.5)^2)``, to subtract."""
        return self.l2 * (l2() * l2())

    def job_settings(self) -> dict[str, float | int]:
        """What a stored faceted job adds to its render config's settings (its key): the L2 term and the recipe."""
        return {"facet_l2": self.l2, "facet_recipe": FACET_RECIPE}


# --------------------------------------------------------------------------- probe layers


def probe_layers(model: LoadedModel) -> list[str]:
    """The model's facet-probe layers, canonical: its registry entry, else a default for its family (every
    other block of a ResNet's ``layer3``; the middle third of a ViT's residual blocks).

    Raises:
        NeuronscopeError: no entry, and no default fits (another family, or a tower without those blocks,
            such as ConvNeXt's or a timm trunk's).
    """
    patterns = list(model.spec.probe_layers)
    if patterns:
        return resolve_layers(model.module, patterns, model.layer_aliases, model_key=model.key)
    tower = model.spec.image_tower
    try:
        if model.family == "conv":
            return resolve_layers(model.module, [f"{tower}.layer3.*"], model.layer_aliases, model_key=model.key)[::2]
        if model.family == "vit":
            blocks = resolve_layers(model.module, [f"{tower}.transformer.resblocks.*"], model.layer_aliases,
                                    model_key=model.key)
            return blocks[len(blocks) // 3: 2 * len(blocks) // 3 + 1]
    except LayerNotFoundError:
        pass  # a layer the user never named is no help: say what to register instead
    raise NeuronscopeError(f"{model.key} has no facet-probe layers; register them as "
                           f"ModelSpec.probe_layers (e.g. {_probe_layers_example(model)})")


def _probe_layers_example(model: LoadedModel) -> str:
    """Probe layers to suggest in the refusal, fit to the tower: the middle third of a ViT's transformer blocks
    (a timm trunk's ``blocks``, which the default does not read), else a ResNet's ``layer3`` blocks."""
    if model.family == "vit":
        tower = model.spec.image_tower
        blocks = [f"{tower}.{path}" if tower else path for path in transformer_block_paths(model.image_module)]
        middle = blocks[len(blocks) // 3: 2 * len(blocks) // 3 + 1]
        parents = {block.rpartition(".")[0] for block in middle}
        if len(parents) == 1:
            return f"'{parents.pop()}.{{{','.join(block.rpartition('.')[2] for block in middle)}}}'"
        if middle:
            return ", ".join(f"'{block}'" for block in middle)
    return "'visual.layer3.{0,2,4}'"


def check_probe_layers(model: LoadedModel, layer: str, layers: Sequence[str] | None = None) -> None:
    """Refuse a unit whose layer runs before a probe layer: the unit cannot use what runs after it.

    The faceted objective weighs each probe layer by the unit's gradient with respect to it; a probe
    layer after the unit's layer has none. Firing order comes from one forward of a grey image.

    Args:
        layer: the unit's layer (name or alias).
        layers: canonical probe layers (default: :func:`probe_layers` of the model).

    Raises:
        NeuronscopeError: a probe layer runs after ``layer``.
    """
    layers = list(layers) if layers is not None else probe_layers(model)
    unit_layer = model.resolve_layer(layer)
    fired = list(layer_geometry(model, [unit_layer, *layers]))  # in firing order
    later = [name for name in layers if fired.index(name) > fired.index(unit_layer)]
    if later:
        runs = "runs" if len(later) == 1 else "run"
        raise NeuronscopeError(f"the facet probe reads {', '.join(later)}, which {runs} after {unit_layer}: render "
                               f"a unit of {layers[-1]} or a later layer")


# --------------------------------------------------------------------------- facet images


@dataclass
class FacetImages:
    """Facet and generic images for training a probe.

    Attributes:
        name: the facet's name (``text``, or a folder's name).
        facet, generic: [N, 3, H, W] in [0, 1] at the model's input size.
        facet_hashes, generic_hashes: sha256 of every facet and every generic image (the cache key's content).
    """

    name: str
    facet: Tensor
    generic: Tensor
    facet_hashes: list[str]
    generic_hashes: list[str]

    def __repr__(self) -> str:  # the default one prints the pixels and every hash
        height, width = self.facet.shape[-2:]
        return (f"FacetImages({self.name!r}, {len(self.facet)} facet and {len(self.generic)} generic images of "
                f"{height}x{width} px)")


def builtin_facet(name: str, model: LoadedModel, *, per_class: int = 200, seed: int = 0) -> FacetImages:
    """The mini CLIP world's facets, from its bundled test split.

    ``text``: word and reading images vs drawings; ``drawing``: drawings vs word
    and reading images. At most ``per_class`` of each, a seeded draw. Images are
    brought to the model's input size by its own preprocessing.
    """
    from neuronscope.world.split import bundled_split

    if name not in BUILTIN_FACETS:
        raise NeuronscopeError(f"no built-in facet {name!r}: built-in facets are {', '.join(BUILTIN_FACETS)}; "
                               "or pass your own facet images with --facet SRC --generic SRC (folders, .tar shards "
                               "or .txt lists)")
    split = bundled_split()
    text = np.concatenate([split.indices("word"), split.indices("reading")])
    drawings = split.indices("drawing")
    facet_idx, generic_idx = (text, drawings) if name == "text" else (drawings, text)
    rng = np.random.default_rng(seed)
    facet_idx = np.sort(rng.choice(facet_idx, min(per_class, len(facet_idx)), replace=False))
    generic_idx = np.sort(rng.choice(generic_idx, min(per_class, len(generic_idx)), replace=False))

    def hashes(indices: np.ndarray) -> list[str]:
        return [hashlib.sha256(split.images[i].tobytes()).hexdigest() for i in indices]

    def prepared(indices: np.ndarray) -> Tensor:
        return model.preprocess.to_pixels([split.pil(int(i)) for i in indices])

    return FacetImages(name, prepared(facet_idx), prepared(generic_idx), hashes(facet_idx), hashes(generic_idx))


def source_images(source: str | Path, model: LoadedModel, *, limit: int = 2000) -> tuple[Tensor, list[str]]:
    """The first ``limit`` images of a folder (recursive), ``.tar`` shard or ``.txt`` list, in listing order
    (sorted by name), as [N, 3, H, W] in [0, 1] at the model's size, and their content sha256.

    Listed by :func:`~neuronscope.mining.sources.open_source` and decoded the way a scan reads them (same
    suffixes, EXIF rotation, modes, pixel limit), so any ``--images`` source is a facet source too.
    Unlike a scan, an unreadable file is an error naming it: a facet's images are chosen by hand.
    """
    if not Path(source).expanduser().exists():
        raise NeuronscopeError(f"{source}: no such folder or file; give a folder, a .tar shard or a .txt list "
                               "of images")
    entries = open_source(source).entries[:limit]
    if not entries:
        raise NeuronscopeError(f"{source}: no images found (looked for {' '.join(IMAGE_SUFFIXES)})")
    images, hashes = [], []
    for entry in entries:
        where = _entry_location(entry)
        try:
            data = entry.read()
            images.append(decode_image_bytes(data, where))
        except (OSError, SkippedFile) as err:
            raise NeuronscopeError(f"{where}: cannot read it as an image ({err}); replace or remove it") from None
        hashes.append(content_sha256(data))
    return model.preprocess.to_pixels(images), hashes


def _entry_location(entry: Entry) -> str:
    """Where a user finds an entry: its file, or ``/path/to/SHARD.tar::member`` for a tar member."""
    return entry.path if entry.offset is None else str(Path(entry.path).with_name(entry.name))


def facet_from_folders(facet_dir: str | Path, generic_dir: str | Path, model: LoadedModel) -> FacetImages:
    """A user's facet: facet images against generic ones, each side a folder, ``.tar`` shard or ``.txt``
    list (:func:`source_images`); the facet is named after ``facet_dir``'s file or folder name."""
    facet, facet_hashes = source_images(facet_dir, model)
    generic, generic_hashes = source_images(generic_dir, model)
    return FacetImages(Path(facet_dir).name, facet, generic, facet_hashes, generic_hashes)


# --------------------------------------------------------------------------- probes


@dataclass
class FacetProbe:
    """Linear facet probes, one per probe layer.

    Attributes:
        name: the facet.
        model: the model key the probe was trained on.
        layers: canonical probe layers.
        weights: ``{layer: the layer's shape without batch}`` ([C, H, W], [H, W, C] for a channels-last
            layer): the probe's weight on each activation, flattened the way the layer's activations are.
        biases: ``{layer: float}``.
        accuracy: ``{layer: balanced training accuracy}``.
        key: the cache key (model, layers, image hashes).
    """

    name: str
    model: str
    layers: list[str]
    weights: dict[str, Tensor]
    biases: dict[str, float]
    accuracy: dict[str, float]
    key: str

    def __repr__(self) -> str:  # the default one prints every weight
        layers = self.layers[0] if len(self.layers) == 1 else f"{self.layers[0]} ... {self.layers[-1]}"
        return f"FacetProbe({self.name!r} on {self.model}, {len(self.layers)} probe layers: {layers})"

    @torch.no_grad()
    def score(self, model: LoadedModel, pixels: Tensor, *, batch_size: int = 64) -> Tensor:
        """The probes' mean logit (facet vs generic) for ``pixels`` [N, 3, H, W] in [0, 1]: [N]."""
        acts = record(model, model.preprocess.normalize(pixels), self.layers, batch_size=batch_size)
        logits = [acts[layer].flatten(1) @ self.weights[layer].flatten().to(acts[layer].device) + self.biases[layer]
                  for layer in self.layers]
        return torch.stack(logits).mean(dim=0).cpu()

    def to(self, device: torch.device | str) -> "FacetProbe":
        """A copy with the weights on ``device`` (moved once, not at every render step)."""
        return dataclasses.replace(self, weights={layer: w.to(device) for layer, w in self.weights.items()})

    def to_bytes(self) -> bytes:
        """The probe as an ``.npz`` (weights per layer; metadata in ``meta``)."""
        import json

        arrays = {f"w{i}": self.weights[layer].numpy() for i, layer in enumerate(self.layers)}
        meta = {"name": self.name, "model": self.model, "layers": self.layers, "biases": self.biases,
                "accuracy": self.accuracy, "key": self.key}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, meta=np.array(json.dumps(meta)), **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "FacetProbe":
        import json

        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            weights = {layer: torch.from_numpy(npz[f"w{i}"]) for i, layer in enumerate(meta["layers"])}
        return cls(meta["name"], meta["model"], meta["layers"], weights, meta["biases"], meta["accuracy"], meta["key"])


def probe_cache_key(model_key: str, layers: Sequence[str], facet_hashes: Sequence[str],
                    generic_hashes: Sequence[str]) -> str:
    """A probe's identity: the model (``model_key``: its :func:`~neuronscope.atlas.runs.model_identity`, which
    tells random inits apart), its probe layers and the content of the facet and of the generic images.

    Order-free within each side, but the sides are kept apart: swapping them gives the opposite probe.
    """
    text = "\n".join([model_key, ",".join(layers), "facet", *sorted(facet_hashes), "generic", *sorted(generic_hashes)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def train_facet_probe(model: LoadedModel, images: FacetImages, *, layers: Sequence[str] | None = None,
                      batch_size: int = 64, max_iter: int = 1000, C: float = 1.0) -> FacetProbe:
    """Fit one class-balanced logistic regression (L-BFGS) per probe layer on flattened activations.

    Args:
        images: facet vs generic images (see :func:`builtin_facet`, :func:`facet_from_folders`).
        layers: probe layers (default: :func:`probe_layers` of the model).
        C: inverse L2 strength of the logistic regression (scikit-learn's).
    """
    require_loaded(model, "train_facet_probe")
    from sklearn.linear_model import LogisticRegression

    layers = list(layers) if layers is not None else probe_layers(model)
    if len(images.facet) == 0 or len(images.generic) == 0:
        raise NeuronscopeError(f"facet {images.name!r} needs facet and generic images (got {len(images.facet)} "
                               f"and {len(images.generic)})")
    pixels = torch.cat([images.facet, images.generic])
    labels = np.r_[np.ones(len(images.facet)), np.zeros(len(images.generic))]
    acts = record(model, model.preprocess.normalize(pixels), layers, batch_size=batch_size)
    weights, biases, accuracy = {}, {}, {}
    for layer in layers:
        features = acts[layer].flatten(1).cpu().numpy().astype(np.float64)
        classifier = LogisticRegression(C=C, solver="lbfgs", class_weight="balanced", max_iter=max_iter)
        classifier.fit(features, labels)
        weights[layer] = torch.from_numpy(classifier.coef_[0].astype(np.float32)).reshape(acts[layer].shape[1:])
        biases[layer] = float(classifier.intercept_[0])
        predicted = classifier.predict(features)
        accuracy[layer] = float(np.mean([np.mean(predicted[labels == c] == c) for c in (0, 1)]))
    return FacetProbe(images.name, model.key, layers, weights, biases, accuracy,
                      probe_cache_key(model_identity(model), layers, images.facet_hashes, images.generic_hashes))


# --------------------------------------------------------------------------- the objective and the render


def facet_term(unit_objective: Objective, probe: FacetProbe) -> Objective:
    """``sum_L (5 / n_L) w_L . (g_L * relu(df/dg_L))``: of what the unit ``f`` uses at each of the ``n_L``
    probe layers, the facet part (OpenAI's weight 5 / n_L is 1 on RN50x4's five layers).

    Args:
        unit_objective: ``f``, e.g. ``channel(layer, units, relu=True)``.
        probe: its weights are read on the device they are on (see :meth:`FacetProbe.to`).
    """
    scale = FACET_REFERENCE_LAYERS / len(probe.layers)
    weights = [scale * probe.weights[layer].flatten().float() for layer in probe.layers]  # [C*H*W] per layer

    def value(ctx: Context) -> Tensor:
        unit_values = unit_objective(ctx)  # [B]; the context keeps it, so a sum with f computes f once
        acts = [ctx[layer] for layer in probe.layers]
        # relu(df/dg) is a constant weighting (no second-order graph): which of g's parts f uses. Taken as
        # minus the gradient of -f: a redirected ReLU (the render's first steps) reads the gradient it gets
        # as that of the loss -f, and would pick the wrong directions from the gradient of +f.
        grads = [-g for g in torch.autograd.grad(-unit_values.sum(), acts, retain_graph=True)]
        return sum((a.float() * g.float().clamp(min=0)).flatten(1) @ w.to(a.device)
                   for a, g, w in zip(acts, grads, weights))

    return Objective(value, unit_objective.layers, f"Facet [{probe.name}]", live_layers=probe.layers)


def facet_objective(unit_objective: Objective, probe: FacetProbe, strength: float | Tensor) -> Objective:
    """``f + strength * facet_term(f)`` (the paper's faceted objective).

    Args:
        unit_objective: ``f``, e.g. ``channel(layer, units)``.
        probe: its weights are read on the device they are on (see :meth:`FacetProbe.to`).
        strength: a number, or one per image [B].
    """
    return unit_objective + strength * facet_term(unit_objective, probe)


def facet_strengths(count: int, low: float = FACET_STRENGTHS[0], high: float = FACET_STRENGTHS[1]) -> list[float]:
    """The paper's ramp over a batch: ``count`` strengths from ``low`` to ``high`` (one image: ``high``).

    Python floats, rounded past float64's noise: each is stored as its render's ``strength`` and printed in
    its description (0.1, not float32's 0.10000000149011612 nor 1.3250000000000002).
    """
    if count == 1:
        return [high]
    return [round(low + (high - low) * i / (count - 1), 12) for i in range(count)]


def render_faceted(
    model: LoadedModel,
    layer: str,
    units: str | int | Sequence[int],
    probe: FacetProbe,
    *,
    strengths: Sequence[float] = (FACET_STRENGTHS[1],),
    batch_size: int = 16,
    config: RenderConfig = RenderConfig(),
    settings: FacetSettings = FacetSettings(),
    on_step: StepCallback | None = None,
    on_pass: Callable[[list[UnitRender]], None] | None = None,
) -> list[UnitRender]:
    """Each unit rendered once per strength (the paper's ramp: ``facet_strengths(9)``), batched.

    A pass holds whole units, every strength of each: ``max(1, batch_size // len(strengths))`` units,
    so a pass that is stored holds all of its units' images (a resumed job owes whole units). A unit's
    images share their init and transforms (they are keyed by the unit): only the strength differs.

    Args:
        units: unit indices, read by :func:`~neuronscope.units.parse_units` (``"0-31"``, ``"all"``, NumPy / torch
            integers).
        config: steps, size, seed...; its lr is ``settings``' (the paper's by default).
        settings: the faceted lr and squared-L2 penalty (the paper's by default).
        on_step: called with (steps done, total steps) over all passes, after every step (progress bars).
        on_pass: called with each pass's :class:`UnitRender` s as soon as it is rendered (to store them).

    Returns:
        :class:`UnitRender` s of kind ``facet:NAME``, index = the strength's position.

    Raises:
        NeuronscopeError: the probe is another model's, or a probe layer runs after ``layer``.
    """
    require_loaded(model, "render_faceted")
    if probe.model != model.key:
        raise NeuronscopeError(f"facet probe {probe.name!r} was trained on {probe.model}, not {model.key}")
    check_probe_layers(model, layer, probe.layers)
    units = parse_units(units, model.layer_shape(layer)[0])
    probe = probe.to(model.device)
    strengths = [float(s) for s in strengths]
    config = settings.apply(config)

    def render_pass(piece: list[int], step_hook: StepCallback | None) -> list[UnitRender]:
        chosen = [(unit, k, s) for unit in piece for k, s in enumerate(strengths)]
        units = [unit for unit, _, _ in chosen]
        # f reads the unit after a ReLU, as OpenAI's facet code does; the score is the plain channel, as
        # every other render reports it.
        objective = facet_objective(channel(layer, units, relu=True), probe, torch.tensor([s for _, _, s in chosen]))
        if settings.l2:
            objective = objective - settings.penalty()
        result = render(model, objective, batch=len(chosen), config=config, on_step=step_hook, keys=units,
                        score=channel(layer, units))
        return [UnitRender(layer, unit, f"facet:{probe.name}", k, result.images[i], float(result.final[i]),
                           result.curve[:, i],
                           f"Channel [{layer}, {unit}, relu] + {s:g} * Facet [{probe.name}]"
                           + (f" - {settings.l2:g} * L2^2" if settings.l2 else "")
                           + (f" - {config.l2:g} * L2" if config.l2 else ""),
                           {"strength": s}) for i, (unit, k, s) in enumerate(chosen)]

    units_per_pass = max(1, batch_size // len(strengths))
    return render_passes(chunks(units, units_per_pass), render_pass, steps=config.steps, on_step=on_step,
                         on_pass=on_pass)
