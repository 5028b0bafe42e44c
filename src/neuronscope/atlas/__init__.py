"""The atlas store: ``atlas.sqlite`` (the catalogue) plus arrays and thumbnails beside it.

    from neuronscope.atlas import Atlas
    with Atlas("my-atlas") as atlas:
        atlas.unit("mini-clip", "neurons", 7)          # what `neuronscope show --json` prints
        atlas.set_label("mini-clip@bundled", "visual.layer4.1.act3:input", 7, "cat", source="user")
"""

from neuronscope.atlas.checkpoints import CheckpointStore
from neuronscope.atlas.export import export_layer, export_numpy, export_parquet, layer_arrays
from neuronscope.atlas.files import (atomic_write, atomic_write_bytes, atomic_write_npz, from_url_name, path_slug,
                                     url_name)
from neuronscope.atlas.schema import MIGRATIONS, SCHEMA_VERSION, ensure_schema, schema_version
from neuronscope.atlas.store import Atlas, AtlasError, check_atlas_target, library_versions, reading
from neuronscope.atlas.thumbnails import THUMB_SIZE, marked_thumbnail, thumbnail_name

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "THUMB_SIZE", "Atlas", "AtlasError", "CheckpointStore", "atomic_write",
           "atomic_write_bytes", "atomic_write_npz", "check_atlas_target", "ensure_schema", "export_layer",
           "export_numpy", "export_parquet", "from_url_name", "layer_arrays", "library_versions", "marked_thumbnail",
           "path_slug", "reading", "schema_version", "thumbnail_name", "url_name"]
