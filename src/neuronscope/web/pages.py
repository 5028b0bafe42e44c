"""The microscope's pages: what each shows (a context dict), and the templates that draw it.

One function per page reads the atlas and returns plain data; the server,
the static export and the notebook cards render the same templates with
different :mod:`~neuronscope.web.links`. Nothing here writes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, TypeVar

from neuronscope.atlas import Atlas
from neuronscope.atlas.browse import (family_sizes, filter_units, image_categories, layer_counts, layer_grid,
                                      search_units, unit_runs)
from neuronscope.atlas.families import ARTIFACT as FAMILIES_ARTIFACT, family_sources
from neuronscope.atlas.multimodality import layer_summary
from neuronscope.atlas.words import WordMatrix, stored_probes
from neuronscope.web.files import is_image
from neuronscope.web.links import Links

T = TypeVar("T")

#: A layer list's orders: index, max activation, multimodality score (each highest first).
SORTS = ("unit", "max", "multimodality")
#: How much of a unit a page shows (the JSON API has everything).
TOP_EXAMPLES = 24
TOP_WORDS = 30
PER_PAGE = 120
MAX_PER_PAGE = 1000
#: Units a search lists (the page and the API say how many match in all).
SEARCH_HITS = 200
#: A whole number in a URL: ASCII digits only (``str.isdigit`` also takes "²" and "٣"), few enough
#: that ``int`` never meets Python's digit limit.
_WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")


#: A layer list's parameters as an omitted one means them (links leave these out: one list, one URL).
_DEFAULT_PARAMS = {"q": "", "sort": "unit", "labelled": 0, "multimodal": 0, "family": "", "per_page": PER_PAGE}


class BadRequest(ValueError):
    """A malformed parameter (answered 400)."""


@dataclass(frozen=True)
class LayerQuery:
    """A layer page's filter, sort and page, validated.

    A unit page takes the same parameters (its page ignored): the list its visitor came from, which its
    neighbour links walk and its link back to the layer returns to.
    """

    q: str = ""
    sort: str = "unit"
    page: int = 1
    per_page: int = PER_PAGE
    labelled: bool = False
    #: Only the units the layer's multimodality measurement finds multimodal.
    multimodal: bool = False
    #: Only the units of this family (``neuronscope families``); "" for any. Checked against the layer's
    #: families when the list is made (:func:`listed_cards`).
    family: str = ""

    @classmethod
    def parse(cls, q: str | None, sort: str | None, page: str | None, per_page: str | None,
              labelled: str | None = None, multimodal: str | None = None, family: str | None = None
              ) -> "LayerQuery":
        sort = sort or "unit"
        if sort not in SORTS:
            raise BadRequest(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
        return cls(q=(q or "").strip()[:200], sort=sort, page=_positive(page, "page", 1, None),
                   per_page=_positive(per_page, "per_page", PER_PAGE, MAX_PER_PAGE),
                   labelled=_flag(labelled, "labelled", "labelled units only"),
                   multimodal=_flag(multimodal, "multimodal", "multimodal units only"),
                   family=(family or "").strip())

    @property
    def params(self) -> dict[str, Any]:
        """What links carry of this query (its page aside): the parameters that differ from the defaults."""
        values = {"q": self.q, "sort": self.sort, "labelled": int(self.labelled), "multimodal": int(self.multimodal),
                  "family": self.family, "per_page": self.per_page}
        return {key: value for key, value in values.items() if value != _DEFAULT_PARAMS[key]}

    @property
    def is_default(self) -> bool:
        """Whether the query lists every unit in index order (a page of the plain grid, or no query at all)."""
        return not self.params or self.params.keys() == {"per_page"}


def _flag(value: str | None, name: str, meaning: str) -> bool:
    """A checkbox parameter: ``1`` (on), ``0`` or absent (off); anything else is a bad request."""
    if value not in (None, "", "0", "1"):
        raise BadRequest(f"{name} must be 1 ({meaning}) or 0, not {value!r}")
    return value == "1"


def _positive(value: str | None, name: str, default: int, largest: int | None) -> int:
    if value in (None, ""):
        return default
    if not _WHOLE_NUMBER.fullmatch(value) or int(value) < 1 or (largest is not None and int(value) > largest):
        bound = f" up to {largest}" if largest else ""
        raise BadRequest(f"{name} must be a whole number from 1{bound}, not {value!r}")
    return int(value)


def parse_unit_segment(value: str) -> int:
    """A unit index from a URL segment (``7``); anything else is a bad request (answered 400). Python callers
    parse theirs with :func:`neuronscope.units.parse_unit` (ints, NumPy / torch integers, a range check)."""
    if not _WHOLE_NUMBER.fullmatch(value):
        raise BadRequest(f"a unit is a whole number such as 7, not {value!r}")
    return int(value)


def unit_number(query: str, units: int) -> int | None:
    """The unit a filter or search query names by its number (``473``, ``#473``) when the layer has it, else
    None: typing a unit's number goes to that unit."""
    text = query.strip().removeprefix("#")
    return int(text) if _WHOLE_NUMBER.fullmatch(text) and int(text) < units else None


# ---------------------------------------------------------------------------- page data

def home_data(atlas: Atlas) -> dict[str, Any]:
    """``{"models": [{"model", "layers": [layer_counts entries]}]}``."""
    models: dict[str, list[dict]] = {}
    for entry in layer_counts(atlas):
        models.setdefault(entry["model"], []).append(entry)
    return {"models": [{"model": model, "layers": layers} for model, layers in models.items()]}


#: What a sort other than ``unit`` orders a layer's cards by (highest first); None where a unit lacks it.
_SORT_VALUES = {"max": lambda card: card["max"],
                "multimodality": lambda card: card["multimodality"] and card["multimodality"]["score"]}


def listed_cards(cards: list[dict[str, Any]], query: LayerQuery, matching: set[int] | None = None
                 ) -> list[dict[str, Any]]:
    """``cards`` (from :func:`layer_grid`) as ``query`` lists them, on all its pages: filtered and sorted.

    Args:
        matching: the units :func:`matching_units` finds for ``query.q`` (None: no filter).
    """
    chosen = cards if matching is None else [card for card in cards if card["unit"] in matching]
    if query.labelled:
        chosen = [card for card in chosen if card["label"]]
    if query.multimodal:
        chosen = [card for card in chosen if card["multimodality"] and card["multimodality"]["multimodal"]]
    if query.family:
        _check_family(query.family, cards)
        chosen = [card for card in chosen if card["family"] and card["family"]["family"] == query.family]
    if query.sort in _SORT_VALUES:
        # Units without the value (no scan, no measurement) go last.
        value = _SORT_VALUES[query.sort]
        chosen = sorted(chosen, key=lambda card: (value(card) is None, -(value(card) or 0.0), card["unit"]))
    return chosen


def layer_family_sizes(cards: list[dict[str, Any]]) -> dict[str, int]:
    """:func:`~neuronscope.atlas.browse.family_sizes` of a layer's cards: the families its filter offers."""
    return family_sizes(card["family"]["family"] for card in cards if card["family"])


def _check_family(family: str, cards: list[dict[str, Any]]) -> None:
    """A family filter names one of the layer's families; anything else is a bad request."""
    present = layer_family_sizes(cards)
    if family not in present:
        if not present:
            raise BadRequest(f"this layer's units have no family (neuronscope families ATLAS --layer LAYER gives "
                             f"them): leave out family={family!r}")
        raise BadRequest(f"family must be one of this layer's families ({', '.join(present)}), not {family!r}")


def matching_units(atlas: Atlas, model: str, layer: str, q: str, units: int) -> set[int] | None:
    """The units a filter ``q`` keeps (None: no filter): a word or label that contains it (:func:`filter_units`),
    and the unit it names by number (:func:`unit_number`)."""
    if not q:
        return None
    number = unit_number(q, units)
    return filter_units(atlas, model, layer, q) | (set() if number is None else {number})


def filter_cards(cards: list[dict[str, Any]], query: LayerQuery, matching: set[int] | None = None) -> dict[str, Any]:
    """A layer page's slice of ``cards`` (from :func:`layer_grid`): filtered, sorted and paged.

    Args:
        matching: the units :func:`matching_units` finds for ``query.q`` (None: no filter).

    Returns:
        ``{"cards", "total" (units after the filter), "page", "pages", "per_page", "q", "sort", "labelled",
        "multimodal", "family", "params"}``; ``params``: what links to other pages of the same list carry
        (:attr:`LayerQuery.params`).
    """
    chosen = listed_cards(cards, query, matching)
    pages = max(1, math.ceil(len(chosen) / query.per_page))
    if query.page > pages:  # as ?page=0: a page that does not exist is a bad request, not an empty "page 99 of 5"
        raise BadRequest(f"page must be a whole number from 1 to {pages} (the last page), not {query.page}")
    start = (query.page - 1) * query.per_page
    return {"cards": chosen[start:start + query.per_page], "total": len(chosen), "page": query.page,
            "pages": pages, "per_page": query.per_page, "q": query.q, "sort": query.sort,
            "labelled": query.labelled, "multimodal": query.multimodal, "family": query.family,
            "params": query.params}


#: The list of a layer's multimodal units, highest score first.
MULTIMODAL_LIST = LayerQuery(sort="multimodality", multimodal=True)


def layer_data(atlas: Atlas, model: str, layer: str, query: LayerQuery,
               cards: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A layer page: the layer's entry, one page of unit cards, the layer's artifacts, its multimodality and
    its families.

    ``cards`` may be given when the caller caches :func:`layer_grid` (the server does). ``multimodality`` is
    :func:`~neuronscope.atlas.multimodality.layer_summary` (None: not measured) and ``multimodal_units`` the
    multimodal units' cards by score (what the filter and sort list: a static export, which has neither, lists
    them on the page). ``families`` is ``{family: units}`` (largest first; ``{}`` where families were computed
    and no unit has one, None where they never were) and ``family_units`` each family's cards in unit order
    (what ``?family=NAME`` lists; the export lists them on the page).
    """
    entry = atlas.resolve_layer(model, layer)
    cards = layer_grid(atlas, model, entry["layer"]) if cards is None else cards
    # The filter reads every stored word in SQL: a card holds only its top GRID_WORDS.
    matching = matching_units(atlas, model, entry["layer"], query.q, entry["units"])
    artifacts = [{**artifact, "image": bool(artifact["path"]) and is_image(artifact["path"])}
                 for artifact in atlas.artifacts(model, entry["layer"])]
    scores = atlas.multimodality(model, entry["layer"])
    families = layer_family_sizes(cards)
    computed = families or any(artifact["kind"] == FAMILIES_ARTIFACT for artifact in artifacts)
    return {"model": model, "layer": entry["layer"], "entry": entry, **filter_cards(cards, query, matching),
            "artifacts": artifacts, "unit_named": unit_number(query.q, entry["units"]),
            "multimodality": None if scores is None else layer_summary(scores),
            "multimodal_units": listed_cards(cards, MULTIMODAL_LIST),
            "families": families if computed else None,
            "family_units": {family: listed_cards(cards, LayerQuery(family=family)) for family in families}}


def _featurevis_groups(renders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Renders grouped by kind, in the record's order (plain, diverse, then facets by name; see
    :data:`~neuronscope.atlas.store.RENDER_ORDER`): ``[{"kind", "title", "renders"}]``."""
    groups: dict[str, list[dict]] = {}
    for render in renders:
        groups.setdefault(render["kind"], []).append(render)
    return [{"kind": kind, "title": kind.replace("facet:", "facet: "), "renders": group}
            for kind, group in groups.items()]


def unit_data(atlas: Atlas, model: str, layer: str, unit: int, query: LayerQuery = LayerQuery(),
              cards: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A unit page: :meth:`Atlas.unit`'s record plus grouped renders, whether it has plots, its family (with a
    lexical unit's affix) and what its source stored of it (``family_about``: vocabulary, threshold; None for a
    source that kept nothing), its place in a layer list and provenance.

    ``query``: the layer list the visitor came from (a card's link carries it); ``cards`` as for
    :func:`layer_data`, read only for a query other than the plain grid.
    """
    record = atlas.unit(model, layer, unit)
    histogram = record["histogram"]
    sources = family_sources(atlas, record["model"], record["layer"]) if record["family"] else {}
    return {"model": record["model"], "layer": record["layer"], "unit": unit, "record": record,
            # the record's family (a lexical unit's with its affix), and what its source says of where it came from
            "family": record["family"],
            "family_about": sources.get(record["family"]["source"]) if record["family"] else None,
            # "unscanned" (no histogram), "empty" (scanned, but no finite activation) or "plottable"
            "activations": "unscanned" if histogram is None else "plottable" if histogram["counts"] else "empty",
            "featurevis_groups": _featurevis_groups(record["featurevis"]),
            **unit_place(atlas, record["model"], record["layer"], unit, query, cards),
            "runs": unit_runs(atlas, record["model"], record["layer"], unit),
            "categories": image_categories(atlas, record),
            "top_examples": TOP_EXAMPLES, "top_words": TOP_WORDS}


def unit_place(atlas: Atlas, model: str, layer: str, unit: int, query: LayerQuery,
               cards: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Where a unit sits in the layer list ``query`` makes: ``{"previous", "next"}`` (its neighbours there, None
    at an end), ``"layer_page"`` (the grid page that shows it) and ``"params"`` (what the neighbour and layer
    links carry to stay in that list).

    A list that leaves the unit out (a filter it does not match) is not the visitor's: the plain grid (units in
    index order) is used instead.
    """
    units = atlas.resolve_layer(model, layer)["units"]
    if not query.is_default:
        cards = layer_grid(atlas, model, layer) if cards is None else cards
        listed = [card["unit"] for card in listed_cards(cards, query, matching_units(atlas, model, layer, query.q,
                                                                                     units))]
        if unit in listed:
            return _place(listed.index(unit), listed, query)
    plain = LayerQuery(per_page=query.per_page)
    return _place(unit, range(units), plain)


def _place(position: int, listed: "list[int] | range", query: LayerQuery) -> dict[str, Any]:
    return {"previous": listed[position - 1] if position > 0 else None,
            "next": listed[position + 1] if position + 1 < len(listed) else None,
            "layer_page": position // query.per_page + 1, "params": query.params}


def search_data(atlas: Atlas, query: str, *, limit: int = SEARCH_HITS) -> dict[str, Any]:
    """The search page: ``{"q", "hits", "total"}``: the first ``limit`` of the hits (one a unit, best first: a
    unit named by its number, then :func:`search_units`'s) and how many units match in all."""
    numbered = unit_number_hits(atlas, query)
    named = {(hit["model"], hit["layer"], hit["unit"]): hit for hit in numbered}
    hits = list(numbered)
    for hit in search_units(atlas, query):
        same = named.get((hit["model"], hit["layer"], hit["unit"]))
        if same is None:
            hits.append(hit)
        else:  # the unit is listed once, first, with what else of it matched
            same["matches"] += hit["matches"]
            same["more"] += hit["more"]
    return {"q": query.strip(), "hits": hits[:limit], "total": len(hits)}


#: Units listed for a word of a stored word probe (the search page).
WORD_UNITS = 10


def word_unit_hits(atlas: Atlas, query: str, memo: Callable[[tuple, Callable[[], T]], T] | None = None,
                   k: int = WORD_UNITS) -> list[dict[str, Any]]:
    """For every stored word probe whose vocabulary holds ``query`` (as typed, else in lower case): the ``k`` units
    the rastered word stands out for (:meth:`~neuronscope.atlas.words.WordMatrix.top_units`), as
    ``[{"model", "layer", "vocabulary", "word", "units": [{"unit", "z", "rank"}, ...]}, ...]``.

    ``memo(key, compute)``: keeps the matrices between searches (the server's reader); by default each is read.
    """
    typed = query.strip()
    if not typed:
        return []
    keep = memo or (lambda key, compute: compute())
    hits = []
    for model in atlas.models():
        for entry in atlas.layers(model):
            for vocabulary, artifact in sorted(stored_probes(atlas, model, entry["layer"]).items()):
                matrix = keep(("word matrix", model, entry["layer"], vocabulary),
                              lambda artifact=artifact: WordMatrix.read(atlas, artifact))
                word = matrix.lookup(typed)
                if word is not None:
                    hits.append({"model": model, "layer": entry["layer"], "vocabulary": vocabulary, "word": word,
                                 "units": matrix.top_units(word, k)})
    return hits


def unit_number_hits(atlas: Atlas, query: str) -> list[dict[str, Any]]:
    """Search hits for a query that is a unit's number (:func:`unit_number`): that unit of every stored layer
    that has it, listed first (as :func:`search_units`' hits, matched as ``"unit"``)."""
    hits = []
    for model in atlas.models():
        for entry in atlas.layers(model):
            number = unit_number(query, entry["units"])
            if number is not None:
                match = {"match": "unit", "text": str(number), "score": None, "exact": True}
                hits.append({"model": model, "layer": entry["layer"], "unit": number, **match,
                             "matches": [match], "more": 0})
    return hits


# ---------------------------------------------------------------------------- templates

@lru_cache(maxsize=1)
def environment():
    """The Jinja2 environment (autoescaped: labels and words are user data)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("neuronscope.web", "templates"),
                             autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
                             auto_reload=False)  # templates ship with the package: no stat per include
    env.filters["num"] = _number
    env.filters["image_name"] = image_name
    return env


def _number(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def image_name(image_id: str) -> str:
    """What a caption shows of an image id (``test_split.tar::00915_drawing.png#a161b78e3904`` ->
    ``00915_drawing.png``; ``cats/001.jpg#...`` -> ``cats/001.jpg``): its path in the source, whose folder is
    its category; the whole id stays in the caption's tooltip."""
    return image_id.rsplit("#", 1)[0].split("::", 1)[-1]


def render(template: str, links: Links, **context: Any) -> str:
    """Render a page template with its links."""
    return environment().get_template(template).render(links=links, **context)
