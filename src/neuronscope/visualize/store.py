"""Feature visualizations into an atlas: the run, the layer, each pass's renders, cached facet probes.

The render functions (:mod:`.units`, :mod:`.facets`) return result objects;
this module is the one place that turns them into atlas rows, shared by
``neuronscope visualize`` and the demo.

    with Atlas("my-atlas") as atlas:
        writer = FeatureVisWriter.start(atlas, model, "neurons", kind="plain", settings={...}, batch_size=16,
                                        command="...")
        render_units(model, writer.layer, writer.missing(range(512)), on_pass=writer)
        writer.finish()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuronscope.atlas import Atlas
from neuronscope.atlas.runs import config_digest, model_identity, open_run, refuse_edited, start_run
from neuronscope.errors import NeuronscopeError
from neuronscope.models.loaded import LoadedModel
from neuronscope.visualize import facets
from neuronscope.visualize.results import UnitRender


#: Part of every render job's key: raised when the same settings come to give other images, so that a job
#: resumed after an upgrade does not keep the old renders as its own. 2: the FFT image at Lucid's scale
#: (it was sqrt(H*W) times larger), each image seeded by its unit, the jitters folded into the resample.
#: 3: Lucid's transform pixels from 224 px up (they were scaled up with the side: RN50x4's renders change).
RENDER_VERSION = 3


def facet_name(facet: str, generic: str | None = None) -> str:
    """The name of the facet ``--facet facet [--generic generic]`` asks for: a built-in's, or the facet
    source's (a folder's name, a ``.tar`` shard's or ``.txt`` list's stem).

    Checks the pair without reading an image, so a command can refuse it before it starts any work.

    Raises:
        NeuronscopeError: a facet that is neither an image source on disk nor built in; a source without
            ``generic`` (or with one that does not exist); a built-in facet with ``generic``.
    """
    source = Path(facet)
    if source.exists():
        if not generic:
            raise NeuronscopeError(f"--facet {facet} is your own facet: give the contrast images with --generic "
                                   f"(a folder, .tar shard or .txt list of generic images)")
        if not Path(generic).exists():
            raise NeuronscopeError(f"--generic {generic}: no such folder or file; give a folder, .tar shard or "
                                   f".txt list of generic images")
        return source.name if source.is_dir() else source.stem
    if facet not in facets.BUILTIN_FACETS:
        raise NeuronscopeError(f"--facet {facet}: no such folder or file; built-in facets are "
                               f"{', '.join(facets.BUILTIN_FACETS)}")
    if generic:
        raise NeuronscopeError(f"--generic goes with your own facet images; the built-in facet {facet!r} brings "
                               f"its own")
    return facet


def load_facet_images(model: LoadedModel, facet: str, generic: str | None = None) -> facets.FacetImages:
    """A built-in facet's images, or ``facet`` vs ``generic`` (each a folder, ``.tar`` shard or ``.txt``
    list), at the model's input: where a bad facet fails (no such facet, no readable images)."""
    facet_name(facet, generic)
    if Path(facet).exists():
        return facets.facet_from_folders(facet, generic, model)  # type: ignore[arg-type]  # checked above
    return facets.builtin_facet(facet, model)


def facet_probe(model: LoadedModel, facet: str, generic: str | None = None, atlas: Atlas | None = None, *,
                images: facets.FacetImages | None = None) -> facets.FacetProbe:
    """A built-in facet's probe, or one trained on ``facet`` (a folder) vs ``generic`` (a folder).

    With an atlas, the probe is cached there, keyed by model and weights, probe layers and
    the facet and generic images' hashes: the same facet is trained once per atlas.
    A cached probe is named after this call's facet (the same images in a folder of another name).
    ``images``: the facet's images if already loaded (:func:`load_facet_images`).
    """
    images = images if images is not None else load_facet_images(model, facet, generic)
    layers = facets.probe_layers(model)
    key = facets.probe_cache_key(model_identity(model), layers, images.facet_hashes, images.generic_hashes)
    scope = ",".join(layers)
    if atlas is not None:
        cached = atlas.artifact(model.key, scope, "facet-probe", key)
        if cached is not None and cached["path"] and (atlas.path / cached["path"]).is_file():
            probe = facets.FacetProbe.from_bytes((atlas.path / cached["path"]).read_bytes())
            return dataclasses.replace(probe, name=images.name)
    probe = facets.train_facet_probe(model, images, layers=layers)
    if atlas is not None:
        atlas.save_artifact(model.key, scope, "facet-probe", key, file_bytes=probe.to_bytes(), suffix=".npz",
                            data={"facet": probe.name, "layers": layers, "accuracy": probe.accuracy,
                                  "images": {"facet": len(images.facet), "generic": len(images.generic)}})
    return probe


@dataclass
class FeatureVisWriter:
    """Stores each render pass as soon as it finishes (pass it as ``on_pass``): a killed render keeps its passes.

    Attributes:
        layer: the canonical layer name.
        kind: ``plain``, ``diverse`` or ``facet:NAME``.
        run_id, config_key: the run written into, and the key of its settings.
        written: a :func:`render_entry` per render this writer stored.
    """

    atlas: Atlas
    model: LoadedModel
    layer: str
    kind: str
    run_id: int
    config_key: str
    written: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, atlas: Atlas, model: LoadedModel, layer: str, *, kind: str, settings: Mapping[str, Any],
              batch_size: int, command: str) -> "FeatureVisWriter":
        """Record a run (or reopen this job's, ``running`` again) and register the layer.

        ``settings`` are what changes the images (render config, seed, facet...), not the units: a job with
        the same settings and weights (a random init by its state dict), killed or finished, is continued in
        its run, and :meth:`missing` tells which units it still owes; wrap the work in
        :func:`~neuronscope.atlas.runs.marked_interrupted`. ``batch_size`` is part of the job: a render is
        reproducible for the same pass composition only (see :func:`neuronscope.visualize.render.render`).
        Refused while a Recorder's edits are attached to ``model``.
        """
        refuse_edited(model)
        canonical = model.resolve_layer(layer)
        n_units, grid = model.layer_shape(canonical)
        config = {**settings, "batch_size": batch_size, "kind": kind, "render_version": RENDER_VERSION}
        config_key = "visualize:" + config_digest([model_identity(model), canonical, config], 16)

        def start() -> int:
            return start_run(atlas, model, command=command, config=config, config_key=config_key,
                             layers=[canonical], dataset=None)

        run_id = open_run(atlas, config_key, start, reopen_finished=True).run_id
        atlas.register_layer(model.key, canonical, aliases=model.aliases_of(canonical),
                             units=n_units, grid=grid, run_id=run_id)
        return cls(atlas, model, canonical, kind, run_id, config_key)

    def missing(self, units: Iterable[int]) -> list[int]:
        """Of ``units``, those with no render from these settings yet (what a resumed job still owes)."""
        done = self.atlas.rendered_units(self.model.key, self.layer, self.kind, self.config_key)
        return [unit for unit in units if unit not in done]

    def __call__(self, batch: list[UnitRender]) -> list[dict[str, Any]]:
        """Store one pass; returns its :func:`render_entry` s (with their atlas-relative paths)."""
        paths = self.atlas.write_featurevis(self.run_id, self.model.key, self.layer, [
            {"unit": r.unit, "kind": r.kind, "index": r.index, "png": r.png(), "objective": r.objective,
             "description": r.description} for r in batch])
        entries = [render_entry(r, path) for r, path in zip(batch, paths)]
        self.written.extend(entries)
        return entries

    def finish(self) -> None:
        """Mark the run finished; its ``images`` are all the renders it holds (this job's and earlier ones')."""
        self.atlas.finish_run(self.run_id, images=self.atlas.run_render_count(self.run_id))


def render_entry(render: UnitRender, path: str | None) -> dict[str, Any]:
    """What a command reports of a stored render: ``{"unit", "kind", "index", "objective", "path"}``."""
    return {"unit": render.unit, "kind": render.kind, "index": render.index,
            "objective": round(render.objective, 6), "path": path}
