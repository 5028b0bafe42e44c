"""The microscope's web app: server-rendered pages over a read-only atlas, and a JSON API beside them.

    from neuronscope.web import create_app, serve
    app = create_app("my-atlas")                 # an ASGI app (FastAPI)
    serve("my-atlas", port=8000)                  # http://127.0.0.1:8000/

Pages (``{model}`` a registry name such as ``mini-clip``, ``{layer}`` a canonical
dot path or any alias, ``~`` for ``/``; a non-canonical name answers 301):

    /                                     models and layers with counts
    /m/{model}/l/{layer}?q=&sort=&page=   unit grid: filter by word or label, sort by unit or max
    /m/{model}/l/{layer}/u/{unit}         one unit (plots at .../histogram.svg, .../conditional.svg)
    /search?q=                            units whose words, labels or texts match
    /files/{path}                         the atlas's images (thumbnails, renders, artifacts)

The API mirrors them: ``/api/models``, ``/api/m/{model}/l/{layer}`` (artifacts listed without
their data), ``/api/m/{model}/l/{layer}/artifacts/{kind}/{name}`` (one with its data),
``/api/m/{model}/l/{layer}/u/{unit}`` (exactly :meth:`Atlas.unit`'s object)
and ``/api/search?q=``. Unknown names answer 404, malformed parameters 400.
"""


import errno
import hashlib
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from neuronscope.atlas import AtlasError
from neuronscope.errors import NeuronscopeError
from neuronscope.web import pages
from neuronscope.web.files import atlas_file, media_type
from neuronscope.web.links import Links, default_model_key, segment, url_path
from neuronscope.web.pages import BadRequest, LayerQuery, parse_unit
from neuronscope.web.plots import PLOT_KINDS, conditional_svg, histogram_svg
from neuronscope.web.reader import AtlasReader

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
#: Thumbnails are named by what they show (image hash, input contract, grid, cell): they never change.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Renders and plots can be redone in place: cache briefly, then revalidate by ETag.
REVALIDATE = "public, max-age=60, must-revalidate"
#: What the layer's JSON says of each of its artifacts (``data`` is at the artifact's own URL).
ARTIFACT_LISTED = ("kind", "name", "path", "run_id", "created_at")


def create_app(atlas_path: str | os.PathLike, *, model: "Any" = None, warm: bool = True) -> "Any":
    """The microscope as a FastAPI app over the atlas at ``atlas_path`` (opened read-only).

    Args:
        model: the atlas's model, loaded (a :class:`~neuronscope.models.LoadedModel`): search then
            also attributes the prompt to the units of the atlas's layers of that model
            (:mod:`neuronscope.web.prompts`). Without it, search matches stored words, labels, texts.
        warm: on startup, read every layer's grid in a background thread (the first visit
            to a 2560-unit layer then finds it cached).

    Raises :class:`~neuronscope.atlas.AtlasError` when ``atlas_path`` is not a readable atlas.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    reader = AtlasReader(atlas_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm:
            threading.Thread(target=reader.warm, daemon=True).start()
        try:
            yield
        finally:
            reader.close()

    # lifespan=, not router.on_startup / on_shutdown: Starlette 1.0 removed those.
    app = FastAPI(title="neuronscope microscope", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.reader = reader
    prompts = None
    if model is not None:
        from neuronscope.web.prompts import PromptAttributor

        try:
            held = reader.read(lambda atlas: atlas.models())
            if model.key not in held:
                raise AtlasError(f"--model loads {model.key}, but {atlas_path} holds {', '.join(held) or 'no model'}"
                                 ": load the model the atlas was made with")
            layers = reader.read(lambda atlas: atlas.layers(model.key))
            prompts = PromptAttributor(model, [entry["layer"] for entry in layers])  # raises for a labels-only model
        except BaseException:
            reader.close()  # no app will close it
            raise
    def get(path: str, **options: Any) -> Callable[[Callable], Callable]:
        """``@app.get`` that also answers HEAD (``curl -I``): a FastAPI route answers only the methods it names."""
        return app.api_route(path, methods=["GET", "HEAD"], **options)

    static_dir = os.path.join(os.path.dirname(__file__), "static")
    app.mount("/static", StaticFiles(directory=static_dir), name="static")

    def links() -> Links:
        return Links(reader.read(lambda atlas: atlas.models()))

    def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(pages.render(template, links(), **context), status_code=status_code)

    def redirect(request: Request, model_key: str, layer: str | None, rest: str = "") -> RedirectResponse:
        """301 to the canonical spelling of the same URL (query string kept)."""
        prefix = "/api" if request.url.path.startswith("/api/") else ""
        url = f"{prefix}/m/{segment(links().slug(model_key))}"
        if layer is not None:
            url += f"/l/{segment(layer)}"
        url += rest
        if request.url.query:
            url += f"?{request.url.query}"
        return RedirectResponse(url, status_code=301)

    def resolve(model: str, layer: str | None = None) -> tuple[str, str | None, bool]:
        """:meth:`AtlasReader.resolve`, with a bare name of several weights read as its default weights' key
        (not canonical: a 301 to it), so that URLs handed out before a second weights joined keep working."""
        try:
            return reader.resolve(model, layer)
        except AtlasError:
            default = default_model_key(model, reader.read(lambda atlas: atlas.models()))
            if default is None:
                raise
        model_key, canonical, _ = reader.resolve(default, layer)
        return model_key, canonical, False

    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def error(request: Request, status: int, title: str, message: str) -> Response:
        if is_api(request):
            return JSONResponse({"error": title, "detail": message, "status": status}, status_code=status)
        return page("error.html", status, status=status, title=title, message=message)

    @app.exception_handler(AtlasError)
    async def not_in_atlas(request: Request, exc: AtlasError) -> Response:
        return error(request, 404, "not found", str(exc))

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> Response:
        return error(request, 400, "bad request", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        title = "not found" if exc.status_code == 404 else "error"
        message = f"{request.url.path} is not a page of this atlas" if exc.status_code == 404 else str(exc.detail)
        return error(request, exc.status_code, title, message)

    # ------------------------------------------------------------------ pages

    @get("/", response_class=HTMLResponse)
    def home() -> Response:
        return page("home.html", **reader.read(lambda atlas: reader.memo(("home",), lambda: pages.home_data(atlas))))

    @get("/m/{model}")
    def model_page(model: str) -> Response:
        resolve(model)  # 404 when unknown
        return RedirectResponse("/", status_code=302)

    def layer_context(request: Request, model: str, layer: str) -> dict[str, Any] | Response:
        params = request.query_params
        query = LayerQuery.parse(params.get("q"), params.get("sort"), params.get("page"), params.get("per_page"))
        model_key, canonical, ok = resolve(model, layer)
        if not ok:
            return redirect(request, model_key, canonical)
        return reader.read(lambda atlas: pages.layer_data(atlas, model_key, canonical, query,
                                                          cards=reader.layer_cards(model_key, canonical)))

    @get("/m/{model}/l/{layer}", response_class=HTMLResponse)
    def layer_page(request: Request, model: str, layer: str) -> Response:
        context = layer_context(request, model, layer)
        return context if isinstance(context, Response) else page("layer.html", **context)

    def unit_target(request: Request, model: str, layer: str, unit: str, rest: str = "") -> tuple | Response:
        index = parse_unit(unit)
        model_key, canonical, ok = resolve(model, layer)
        if not ok or unit != str(index):  # an alias, a model key, or a unit written "01": one page, one URL
            return redirect(request, model_key, canonical, f"/u/{index}{rest}")
        return model_key, canonical, index

    @get("/m/{model}/l/{layer}/u/{unit}", response_class=HTMLResponse)
    def unit_page(request: Request, model: str, layer: str, unit: str) -> Response:
        target = unit_target(request, model, layer, unit)
        if isinstance(target, Response):
            return target
        return page("unit.html", **reader.read(lambda atlas: pages.unit_data(atlas, *target)))

    @get("/m/{model}/l/{layer}/u/{unit}/{plot}")
    def unit_plot(request: Request, model: str, layer: str, unit: str, plot: str) -> Response:
        kind = plot.removesuffix(".svg")
        if not plot.endswith(".svg") or kind not in PLOT_KINDS:
            return error(request, 404, "not found", f"no plot {plot!r}: plots are "
                         + ", ".join(f"{k}.svg" for k in PLOT_KINDS))
        target = unit_target(request, model, layer, unit, f"/{plot}")
        if isinstance(target, Response):
            return target
        model_key, canonical, index = target

        def draw() -> bytes:
            if kind == "histogram":
                return histogram_svg(reader.read(lambda atlas: atlas.unit(model_key, canonical, index)))
            return conditional_svg(reader.read(lambda atlas: atlas.conditional_buckets(model_key, canonical, index)))

        data = reader.plot((model_key, canonical, index, kind), draw)
        return cached(request, data, "image/svg+xml", REVALIDATE)

    def search(q: str) -> dict[str, Any]:
        found = reader.read(lambda atlas: pages.search_data(atlas, q))
        # ``null``: no model loaded (the atlas alone cannot attribute a new prompt).
        found["attribution"] = prompts.attribute(q) if prompts is not None and q.strip() else None
        return found

    @get("/search", response_class=HTMLResponse)
    def search_page(q: str = "") -> Response:
        return page("search.html", search_q=q, prompts=prompts is not None, **search(q))

    @get("/files/{path:path}")
    def atlas_files(request: Request, path: str) -> Response:
        found = atlas_file(reader.root, path)
        data = None if found is None else _read_or_none(found)
        if data is None:
            return error(request, 404, "not found", f"{path!r} is not an image of this atlas the server can read")
        policy = IMMUTABLE if path.startswith("thumbs/") else REVALIDATE
        return cached(request, data, media_type(found), policy)

    # ------------------------------------------------------------------ JSON API

    @get("/api/models")
    def api_models() -> Response:
        return JSONResponse(reader.read(lambda atlas: reader.memo(("home",), lambda: pages.home_data(atlas))))

    @get("/api/m/{model}/l/{layer}")
    def api_layer(request: Request, model: str, layer: str) -> Response:
        context = layer_context(request, model, layer)
        if isinstance(context, Response):
            return context
        return JSONResponse({key: context[key] for key in ("model", "layer", "total", "page", "pages", "per_page",
                                                           "q", "sort", "cards")}
                            | {"units": context["entry"]["units"], "aliases": context["entry"]["aliases"],
                               "artifacts": listed_artifacts(context["model"], context["layer"], context["artifacts"])})

    def listed_artifacts(model_key: str, layer: str, artifacts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A layer's artifacts without their ``data`` (emotion codes alone are ~25 kB, sent with every page of
        the grid), each with the URL of its own JSON, which has it."""
        return [{key: artifact[key] for key in ARTIFACT_LISTED}
                | {"api": links().api_artifact(model_key, layer, artifact["kind"], artifact["name"])}
                for artifact in artifacts]

    @get("/api/m/{model}/l/{layer}/artifacts/{kind}/{name:path}")
    def api_artifact(request: Request, model: str, layer: str, kind: str, name: str) -> Response:
        model_key, canonical, ok = resolve(model, layer)
        if not ok:
            return redirect(request, model_key, canonical, "/" + url_path("artifacts", kind, name))
        found = reader.read(lambda atlas: atlas.artifact(model_key, canonical, kind, name))
        if found is None:
            return error(request, 404, "not found", f"no artifact {kind}/{name} of {model_key} {canonical}")
        return JSONResponse({"model": model_key, "layer": canonical} | found)

    @get("/api/m/{model}/l/{layer}/u/{unit}")
    def api_unit(request: Request, model: str, layer: str, unit: str) -> Response:
        target = unit_target(request, model, layer, unit)
        if isinstance(target, Response):
            return target
        return JSONResponse(reader.read(lambda atlas: atlas.unit(*target)))

    @get("/api/search")
    def api_search(q: str = "") -> Response:
        return JSONResponse(search(q))

    @get("/api/{rest:path}")
    def api_unknown(request: Request, rest: str) -> Response:
        return error(request, 404, "not found", f"/api/{rest} is not an API path")

    return app


def cached(request: "Any", data: bytes, media: str, policy: str) -> "Any":
    """``data`` with an ETag and Cache-Control; 304 when the client already holds it."""
    from fastapi.responses import Response

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


def serve(atlas_path: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
          model: "Any" = None, log_level: str = "warning") -> None:
    """Serve the microscope until interrupted (blocks). Bound to 127.0.0.1 unless ``host`` says otherwise.

    ``model``: the atlas's model, loaded, to attribute new prompts in search (see :func:`create_app`).
    Raises :class:`~neuronscope.errors.NeuronscopeError` when ``host:port`` cannot be bound (a port in use).
    """
    import uvicorn

    listening = listening_socket(host, port)
    with listening:
        app = create_app(atlas_path, model=model)
        port = listening.getsockname()[1]  # port 0 asks for a free one: print the one given
        url_host = f"[{host}]" if ":" in host else host
        print(f"neuronscope microscope: http://{url_host}:{port}/  (atlas {atlas_path}; Ctrl-C stops)", flush=True)
        uvicorn.Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[listening])


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for uvicorn to serve on (it listens on it).

    Bound before the URL is printed: uvicorn binding its own printed the URL of a server that never started,
    then its raw "[Errno 98] address already in use" (exit 3).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's: a restart need not wait out TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise NeuronscopeError(f"port {port} is in use: pick another --port") from None
        raise NeuronscopeError(f"cannot serve on {host}:{port} ({err.strerror or err}): "
                               "pick another --host or --port") from None
    sock.set_inheritable(True)
    return sock
