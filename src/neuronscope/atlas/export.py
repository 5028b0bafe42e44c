"""Per-unit statistics and top/bottom examples of a layer as NumPy arrays or a Parquet table.

    from neuronscope.atlas import Atlas, export_numpy, export_parquet
    with Atlas("my-atlas") as atlas:
        export_numpy(atlas, "mini-clip", "neurons", "neurons.npz")
        export_parquet(atlas, "mini-clip", "neurons", "neurons.parquet")
    data = np.load("neurons.npz")
    data["top_ids"][7]      # [k] image ids of unit 7, best first ("" where fewer images)
    pandas.read_parquet("neurons.parquet").loc[7, "top_ids"]   # the same, one row per unit

The ``.npz`` holds flat arrays and loads anywhere NumPy does; the Parquet
table (pyarrow, ``pip install 'neuronscope[parquet]'``) has one row per unit
with the same columns, the per-unit arrays as list columns.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neuronscope.atlas.families import family_sources, family_text, unit_family
from neuronscope.atlas.files import atomic_write_bytes, atomic_write_npz
from neuronscope.atlas.multimodality import unit_multimodality
from neuronscope.atlas.store import Atlas


def layer_arrays(atlas: Atlas, model: str | None, layer: str) -> dict[str, np.ndarray]:
    """A layer's results as arrays.

    Returns:
        ``units`` [C]; ``mean``, ``std``, ``max``, ``min``, ``map_mean`` [C] float64; ``count`` [C];
        for ``top`` and ``bottom``: ``{kind}_ids`` [C, k] str (``""`` where empty),
        ``{kind}_values`` [C, k] float32 (NaN where empty), ``{kind}_cells`` [C, k, 2] int16 (row, col);
        ``histogram_counts`` [C, n_bins], ``histogram_exponent`` / ``histogram_first`` [C]
        (bin i of unit c covers [(first + i) * 2**exponent, (first + i + 1) * 2**exponent)); these three
        are left out when the layer's histogram file is missing (see :meth:`Atlas.histogram_arrays`);
        ``label``, ``family`` [C] str (``""`` where none; a lexical unit's with its affix, ``lexical -ing``),
        ``family_score`` [C] float64 (NaN where none);
        when the layer's multimodality was measured (``neuronscope multimodal``): ``concept``,
        ``word_concept`` [C] str, ``multimodality``, ``auroc_images``, ``auroc_words`` [C] float64 and
        ``multimodal`` [C] bool.
    """
    model_key = atlas.resolve_model(model)
    entry = atlas.resolve_layer(model_key, layer)
    key = (model_key, entry["layer"])
    units = entry["units"]
    arrays: dict[str, np.ndarray] = {"units": np.arange(units)}
    rows = atlas.db.execute("SELECT unit, mean, std, max, min, count, map_mean FROM units "
                            "WHERE model = ? AND layer = ? ORDER BY unit", key).fetchall()
    for column in ("mean", "std", "max", "min", "map_mean"):
        values = np.full(units, np.nan)
        values[[r["unit"] for r in rows]] = [r[column] for r in rows]
        arrays[column] = values
    arrays["count"] = np.zeros(units, np.int64)
    arrays["count"][[r["unit"] for r in rows]] = [r["count"] for r in rows]
    for kind in ("top", "bottom"):
        depth = atlas.db.execute("SELECT max(rank) FROM examples WHERE model = ? AND layer = ? AND kind = ?",
                                 (*key, kind)).fetchone()[0]
        k = 0 if depth is None else depth + 1
        ids = np.full((units, k), "", dtype=object)
        values = np.full((units, k), np.nan, np.float32)
        cells = np.zeros((units, k, 2), np.int16)
        for row in atlas.db.execute("SELECT unit, rank, image_id, activation, cell_row, cell_col FROM examples "
                                    "WHERE model = ? AND layer = ? AND kind = ?", (*key, kind)):
            ids[row["unit"], row["rank"]] = row["image_id"]
            values[row["unit"], row["rank"]] = row["activation"]
            cells[row["unit"], row["rank"]] = (row["cell_row"], row["cell_col"])
        arrays[f"{kind}_ids"] = ids.astype(str)
        arrays[f"{kind}_values"] = values
        arrays[f"{kind}_cells"] = cells
    histogram = atlas.histogram_arrays(*key)  # None: not scanned, or its file missing (left out, like unscanned)
    if histogram is not None:
        for name in ("counts", "exponent", "first"):
            arrays[f"histogram_{name}"] = histogram[name]
    arrays.update(_descriptions(atlas, key, units))
    return arrays


def _descriptions(atlas: Atlas, key: tuple[str, str], units: int) -> dict[str, np.ndarray]:
    """What the units were found to be: labels, families and the multimodality measurement, one entry a unit."""
    arrays = {"label": np.full(units, "", dtype=object), "family": np.full(units, "", dtype=object),
              "family_score": np.full(units, np.nan)}
    for row in atlas.db.execute("SELECT unit, text FROM labels WHERE model = ? AND layer = ?", key):
        arrays["label"][row["unit"]] = row["text"]
    sources = family_sources(atlas, *key)
    for row in atlas.db.execute("SELECT unit, family, score, source FROM families WHERE model = ? AND layer = ?", key):
        arrays["family"][row["unit"]] = family_text(unit_family(row, row["unit"], sources))
        arrays["family_score"][row["unit"]] = np.nan if row["score"] is None else row["score"]
    scores = atlas.multimodality(*key)
    if scores is not None:
        records = [unit_multimodality(scores, unit) for unit in range(units)]
        for name in ("concept", "word_concept"):  # "" for a unit without one, as the other string columns
            arrays[name] = np.array([r[name] or "" for r in records], dtype=object)
        arrays["multimodality"] = np.array([r["score"] for r in records], np.float64)
        for name in ("auroc_images", "auroc_words"):
            arrays[name] = np.array([r[name] for r in records], np.float64)
        arrays["multimodal"] = np.array([r["multimodal"] for r in records], bool)
    return {name: values.astype(str) if values.dtype == object else values for name, values in arrays.items()}


def export_numpy(atlas: Atlas, model: str | None, layer: str, path: str | os.PathLike) -> Path:
    """Write :func:`layer_arrays` to ``path`` (``.npz``, atomically); returns the path."""
    path = Path(path)
    atomic_write_npz(path, layer_arrays(atlas, model, layer))
    return path


def export_parquet(atlas: Atlas, model: str | None, layer: str, path: str | os.PathLike) -> Path:
    """Write :func:`layer_arrays` as a Parquet table, one row per unit (atomically); returns the path.

    Scalar columns stay scalar; ``{kind}_ids`` / ``{kind}_values`` are lists of k, ``{kind}_cells`` lists of
    k (row, col) pairs and ``histogram_counts`` a list of bins. Needs pyarrow.
    """
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Parquet export needs pyarrow: pip install 'neuronscope[parquet]' "
                          "(or write .npz, which needs nothing more)") from None
    arrays = layer_arrays(atlas, model, layer)
    columns = {name: pa.array(values.tolist() if values.ndim > 1 else values) for name, values in arrays.items()}
    path = Path(path)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return path


EXPORTERS = {".npz": export_numpy, ".parquet": export_parquet}


def export_layer(atlas: Atlas, model: str | None, layer: str, path: str | os.PathLike) -> Path:
    """:func:`export_numpy` or :func:`export_parquet`, by the suffix of ``path``."""
    suffix = Path(path).suffix.lower()
    if suffix not in EXPORTERS:
        raise ValueError(f"export to {Path(path).name!r}: name a .npz (NumPy) or .parquet (Parquet) file")
    return EXPORTERS[suffix](atlas, model, layer, path)
