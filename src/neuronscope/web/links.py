"""Where a page links to: the server's URLs, or relative paths inside a static export.

Pages are rendered from the same templates in three places; only the links
differ. The server links from its root (``/m/mini-clip/l/LAYER/u/7``); the
static export links relatively (``../../u/7/index.html``) so that the site
works from any folder of any static host, ``file://`` included; a notebook
card inlines images as data URIs.

URL segments are canonical names: a model's bare registry name when the atlas
holds only one model of that name (``mini-clip``), else its key
(``RN50x4@openai``; the bare name then reads as its default weights' key,
:func:`default_model_key`), with ``~`` for ``/`` (``hf-hub:org~repo``); a layer's dot
path (``visual.layer4.1.act3:input``). The server's URLs and the static
export's folders are both built from :func:`page_segments`.
"""

from __future__ import annotations

import base64
import functools
import posixpath
from pathlib import Path
from urllib.parse import quote, urlencode

from neuronscope.atlas.files import from_url_name, url_name
from neuronscope.atlas.store import bare_name
from neuronscope.web.files import media_type

#: Characters kept as they are in a URL segment (``:`` and ``@`` are legal in a path segment).
_SAFE = ":@"


def model_slug(model_key: str, known: list[str]) -> str:
    """The URL name of a model: its bare name when unambiguous among ``known`` keys, else its key, with
    ``~`` for ``/`` (:func:`~neuronscope.atlas.store.url_name`; :meth:`Atlas.resolve_model` reads it back)."""
    bare = bare_name(model_key)
    return url_name(bare if [bare_name(key) for key in known].count(bare) == 1 else model_key)


def default_model_key(name: str, known: list[str]) -> str | None:
    """The key a bare model name of a URL stands for when ``known`` holds several weights of that model: the
    registry's default weights (``mini-clip@bundled``; ``RN50x4@openai``, its first tag), when held; else None.

    A bare name is a model's URL while the atlas holds one weights of it: after a second joins it, the URLs
    handed out before answer 301 to the default weights' (what an omitted ``--weights`` means) instead of 404.
    """
    bare = from_url_name(name)
    held = [key for key in known if bare_name(key) == bare]
    weights = _registry_default_weights(bare) if len(held) > 1 else None
    return f"{bare}@{weights}" if f"{bare}@{weights}" in held else None


@functools.cache
def _registry_default_weights(name: str) -> str | None:
    """The weights an omitted ``--weights`` means for registry model ``name``: its declared default, else
    its first tag (not the first in the local cache, so that a URL means the same on every machine); None
    for a name the registry lacks (``hf-hub:...``, a local file's)."""
    # Imported here: the registry imports torch, which the microscope otherwise never loads.
    from neuronscope.errors import NeuronscopeError
    from neuronscope.models.registry import get_architecture

    try:
        architecture = get_architecture(name)
    except NeuronscopeError:
        return None
    return architecture.default_weights or next(iter(architecture.tags), None)


def segment(name: str) -> str:
    """One URL path segment, percent-encoded (``:`` and ``@`` kept)."""
    return quote(name, safe=_SAFE)


def page_segments(slug: str, layer: str, unit: int | None = None) -> tuple[str, ...]:
    """A layer's (or a unit's) page as path segments, not yet percent-encoded.

    The server's URL is these segments encoded; the static export writes the page into the folder they
    name (what a static host or ``file://`` maps the encoded link back to).
    """
    parts = ("m", slug, "l", layer)
    return parts if unit is None else (*parts, "u", str(unit))


def artifact_json_segments(slug: str, layer: str, kind: str, name: str) -> tuple[str, ...]:
    """Where the static export writes a layer artifact's JSON (what the server's ``/api`` URL answers):
    beside the layer's pages, ``/`` in a kind or name written ``~`` so that each artifact is one file."""
    return (*page_segments(slug, layer), "artifacts", url_name(kind), f"{url_name(name)}.json")


def url_path(*parts: str) -> str:
    """Segments joined into a percent-encoded relative URL path."""
    return "/".join(segment(part) for part in parts)


class Links:
    """The server's links: paths from the site's root."""

    static_site = False
    #: Images are inlined (a notebook card): nothing to link to, and every image shown is read and encoded.
    inline = False

    def __init__(self, known_models: list[str]) -> None:
        self.known_models = known_models

    def slug(self, model: str) -> str:
        return model_slug(model, self.known_models)

    def _page(self, *parts: str) -> str:
        return "/" + "/".join(parts)

    def home(self) -> str:
        return self._page("")

    def search(self, query: str | None = None) -> str:
        base = self._page("search")
        return f"{base}?{urlencode({'q': query})}" if query else base

    def layer(self, model: str, layer: str, *, page: int = 1, **query: object) -> str:
        """A page of a layer's grid; ``query``: the list's parameters (``q``, ``sort``, ``labelled``,
        ``per_page``; :attr:`~neuronscope.web.pages.LayerQuery.params`)."""
        params = dict(query)
        if page > 1:
            params["page"] = page
        return _with_query(self._page(url_path(*page_segments(self.slug(model), layer))), params)

    def unit(self, model: str, layer: str, unit: int, **query: object) -> str:
        """A unit's page; ``query``: the layer list it is seen in (as :meth:`layer` takes it), which its
        neighbour links walk."""
        return _with_query(self._page(url_path(*page_segments(self.slug(model), layer, unit))), query)

    def plot(self, model: str, layer: str, unit: int, kind: str) -> str:
        return f"{self.unit(model, layer, unit)}/{kind}.svg"

    def file(self, relative: str | None) -> str | None:
        """An atlas file (thumbnail, render, artifact) by its atlas-relative path."""
        return None if not relative else self._page("files", url_path(*relative.split("/")))

    def static(self, name: str) -> str:
        return self._page("static", name)

    def api_unit(self, model: str, layer: str, unit: int) -> str | None:
        return "/api" + self.unit(model, layer, unit)

    def api_artifact(self, model: str, layer: str, kind: str, name: str) -> str | None:
        """A layer artifact's JSON (its ``data`` with it): the layer's API lists artifacts without their data."""
        return "/api" + self._page(url_path(*page_segments(self.slug(model), layer), "artifacts", kind, name))


class StaticLinks(Links):
    """Relative links from one exported file (``here``, a path inside the site) to the others."""

    static_site = True

    def __init__(self, known_models: list[str], here: str) -> None:
        super().__init__(known_models)
        self.here = here

    def _relative(self, target: str) -> str:
        relative = posixpath.relpath(target, posixpath.dirname(self.here) or ".")
        # "./" keeps a first segment with ":" (a layer name) from reading as a URL scheme.
        return relative if relative.startswith("../") else f"./{relative}"

    def _page(self, *parts: str) -> str:
        return self._relative(static_page_path(*parts))

    def search(self, query: str | None = None) -> str:
        base = self._page("search")
        return f"{base}#{quote(query)}" if query else base

    def layer(self, model: str, layer: str, *, page: int = 1, **query: object) -> str:
        name = "index.html" if page <= 1 else f"page-{page}.html"
        return self._relative(url_path(*page_segments(self.slug(model), layer), name))

    def unit(self, model: str, layer: str, unit: int, **query: object) -> str:
        return self._page(url_path(*page_segments(self.slug(model), layer, unit)))  # one page: no list to carry

    def plot(self, model: str, layer: str, unit: int, kind: str) -> str:
        return self._relative(url_path(*page_segments(self.slug(model), layer, unit), f"{kind}.svg"))

    def file(self, relative: str | None) -> str | None:
        return None if not relative else self._relative(url_path("files", *relative.split("/")))

    def static(self, name: str) -> str:
        return self._relative(f"static/{name}")

    def api_unit(self, model: str, layer: str, unit: int) -> str | None:
        return None  # a static site has no API

    def api_artifact(self, model: str, layer: str, kind: str, name: str) -> str | None:
        """The JSON file the export writes for an artifact (:func:`artifact_json_segments`)."""
        return self._relative(url_path(*artifact_json_segments(self.slug(model), layer, kind, name)))


def _with_query(base: str, params: dict[str, object]) -> str:
    """``base`` with the parameters that are set (not None). Callers pass a list's parameters as
    :attr:`~neuronscope.web.pages.LayerQuery.params` gives them, defaults left out there (one page, one URL)."""
    params = {key: value for key, value in params.items() if value is not None}
    return f"{base}?{urlencode(params)}" if params else base


def static_page_path(*parts: str) -> str:
    """The exported file of a server path given as segments: a page is a folder's ``index.html``."""
    parts = tuple(part for part in parts if part)
    if parts == ("search",):
        return "search.html"
    return "/".join((*parts, "index.html"))


class InlineLinks(Links):
    """Links for a notebook card: images inline as data URIs, pages not linked (a notebook has no server:
    templates leave out a link that is None)."""

    inline = True

    def __init__(self, known_models: list[str], atlas_path: Path) -> None:
        super().__init__(known_models)
        self.atlas_path = atlas_path

    def file(self, relative: str | None) -> str | None:
        if not relative:
            return None
        path = self.atlas_path / relative
        if not path.is_file():
            return None
        return f"data:{media_type(path)};base64,{base64.b64encode(path.read_bytes()).decode()}"

    def layer(self, model: str, layer: str, *, page: int = 1, **query: object) -> str | None:
        return None

    def unit(self, model: str, layer: str, unit: int, **query: object) -> str | None:
        return None

    def plot(self, model: str, layer: str, unit: int, kind: str) -> str | None:
        return None

    def api_unit(self, model: str, layer: str, unit: int) -> str | None:
        return None

    def api_artifact(self, model: str, layer: str, kind: str, name: str) -> str | None:
        return None
