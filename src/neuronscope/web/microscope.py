"""What the microscope's routes share: canonical names and their 301s, pages, and errors as pages or JSON.

A :class:`Microscope` is made for each request (a FastAPI dependency, :data:`View`) from what
:func:`~neuronscope.web.app.create_app` put in the app's state: the
:class:`~neuronscope.web.reader.AtlasReader` and the prompt attributor (None without a model). The request
decides the rest: a redirect keeps its query string and its ``/api`` prefix, and an error under ``/api/``
answers JSON where a page answers HTML.

Imports FastAPI: import it only where the web extra is installed (``create_app`` does).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from neuronscope.atlas import AtlasError
from neuronscope.web import pages
from neuronscope.web.links import Links, default_model_key, segment
from neuronscope.web.pages import BadRequest, LayerQuery, parse_unit_segment
from neuronscope.web.prompts import PromptAttributor
from neuronscope.web.reader import AtlasReader


class Microscope:
    """One request's view of the atlas the app serves."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.reader: AtlasReader = request.app.state.reader
        self.prompts: PromptAttributor | None = request.app.state.prompts

    @property
    def is_api(self) -> bool:
        return self.request.url.path.startswith("/api/")

    def links(self) -> Links:
        return Links(self.reader.read(lambda atlas: atlas.models()))

    def page(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(pages.render(template, self.links(), **context), status_code=status_code)

    def error(self, status: int, title: str, message: str) -> Response:
        """The error as JSON under ``/api/``, else as a page."""
        if self.is_api:
            return JSONResponse({"error": title, "detail": message, "status": status}, status_code=status)
        return self.page("error.html", status, status=status, title=title, message=message)

    def resolve(self, model: str, layer: str | None = None) -> tuple[str, str | None, bool]:
        """:meth:`AtlasReader.resolve`, with a bare name of several weights read as its default weights' key
        (not canonical: a 301 to it), so that URLs handed out before a second weights joined keep working."""
        try:
            return self.reader.resolve(model, layer)
        except AtlasError:
            default = default_model_key(model, self.reader.read(lambda atlas: atlas.models()))
            if default is None:
                raise
        model_key, canonical, _ = self.reader.resolve(default, layer)
        return model_key, canonical, False

    def redirect(self, model_key: str, layer: str | None, rest: str = "") -> RedirectResponse:
        """301 to the canonical spelling of the same URL (query string kept)."""
        url = f"{'/api' if self.is_api else ''}/m/{segment(self.links().slug(model_key))}"
        if layer is not None:
            url += f"/l/{segment(layer)}"
        url += rest
        if self.request.url.query:
            url += f"?{self.request.url.query}"
        return RedirectResponse(url, status_code=301)

    def unit_target(self, model: str, layer: str, unit: str, rest: str = "") -> tuple[str, str, int] | Response:
        """``(model key, canonical layer, unit)`` of a unit's URL, or the 301 to its one canonical URL."""
        index = parse_unit_segment(unit)
        model_key, canonical, ok = self.resolve(model, layer)
        if not ok or unit != str(index):  # an alias, a model key, or a unit written "01": one page, one URL
            return self.redirect(model_key, canonical, f"/u/{index}{rest}")
        return model_key, canonical, index

    def layer_query(self) -> LayerQuery:
        """The request's layer list parameters (``q``, ``sort``, ``page``, ``per_page``, ``labelled``,
        ``multimodal``, ``family``)."""
        params = self.request.query_params
        return LayerQuery.parse(params.get("q"), params.get("sort"), params.get("page"), params.get("per_page"),
                                params.get("labelled"), params.get("multimodal"), params.get("family"))

    def layer_context(self, model: str, layer: str) -> dict[str, Any] | Response:
        """What a layer's page and JSON show (one page of its grid, as the query asks), or the 301."""
        query = self.layer_query()
        model_key, canonical, ok = self.resolve(model, layer)
        if not ok:
            return self.redirect(model_key, canonical)
        return self.reader.read(lambda atlas: pages.layer_data(atlas, model_key, canonical, query,
                                                               cards=self.reader.layer_cards(model_key, canonical)))

    def search(self, q: str) -> dict[str, Any]:
        """Units matching ``q``, the units it stands out for as a rastered word of a stored probe, and its
        attribution when a model is loaded."""
        found = self.reader.read(lambda atlas: pages.search_data(atlas, q))
        found["word_units"] = self.reader.read(lambda atlas: pages.word_unit_hits(atlas, q, self.reader.memo))
        # ``null``: no model loaded (the atlas alone cannot attribute a new prompt).
        found["attribution"] = self.prompts.attribute(q) if self.prompts is not None and q.strip() else None
        return found


#: A route's :class:`Microscope`, made from its request.
View = Annotated[Microscope, Depends()]


async def not_in_atlas(request: Request, exc: AtlasError) -> Response:
    return Microscope(request).error(404, "not found", str(exc))


async def bad_request(request: Request, exc: BadRequest) -> Response:
    return Microscope(request).error(400, "bad request", str(exc))


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    title = "not found" if exc.status_code == 404 else "error"
    message = f"{request.url.path} is not a page of this atlas" if exc.status_code == 404 else str(exc.detail)
    return Microscope(request).error(exc.status_code, title, message)


#: The app's exception handlers: a name the atlas lacks is a 404, a malformed parameter a 400.
ERROR_HANDLERS = {AtlasError: not_in_atlas, BadRequest: bad_request, StarletteHTTPException: http_error}
