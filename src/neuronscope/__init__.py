"""neuronscope: find and explain the neurons of CLIP models.

The names a session starts from are here, one import away::

    import neuronscope as ns

    model = ns.load_model("mini-clip")
    renders = ns.render_units(model, "neurons", [473, 18])
    ns.render(model, ns.objectives.channel("neurons", 473) - 0.1 * ns.objectives.l2())

They load lazily (PEP 562): ``import neuronscope`` imports neither torch nor
open_clip, which the command line's start-up relies on (``--help`` in a
second, not four); the first use of a name imports the module that owns it.
Everything else lives in its subpackage (``neuronscope.models``,
``.activations``, ``.atlas``, ``.mining``, ``.visualize``, ``.objectives``,
``.probing``, ``.analysis``, ``.web``, ``.world``).
"""

from __future__ import annotations

from neuronscope._lazy import lazy_attributes

__version__ = "0.1.0"

#: Public name -> the module that owns it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("load_model", "LoadedModel", "Preprocess"), "neuronscope.models"),
    **dict.fromkeys(("Recorder", "record", "list_layers", "resolve_layers", "zero_units", "mean_ablate",
                     "set_units"), "neuronscope.activations"),
    "Atlas": "neuronscope.atlas",
    **dict.fromkeys(("scan", "ScanSettings", "open_source"), "neuronscope.mining"),
    **dict.fromkeys(("render", "render_units", "render_diverse", "RenderConfig"), "neuronscope.visualize"),
    "probe_words": "neuronscope.probing.words",
    "RasterSettings": "neuronscope.probing.raster",
    "load_vocabulary": "neuronscope.probing.vocab",
    **dict.fromkeys(("attribute_texts", "compute_basis"), "neuronscope.probing.attribution"),
    "ZeroShotClassifier": "neuronscope.probing.zeroshot",
    **dict.fromkeys(("typographic_attack", "AttackSettings"), "neuronscope.probing.typographic"),
    **dict.fromkeys(("emotion_atlas", "word_codes"), "neuronscope.analysis.emotions"),
    **dict.fromkeys(("serve", "export_site"), "neuronscope.web"),
}

#: Subpackages reachable as attributes without importing them first (``ns.objectives.channel``).
_SUBPACKAGES = ("activations", "analysis", "atlas", "mining", "models", "objectives", "probing", "visualize",
                "web", "world")

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS, _SUBPACKAGES)
