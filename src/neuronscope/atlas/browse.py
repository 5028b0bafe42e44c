"""Bulk reads for browsing an atlas: a layer's grid in a few queries, counts, search, provenance.

:meth:`Atlas.unit` reads one unit fully (about ten queries); a page that
shows 2560 units needs each table read once for the whole layer instead.
These functions only read, so they work on an atlas opened ``read_only``.

    from neuronscope.atlas import Atlas
    from neuronscope.atlas.browse import layer_grid, search_units
    with Atlas("my-atlas", read_only=True) as atlas:
        cards = layer_grid(atlas, "mini-clip@bundled", "visual.layer4.1.act3:input")
        hits = search_units(atlas, "star")
"""

from __future__ import annotations

from typing import Any

from neuronscope.atlas.store import RENDER_ORDER, Atlas

#: Top words kept per unit on a grid card (the unit page shows them all).
GRID_WORDS = 3
#: Keeps a per-unit table's rows to units of a layer the atlas holds: a label may be written before any
#: scan (``world eval --out``), and a unit no layer page shows must not be found (its link would be a 404).
_HELD = "JOIN layers USING (model, layer) WHERE unit >= 0 AND unit < units"


def layer_counts(atlas: Atlas) -> list[dict[str, Any]]:
    """Every stored layer with what it holds, by model then layer.

    Returns:
        ``[{"model", "layer", "aliases", "units", "grid", "scanned", "featurevis", "words", "texts",
        "labels"}]``: ``scanned`` etc. count units that have that part.
    """
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for part, table in (("scanned", "units"), ("featurevis", "featurevis"), ("words", "words"),
                        ("texts", "texts"), ("labels", "labels")):
        for row in atlas.db.execute(f"SELECT model, layer, count(DISTINCT unit) AS n FROM {table} "
                                    "GROUP BY model, layer"):
            counts.setdefault((row["model"], row["layer"]), {})[part] = row["n"]
    layers = []
    for model in atlas.models():
        for entry in atlas.layers(model):
            found = counts.get((model, entry["layer"]), {})
            layers.append({"model": model, "layer": entry["layer"], "aliases": entry["aliases"],
                           "units": entry["units"], "grid": [entry["grid_rows"], entry["grid_cols"]],
                           **{part: found.get(part, 0) for part in ("scanned", "featurevis", "words", "texts",
                                                                     "labels")}})
    return layers


def layer_grid(atlas: Atlas, model: str, layer: str) -> list[dict[str, Any]]:
    """One card per unit of a stored layer, in unit order, read with one query per table.

    ``model`` and ``layer`` are the key and canonical name (see :meth:`Atlas.resolve_layer`).

    Returns:
        ``[{"unit", "max", "mean", "label", "words": [str] (best first, at most GRID_WORDS),
        "featurevis": path | None, "thumb": path | None}]``; paths are relative to the atlas.
    """
    entry = atlas.resolve_layer(model, layer)
    key = (model, entry["layer"])
    cards = [{"unit": unit, "max": None, "mean": None, "label": None, "words": [], "featurevis": None, "thumb": None}
             for unit in range(entry["units"])]

    def rows(sql: str):
        return ((row, cards[row["unit"]]) for row in atlas.db.execute(sql, key) if 0 <= row["unit"] < len(cards))

    for row, card in rows("SELECT unit, max, mean FROM units WHERE model = ? AND layer = ?"):
        card["max"], card["mean"] = row["max"], row["mean"]
    for row, card in rows("SELECT unit, text FROM labels WHERE model = ? AND layer = ?"):
        card["label"] = row["text"]
    # Window functions keep the per-unit limit inside SQLite: a 2560-unit layer with 100 words each
    # would otherwise send 256k rows to Python.
    for row, card in rows(f"SELECT unit, word FROM (SELECT unit, word, row_number() OVER (PARTITION BY unit "
                          f"ORDER BY score DESC, word) AS position FROM words WHERE model = ? AND layer = ?) "
                          f"WHERE position <= {GRID_WORDS} ORDER BY unit, position"):
        card["words"].append(row["word"])
    for row, card in rows(f"SELECT unit, path FROM (SELECT unit, path, row_number() OVER (PARTITION BY unit "
                          f"ORDER BY {RENDER_ORDER}) AS position FROM featurevis "
                          f"WHERE model = ? AND layer = ?) WHERE position = 1"):
        card["featurevis"] = row["path"]
    for row, card in rows("SELECT unit, thumb FROM examples WHERE model = ? AND layer = ? AND kind = 'top' "
                          "AND rank = 0"):
        card["thumb"] = row["thumb"]
    return cards


def search_units(atlas: Atlas, query: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """Units of stored layers whose top words, label or texts contain ``query`` (case-insensitive, any script).

    Exact matches come first, then by the match's score (a word's or text's rank score; labels
    score 0), then by model, layer and unit.

    Returns:
        ``[{"model", "layer", "unit", "match" ("word" | "label" | "text"), "text", "score", "exact"}]``.
    """
    needle = query.strip().lower()
    if not needle:
        return []
    hits: list[dict[str, Any]] = []
    for match, table, column, score in (("word", "words", "word", "score"), ("label", "labels", "text", "0.0"),
                                        ("text", "texts", "text", "score")):
        # pylower (Python's str.lower, see Atlas): SQLite's lower() and LIKE fold ASCII only ("Éclair").
        for row in atlas.db.execute(
                f"SELECT model, layer, unit, {column} AS text, {score} AS score FROM {table} {_HELD} "
                f"AND instr(pylower({column}), ?) > 0 ORDER BY (pylower({column}) = ?) DESC, {score} DESC "
                f"LIMIT ?", (needle, needle, limit)):
            hits.append({"model": row["model"], "layer": row["layer"], "unit": row["unit"], "match": match,
                         "text": row["text"], "score": row["score"], "exact": row["text"].lower() == needle})
    hits.sort(key=lambda hit: (not hit["exact"], -(hit["score"] or 0.0), hit["model"], hit["layer"], hit["unit"]))
    return hits[:limit]


def filter_units(atlas: Atlas, model: str, layer: str, query: str) -> set[int]:
    """Units of a stored layer with a word or label that contains ``query`` (case-insensitive): the layer
    page's filter. Every stored word counts, not only the GRID_WORDS a card shows."""
    needle = query.strip().lower()
    rows = atlas.db.execute(
        "SELECT unit FROM words WHERE model = ? AND layer = ? AND instr(pylower(word), ?) > 0 "
        "UNION SELECT unit FROM labels WHERE model = ? AND layer = ? AND instr(pylower(text), ?) > 0",
        (model, layer, needle) * 2)
    return {row["unit"] for row in rows}


def search_index(atlas: Atlas) -> list[dict[str, Any]]:
    """Every unit that has words or a label, for a client-side search (the static export).

    Returns:
        ``[{"model", "layer", "unit", "label", "words": [str]}]`` (all of a unit's words, best first).
    """
    units: dict[tuple[str, str, int], dict[str, Any]] = {}

    def entry(row) -> dict[str, Any]:
        key = (row["model"], row["layer"], row["unit"])
        return units.setdefault(key, {"model": key[0], "layer": key[1], "unit": key[2], "label": None, "words": []})

    for row in atlas.db.execute(f"SELECT model, layer, unit, word FROM words {_HELD} ORDER BY model, layer, unit, "
                                "score DESC, word"):
        entry(row)["words"].append(row["word"])
    for row in atlas.db.execute(f"SELECT model, layer, unit, text FROM labels {_HELD}"):
        entry(row)["label"] = row["text"]
    return [units[key] for key in sorted(units)]


def unit_runs(atlas: Atlas, model: str, layer: str, unit: int) -> list[dict[str, Any]]:
    """The runs that wrote a unit's parts (scan, renders, words, texts), oldest first, with what each wrote."""
    key = (model, layer, unit)
    wrote: dict[int, set[str]] = {}
    for part, table in (("scan", "units"), ("featurevis", "featurevis"), ("words", "words"), ("texts", "texts")):
        for row in atlas.db.execute(f"SELECT DISTINCT run_id FROM {table} WHERE model = ? AND layer = ? AND unit = ?",
                                    key):
            if row["run_id"] is not None:
                wrote.setdefault(row["run_id"], set()).add(part)
    runs = []
    for run_id in sorted(wrote):
        try:
            record = atlas.run(run_id)
        except LookupError:
            continue  # a row naming a run that is gone: show the parts without provenance
        runs.append({**record, "parts": sorted(wrote[run_id])})
    return runs
