"""The microscope's web app: server-rendered pages over a read-only atlas, and a JSON API beside them.

    from neuronscope.web import create_app, serve
    app = create_app("my-atlas")                 # an ASGI app (FastAPI)
    serve("my-atlas", port=8000)                  # http://127.0.0.1:8000/

Pages (``{model}`` a registry name such as ``mini-clip``, ``{layer}`` a canonical
dot path or any alias, ``~`` for ``/``; a non-canonical name answers 301):

    /                                     models and layers with counts
    /m/{model}/l/{layer}?q=&sort=&page=   unit grid: filter by word or label (or labelled=1, multimodal=1,
                                          family=NAME), sort by unit, max or multimodality
    /m/{model}/l/{layer}/u/{unit}         one unit (plots at .../histogram.svg, .../conditional.svg)
    /search?q=                            units whose words, labels or texts match
    /files/{path}                         the atlas's images (thumbnails, renders, artifacts)

The API mirrors them: ``/api/models``, ``/api/m/{model}/l/{layer}`` (artifacts listed without
their data), ``/api/m/{model}/l/{layer}/artifacts/{kind}/{name}`` (one with its data),
``/api/m/{model}/l/{layer}/u/{unit}`` (exactly :meth:`Atlas.unit`'s object)
and ``/api/search?q=``. Unknown names answer 404, malformed parameters 400.
"""


import errno
import os
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from typing import TYPE_CHECKING, Any

from neuronscope.atlas import AtlasError
from neuronscope.errors import NeuronscopeError
from neuronscope.web.reader import AtlasReader

if TYPE_CHECKING:
    from neuronscope.web.prompts import PromptAttributor

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def create_app(atlas_path: str | os.PathLike, *, model: "Any" = None, warm: bool = True) -> "Any":
    """The microscope as a FastAPI app over the atlas at ``atlas_path`` (opened read-only).

    The routes are :mod:`neuronscope.web.routes`; the app holds what they share in its state: ``reader``
    (an :class:`~neuronscope.web.reader.AtlasReader`: it opens the atlas at the first read, and the app's
    lifespan closes it) and ``prompts``.

    Args:
        model: the atlas's model, loaded (a :class:`~neuronscope.models.LoadedModel`): search then
            also attributes the prompt to the units of the atlas's layers of that model
            (:mod:`neuronscope.web.prompts`). Without it, search matches stored words, labels, texts.
        warm: on startup, read every layer's grid in a background thread (the first visit
            to a 2560-unit layer then finds it cached).

    Raises :class:`~neuronscope.atlas.AtlasError` when ``atlas_path`` is not a readable atlas.
    """
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    from neuronscope.web.microscope import ERROR_HANDLERS
    from neuronscope.web.routes import api_routes, page_routes

    prompts = _checked_prompts(atlas_path, model)
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
    app.state.reader, app.state.prompts = reader, prompts
    for error, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(error, handler)
    app.mount("/static", StaticFiles(directory=os.path.join(os.path.dirname(__file__), "static")), name="static")
    app.include_router(page_routes)
    app.include_router(api_routes)  # last: its /api/{rest:path} takes every API path no route before it took
    return app


def _checked_prompts(atlas_path: str | os.PathLike, model: "Any") -> "PromptAttributor | None":
    """The :class:`~neuronscope.web.prompts.PromptAttributor` of ``model`` over the atlas's layers of it (None
    without a model), after checking that ``atlas_path`` is an atlas that holds ``model``: a wrong atlas or
    model fails when the app is made, not at its first request. The atlas is closed again before returning."""
    with closing(AtlasReader(atlas_path)) as reader:
        held = reader.read(lambda atlas: atlas.models())  # AtlasError when it is no atlas
        if model is None:
            return None
        if model.key not in held:
            raise AtlasError(f"--model loads {model.key}, but {atlas_path} holds {', '.join(held) or 'no model'}"
                             ": load the model the atlas was made with")
        layers = reader.read(lambda atlas: atlas.layers(model.key))
    from neuronscope.web.prompts import PromptAttributor

    return PromptAttributor(model, [entry["layer"] for entry in layers])  # raises for a labels-only model


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
