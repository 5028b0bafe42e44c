"""Dataset examples at scale: image sources, worker decoding, the streaming scanner.

    from neuronscope.atlas import Atlas
    from neuronscope.mining import open_source, scan, ScanSettings

    with Atlas("my-atlas") as atlas:
        outcome = scan(model, open_source("photos/"), atlas, ["neurons"], settings=ScanSettings(top_k=48))
        atlas.unit(model.key, "neurons", 7)["top"]   # [{"image", "activation", "cell"}, ...]

``scan_ray`` (same arguments, plus ``workers``/``address``) runs the same scan on Ray.
"""

from neuronscope.mining.accumulator import LayerAccumulator, ScanSettings, reduce_batch
from neuronscope.mining.histogram import StreamingHistogram, sample_hash, uniform_buckets
from neuronscope.mining.loader import iter_batches
from neuronscope.mining.moments import StreamingMoments
from neuronscope.mining.ray_backend import scan_ray  # imports Ray only when a Ray scan starts
from neuronscope.mining.results import Examples, HistogramArrays, ImageRecord, LayerScan, ScanOutcome
from neuronscope.mining.scanner import ScanProgress, ScanProgressHook, scan, scan_config
from neuronscope.mining.sources import Entry, ImageSource, image_folder, image_id, open_source
from neuronscope.mining.topk import StreamingTopK

__all__ = [
    "Entry", "Examples", "HistogramArrays", "ImageRecord", "ImageSource", "LayerAccumulator", "LayerScan",
    "ScanOutcome", "ScanProgress", "ScanProgressHook", "ScanSettings", "StreamingHistogram", "StreamingMoments", "StreamingTopK",
    "image_folder", "image_id", "iter_batches", "open_source", "reduce_batch", "sample_hash", "scan", "scan_config", "scan_ray",
    "uniform_buckets",
]
