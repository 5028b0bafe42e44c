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

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from neuronscope.atlas.families import ARTIFACT as FAMILIES_ARTIFACT, family_sources, unit_family
from neuronscope.atlas.multimodality import layer_multimodality, layer_summary
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
        "labels", "multimodality", "families"}]``: ``scanned`` etc. count units that have that part;
        ``multimodality`` is the layer's multimodality measurement summed up
        (:func:`~neuronscope.atlas.multimodality.layer_summary`), None where it was not measured; ``families``
        is :func:`family_sizes` (``{}``: families were computed and no unit has one; None: never computed).
    """
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for part, table in (("scanned", "units"), ("featurevis", "featurevis"), ("words", "words"),
                        ("texts", "texts"), ("labels", "labels")):
        for row in atlas.db.execute(f"SELECT model, layer, count(DISTINCT unit) AS n FROM {table} "
                                    "GROUP BY model, layer"):
            counts.setdefault((row["model"], row["layer"]), {})[part] = row["n"]
    families = _stored_family_sizes(atlas)
    layers = []
    for model in atlas.models():
        for entry in atlas.layers(model):
            found = counts.get((model, entry["layer"]), {})
            scores = atlas.multimodality(model, entry["layer"])
            layers.append({"model": model, "layer": entry["layer"], "aliases": entry["aliases"],
                           "units": entry["units"], "grid": [entry["grid_rows"], entry["grid_cols"]],
                           **{part: found.get(part, 0) for part in ("scanned", "featurevis", "words", "texts",
                                                                     "labels")},
                           "multimodality": None if scores is None else layer_summary(scores),
                           "families": families.get((model, entry["layer"]))})
    return layers


def _stored_family_sizes(atlas: Atlas) -> dict[tuple[str, str], dict[str, int]]:
    """:func:`family_sizes` of every layer that has families or a families artifact (read in two queries)."""
    sizes: dict[tuple[str, str], dict[str, int]] = {
        (row["model"], row["layer"]): {} for row in atlas.db.execute(
            "SELECT DISTINCT model, layer FROM artifacts WHERE kind = ?", (FAMILIES_ARTIFACT,))}
    for row in atlas.db.execute(f"SELECT model, layer, family, count(*) AS n FROM families {_HELD} "
                                "GROUP BY model, layer, family"):
        sizes.setdefault((row["model"], row["layer"]), {})[row["family"]] = row["n"]
    return {key: family_sizes(counts) for key, counts in sizes.items()}


def family_sizes(counts: Mapping[str, int] | Iterable[str]) -> dict[str, int]:
    """``{family: units}``, largest family first (ties by name), from counts or from each unit's family name:
    one order for the home page, the layer page and the layer's family filter."""
    if not isinstance(counts, Mapping):
        counts = Counter(counts)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def layer_grid(atlas: Atlas, model: str, layer: str) -> list[dict[str, Any]]:
    """One card per unit of a stored layer, in unit order, read with one query per table.

    ``model`` and ``layer`` as :meth:`Atlas.resolve_layer` takes them (a bare name, an alias).

    Returns:
        ``[{"unit", "max", "mean", "label", "words": [str] (best first, at most GRID_WORDS),
        "featurevis": path | None, "featurevis_kind": "plain" | "diverse" | "facet:NAME" | None,
        "thumb": path | None, "multimodality": dict | None, "family": dict | None}]``; paths are relative to the
        atlas. ``featurevis`` is the unit's first render by :data:`~neuronscope.atlas.store.RENDER_ORDER` (a facet
        render where it has no plain one, which its card says); ``multimodality`` is :meth:`Atlas.unit`'s (None
        where the layer was not measured), ``family`` its family as :meth:`Atlas.unit` gives it.
    """
    entry = atlas.resolve_layer(model, layer)
    key = (entry["model"], entry["layer"])
    cards = [{"unit": unit, "max": None, "mean": None, "label": None, "words": [], "featurevis": None,
              "featurevis_kind": None, "thumb": None, "multimodality": None, "family": None}
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
    for row, card in rows(f"SELECT unit, path, kind FROM (SELECT unit, path, kind, row_number() OVER (PARTITION "
                          f"BY unit ORDER BY {RENDER_ORDER}) AS position FROM featurevis "
                          f"WHERE model = ? AND layer = ?) WHERE position = 1"):
        card["featurevis"], card["featurevis_kind"] = row["path"], row["kind"]
    for row, card in rows("SELECT unit, thumb FROM examples WHERE model = ? AND layer = ? AND kind = 'top' "
                          "AND rank = 0"):
        card["thumb"] = row["thumb"]
    scores = atlas.multimodality(*key)  # one artifact for the whole layer, read once
    for card, record in zip(cards, [] if scores is None else layer_multimodality(scores)):
        card["multimodality"] = record
    sources = family_sources(atlas, *key)
    for row, card in rows("SELECT unit, family, score, source FROM families WHERE model = ? AND layer = ?"):
        card["family"] = unit_family(row, row["unit"], sources)
    return cards


#: What search matches, in the order a unit's matches are listed and units are ranked by their best one:
#: (match, table, column, score). A label names the unit, so it comes first; it has no score (None, never 0:
#: word and text scores are on other scales, and a 0 sank every label below them).
SEARCHED = (("label", "labels", "text", "NULL"), ("word", "words", "word", "score"),
            ("text", "texts", "text", "score"))
#: Matches listed per unit and kind ("o" matches dozens of one unit's words); ``more`` counts the rest.
MATCHES_LISTED = 5


def search_units(atlas: Atlas, query: str) -> list[dict[str, Any]]:
    """Every unit of a stored layer whose label, top words or texts contain ``query`` (case-insensitive, any
    script): one hit per unit, best first.

    A unit's matches are listed label first, then words, then texts, each kind exact matches first and then by
    its score (the unit's own order). A unit ranks by its first exact match, else its first match: exact before
    partial, then label before word before text, then by that match's score (scores are compared only within
    one kind: word and text scores are on different scales), then by model, layer and unit.

    Returns:
        ``[{"model", "layer", "unit", "match" ("label" | "word" | "text"), "text", "score", "exact", "matches":
        [{"match", "text", "score", "exact"}], "more"}]``: ``match`` to ``exact`` describe the match the unit
        ranks by (a label's score is None), ``matches`` lists up to MATCHES_LISTED of each kind, ``more`` counts
        the matching words and texts not listed.
    """
    needle = query.strip().lower()
    if not needle:
        return []
    units: dict[tuple[str, str, int], dict[str, Any]] = {}
    for match, table, column, score in SEARCHED:
        for row in _unit_matches(atlas, table, column, score, needle):
            hit = units.setdefault((row["model"], row["layer"], row["unit"]), {
                "model": row["model"], "layer": row["layer"], "unit": row["unit"], "matches": [], "more": 0})
            if row["position"] == 1:
                hit["more"] += row["matched"] - min(row["matched"], MATCHES_LISTED)
            hit["matches"].append({"match": match, "text": row["text"], "score": row["score"],
                                   "exact": bool(row["exact"])})
    hits = [{**hit, **_best_match(hit["matches"])} for hit in units.values()]
    kinds = [match for match, *_ in SEARCHED]
    hits.sort(key=lambda hit: (not hit["exact"], kinds.index(hit["match"]), -(hit["score"] or 0.0), hit["model"],
                               hit["layer"], hit["unit"]))
    return hits


def _unit_matches(atlas: Atlas, table: str, column: str, score: str, needle: str):
    """A table's rows containing ``needle``: up to MATCHES_LISTED per unit, exact first then by score, each with
    its ``position`` in the unit and the unit's ``matched`` count (windows keep the cut inside SQLite)."""
    # pylower (Python's str.lower, see Atlas): SQLite's lower() and LIKE fold ASCII only ("Éclair").
    return atlas.db.execute(
        f"SELECT * FROM (SELECT model, layer, unit, {column} AS text, {score} AS score, "
        f"pylower({column}) = ? AS exact, count(*) OVER unit_rows AS matched, "
        f"row_number() OVER (unit_rows ORDER BY pylower({column}) = ? DESC, {score} DESC, {column}) AS position "
        f"FROM {table} {_HELD} AND instr(pylower({column}), ?) > 0 "
        f"WINDOW unit_rows AS (PARTITION BY model, layer, unit)) WHERE position <= ? ORDER BY position",
        (needle, needle, needle, MATCHES_LISTED))


def _best_match(matches: list[dict[str, Any]]) -> dict[str, Any]:
    """The match a unit ranks by: its first exact one, else its first (``matches`` are listed best first)."""
    return next((match for match in matches if match["exact"]), matches[0])


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
    """Every unit that has words or a label, for a client-side search (the static export) that ranks as
    :func:`search_units` does over labels and words.

    Returns:
        ``[{"model", "layer", "unit", "label", "words": [str], "ranks": [int]}]``, sorted by model, layer and
        unit: all of a unit's words, best first, and each word's score as its dense rank among every word
        score of the atlas (0 the highest, equal scores equal ranks): what ordering units by their best
        word's score needs, exactly, in fewer bytes than the floats.
    """
    units: dict[tuple[str, str, int], dict[str, Any]] = {}

    def entry(row) -> dict[str, Any]:
        key = (row["model"], row["layer"], row["unit"])
        return units.setdefault(key, {"model": key[0], "layer": key[1], "unit": key[2], "label": None, "words": [],
                                      "ranks": []})

    for row in atlas.db.execute(f"SELECT model, layer, unit, word, dense_rank() OVER (ORDER BY score DESC) - 1 "
                                f"AS rank FROM words {_HELD} ORDER BY model, layer, unit, score DESC, word"):
        entry(row)["words"].append(row["word"])
        entry(row)["ranks"].append(row["rank"])
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


def image_categories(atlas: Atlas, record: Mapping[str, Any]) -> dict[str, str]:
    """``{image id: category}`` of a unit's top and bottom examples (its :meth:`Atlas.unit` record): what its
    page's captions show, the category its conditional plot counts the image under
    (:func:`~neuronscope.mining.buckets.category_of`): ``(top)`` for an image at the top of its source where
    the plot's samples have categories, and no entry where they have none (the plot has no categories then)."""
    # Imported here: plain-Python helpers of the scanner (neuronscope.mining loads lazily: no torch).
    from neuronscope.mining.buckets import TOP_FOLDER, category_of

    examples = sorted({example["image"] for example in [*record["top"], *record["bottom"]]})
    samples = [image for images in (record["histogram"] or {}).get("samples", []) for image in images]
    known = atlas.stored_categories([*examples, *samples])
    categorised = any(category_of(image, known) is not None for image in samples)
    return {image: category for image in examples
            if (category := category_of(image, known) or (TOP_FOLDER if categorised else None))}
