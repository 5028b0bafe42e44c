"""Dataset examples at scale: image sources, worker decoding, the streaming scanner.

    from neuronscope.atlas import Atlas
    from neuronscope.mining import open_source, scan, ScanSettings

    with Atlas("my-atlas") as atlas:
        outcome = scan(model, open_source("photos/"), atlas, ["neurons"], settings=ScanSettings(top_k=48))
        atlas.unit(model.key, "neurons", 7)["top"]   # [{"image", "activation", "cell"}, ...]

``scan_ray`` (same arguments, plus ``workers``/``address``) runs the same scan on Ray.

The names load lazily (PEP 562), as in :mod:`neuronscope`: the microscope (``serve``, ``export``) imports
:mod:`neuronscope.mining.buckets` for its conditional plots, and running this package's ``__init__`` must not
import torch (the accumulator's) for it.
"""

from __future__ import annotations

from neuronscope._lazy import lazy_attributes

#: Public name -> the module that owns it.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("LayerAccumulator", "ScanSettings", "reduce_batch"), "neuronscope.mining.accumulator"),
    **dict.fromkeys(("sample_hash", "uniform_buckets"), "neuronscope.mining.buckets"),
    "StreamingHistogram": "neuronscope.mining.histogram",
    "iter_batches": "neuronscope.mining.loader",
    "StreamingMoments": "neuronscope.mining.moments",
    "scan_ray": "neuronscope.mining.ray_backend",  # imports Ray only when a Ray scan starts
    **dict.fromkeys(("Examples", "HistogramArrays", "ImageRecord", "LayerScan", "ScanOutcome"),
                    "neuronscope.mining.results"),
    **dict.fromkeys(("ScanProgress", "ScanProgressHook", "scan", "scan_config"), "neuronscope.mining.scanner"),
    **dict.fromkeys(("Entry", "ImageSource", "image_folder", "image_id", "open_source"), "neuronscope.mining.sources"),
    "StreamingTopK": "neuronscope.mining.topk",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS)
