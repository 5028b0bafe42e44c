"""The microscope's routes: :data:`page_routes` (HTML) and :data:`api_routes` (JSON), each over a
:class:`~neuronscope.web.microscope.Microscope`, and the caching of the bytes they serve.

Included in that order, and :data:`api_routes` last of all the app's routes: its ``/api/{rest:path}`` answers
every API path that no route before it took (a JSON 404). Every route also answers HEAD (``curl -I``).

Imports FastAPI: import it only where the web extra is installed (``create_app`` does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from neuronscope.web import pages
from neuronscope.web.files import atlas_file, media_type
from neuronscope.web.links import Links, url_path
from neuronscope.web.microscope import View
from neuronscope.web.plots import PLOT_KINDS, conditional_svg, histogram_svg

#: Thumbnails are named by what they show (image hash, input contract, grid, cell): they never change.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Renders and plots can be redone in place: cache briefly, then revalidate by ETag.
REVALIDATE = "public, max-age=60, must-revalidate"
#: What the layer's JSON says of each of its artifacts (``data`` is at the artifact's own URL).
ARTIFACT_LISTED = ("kind", "name", "path", "run_id", "created_at")

page_routes = APIRouter()
api_routes = APIRouter()


def get_and_head(router: APIRouter, path: str, **options: Any) -> Callable[[Callable], Callable]:
    """``@router.get`` that also answers HEAD (``curl -I``): a FastAPI route answers only the methods it names."""
    return router.api_route(path, methods=["GET", "HEAD"], **options)


page = partial(get_and_head, page_routes)
api = partial(get_and_head, api_routes)


# ---------------------------------------------------------------------------------------------------- pages

@page("/", response_class=HTMLResponse)
def home(view: View) -> Response:
    reader = view.reader
    return view.page("home.html", **reader.read(lambda atlas: reader.memo(("home",), lambda: pages.home_data(atlas))))


@page("/m/{model}")
def model_page(view: View, model: str) -> Response:
    view.resolve(model)  # 404 when unknown
    return RedirectResponse("/", status_code=302)


@page("/m/{model}/l/{layer}", response_class=HTMLResponse)
def layer_page(view: View, model: str, layer: str) -> Response:
    context = view.layer_context(model, layer)
    if isinstance(context, Response):
        return context
    if context["unit_named"] is not None:  # a unit's number typed in the filter: go to that unit
        params = {key: value for key, value in context["params"].items() if key != "q"}
        return RedirectResponse(view.links().unit(context["model"], context["layer"], context["unit_named"],
                                                  **params), status_code=302)
    return view.page("layer.html", **context)


@page("/m/{model}/l/{layer}/u/{unit}", response_class=HTMLResponse)
def unit_page(view: View, model: str, layer: str, unit: str) -> Response:
    target = view.unit_target(model, layer, unit)
    if isinstance(target, Response):
        return target
    query = view.layer_query()  # the list the visitor came from: its neighbour and layer links stay in it
    reader = view.reader
    return view.page("unit.html", **reader.read(
        lambda atlas: pages.unit_data(atlas, *target, query=query,
                                 cards=None if query.is_default else reader.layer_cards(*target[:2]))))


@page("/m/{model}/l/{layer}/u/{unit}/{plot}")
def unit_plot(view: View, model: str, layer: str, unit: str, plot: str) -> Response:
    kind = plot.removesuffix(".svg")
    if not plot.endswith(".svg") or kind not in PLOT_KINDS:
        return view.error(404, "not found", f"no plot {plot!r}: plots are " + ", ".join(f"{k}.svg" for k in PLOT_KINDS))
    target = view.unit_target(model, layer, unit, f"/{plot}")
    if isinstance(target, Response):
        return target
    model_key, canonical, index = target
    reader = view.reader

    def draw() -> bytes:
        if kind == "histogram":
            return histogram_svg(reader.read(lambda atlas: atlas.unit(model_key, canonical, index)))
        return conditional_svg(reader.read(lambda atlas: atlas.conditional_buckets(model_key, canonical, index)))

    data = reader.plot((model_key, canonical, index, kind), draw)
    return cached(view.request, data, "image/svg+xml", REVALIDATE)


@page("/search", response_class=HTMLResponse)
def search_page(view: View, q: str = "") -> Response:
    found = view.search(q)
    numbered = [hit for hit in found["hits"] if hit["match"] == "unit"]
    if len(numbered) == 1 and not found["attribution"]:  # a unit's number, held by one layer: go to that unit
        return RedirectResponse(view.links().unit(numbered[0]["model"], numbered[0]["layer"], numbered[0]["unit"]),
                                status_code=302)
    return view.page("search.html", search_q=q, prompts=view.prompts is not None, **found)


@page("/files/{path:path}")
def atlas_files(view: View, path: str) -> Response:
    found = atlas_file(view.reader.root, path)
    data = None if found is None else _read_or_none(found)
    if data is None:
        return view.error(404, "not found", f"{path!r} is not an image of this atlas the server can read")
    policy = IMMUTABLE if path.startswith("thumbs/") else REVALIDATE
    return cached(view.request, data, media_type(found), policy)


# ---------------------------------------------------------------------------------------------------- JSON API

@api("/api/models")
def api_models(view: View) -> Response:
    reader = view.reader
    return JSONResponse(reader.read(lambda atlas: reader.memo(("home",), lambda: pages.home_data(atlas))))


@api("/api/m/{model}/l/{layer}")
def api_layer(view: View, model: str, layer: str) -> Response:
    context = view.layer_context(model, layer)
    if isinstance(context, Response):
        return context
    return JSONResponse({key: context[key] for key in ("model", "layer", "total", "page", "pages", "per_page",
                                                       "q", "sort", "labelled", "multimodal", "multimodality",
                                                       "family", "families", "cards")}
                        | {"units": context["entry"]["units"], "aliases": context["entry"]["aliases"],
                           "artifacts": listed_artifacts(view.links(), context["model"], context["layer"],
                                                         context["artifacts"])})


def listed_artifacts(links: Links, model_key: str, layer: str, artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A layer's artifacts without their ``data`` (emotion codes alone are ~25 kB, sent with every page of
    the grid), each with the URL of its own JSON, which has it."""
    return [{key: artifact[key] for key in ARTIFACT_LISTED}
            | {"api": links.api_artifact(model_key, layer, artifact["kind"], artifact["name"])}
            for artifact in artifacts]


@api("/api/m/{model}/l/{layer}/artifacts/{kind}/{name:path}")
def api_artifact(view: View, model: str, layer: str, kind: str, name: str) -> Response:
    model_key, canonical, ok = view.resolve(model, layer)
    if not ok:
        return view.redirect(model_key, canonical, "/" + url_path("artifacts", kind, name))
    found = view.reader.read(lambda atlas: atlas.artifact(model_key, canonical, kind, name))
    if found is None:
        return view.error(404, "not found", f"no artifact {kind}/{name} of {model_key} {canonical}")
    return JSONResponse({"model": model_key, "layer": canonical} | found)


@api("/api/m/{model}/l/{layer}/u/{unit}")
def api_unit(view: View, model: str, layer: str, unit: str) -> Response:
    target = view.unit_target(model, layer, unit)
    if isinstance(target, Response):
        return target
    return JSONResponse(view.reader.read(lambda atlas: atlas.unit(*target)))


@api("/api/search")
def api_search(view: View, q: str = "") -> Response:
    return JSONResponse(view.search(q))


@api("/api/{rest:path}")  # last: see the module's docstring
def api_unknown(view: View, rest: str) -> Response:
    return view.error(404, "not found", f"/api/{rest} is not an API path")


# ---------------------------------------------------------------------------------------------------- caching

def cached(request: Request, data: bytes, media: str, policy: str) -> Response:
    """``data`` with an ETag and Cache-Control; 304 when the client already holds it."""
    etag = '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'
    headers = {"ETag": etag, "Cache-Control": policy}
    if etag_matches(etag, request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media, headers=headers)


def etag_matches(etag: str, if_none_match: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag``, by the weak comparison RFC 7232 sets for it
    (``W/"x"`` matches ``"x"``: proxies that compress weaken the tags they pass on); ``*`` names any."""
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags


def _read_or_none(path: Path) -> bytes | None:
    """A served file's bytes, or None (a 404, not a 500) when the server's user cannot read it (a file another
    user wrote 0600) or it was removed since it was found."""
    try:
        return path.read_bytes()
    except OSError:
        return None
