"""The server's one read-only view of an atlas: a lock around its connection, and caches.

SQLite connections are not for concurrent use, and the server answers
requests from a thread pool, so every read holds :attr:`AtlasReader.lock`
(reads take milliseconds; templates render outside it). A layer's grid and a
unit's plots are cached until the catalogue changes: ``PRAGMA data_version``
moves whenever another connection (a scan still writing) commits. An atlas
opened ``immutable`` (a folder the server cannot write) sees no commit at all:
there the files' stamp is watched instead, and the atlas reopened when it moves.

The atlas is opened at the first read, not when the reader is made: an app that is made but never
served (a test, a failure before the server starts) then holds no connection that nothing would close.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, TypeVar

from neuronscope.atlas import Atlas
from neuronscope.atlas.browse import layer_grid
from neuronscope.web.links import model_slug

T = TypeVar("T")
#: Plots kept in memory (an SVG is ~20-40 kB).
PLOT_CACHE_SIZE = 512


class AtlasReader:
    """A read-only atlas shared by the server's threads."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._path = path
        self.root = Path(path).resolve()
        self.lock = threading.Lock()
        self._open_lock = threading.Lock()  # taken after ``lock`` when both are held
        self._atlas: Atlas | None = None
        self._closed = False
        self._stamp: Any = None
        self._version: int | None = None
        self._generation = 0  # moves whenever the caches are cleared (data_version restarts on a reopen)
        self._memo: dict[tuple, Any] = {}  # memo: grids and the home page
        self._plots: OrderedDict[tuple, bytes] = OrderedDict()
        self._plot_lock = threading.Lock()

    @property
    def atlas(self) -> Atlas:
        """The atlas, opened read-only on first use (:class:`~neuronscope.atlas.AtlasError` when it is none).

        After :meth:`close`, the closed one: reading it raises :class:`sqlite3.ProgrammingError`.
        """
        if self._atlas is None:
            with self._open_lock:
                if self._atlas is None:
                    if self._closed:
                        raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
                    atlas = Atlas(self._path, create=False, read_only=True)
                    self._stamp = atlas.catalogue_stamp()
                    self._atlas = atlas
        return self._atlas

    def close(self) -> None:
        """Close the atlas for good (when the server stops): later reads raise, they do not reopen it."""
        with self.lock, self._open_lock:
            self._closed = True
            if self._atlas is not None:
                self._atlas.close()

    def read(self, function: Callable[[Atlas], T]) -> T:
        """Run ``function(atlas)`` holding the lock (after dropping caches if the atlas changed)."""
        with self.lock:
            self._check_version()
            return function(self.atlas)

    def _check_version(self) -> None:
        if self.atlas.immutable:
            self._reopen_if_written()
        version = self.atlas.db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._version = version
            self._clear_caches()

    def _reopen_if_written(self) -> None:
        """Reopen an ``immutable`` atlas whose files moved: SQLite neither sees its owner's commits nor
        notices a checkpoint rewriting the pages it reads. A failed reopen is raised, and tried again on
        the next read."""
        stamp = self.atlas.catalogue_stamp()  # before opening: a write meanwhile moves it again
        if stamp == self._stamp:
            return
        reopened = Atlas(self._path, create=False, read_only=True)
        self.atlas.close()
        self._atlas, self._stamp = reopened, stamp
        self._version = None  # data_version counts per connection: the new one's says nothing of the old
        self._clear_caches()

    def _clear_caches(self) -> None:
        self._memo.clear()
        with self._plot_lock:
            self._plots.clear()
            self._generation += 1

    def layer_cards(self, model: str, layer: str) -> list[dict[str, Any]]:
        """:func:`layer_grid` of a stored layer, cached (call inside :meth:`read`)."""
        return self.memo(("grid", model, layer), lambda: layer_grid(self.atlas, model, layer))

    def memo(self, key: tuple, compute: Callable[[], T]) -> T:
        """``compute()`` once per catalogue version (call inside :meth:`read`): the home page, layer grids."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def warm(self) -> None:
        """Read every layer's grid now (a 2560-unit layer takes ~0.1-0.5 s), so no visitor waits for it."""
        try:
            for model in self.read(lambda atlas: atlas.models()):
                for entry in self.read(lambda atlas: atlas.layers(model)):
                    self.read(lambda atlas: self.layer_cards(model, entry["layer"]))
        except sqlite3.ProgrammingError:
            pass  # the server stopped (and closed the atlas) before warming finished: nothing to warm for

    def plot(self, key: tuple, draw: Callable[[], bytes]) -> bytes:
        """A plot's bytes by key, drawn once per catalogue version (LRU); ``key`` must name the unit and the
        plot's kind."""
        with self._plot_lock:
            if key in self._plots:
                self._plots.move_to_end(key)
                return self._plots[key]
            generation = self._generation
        data = draw()  # outside the locks: other requests go on meanwhile
        with self._plot_lock:
            # A commit seen while drawing (here or by another request) cleared the cache: these bytes may
            # come from the old data, so they are served once and not kept.
            if self._generation == generation:
                self._plots[key] = data
                while len(self._plots) > PLOT_CACHE_SIZE:
                    self._plots.popitem(last=False)
        return data

    def resolve(self, model: str, layer: str | None = None) -> tuple[str, str | None, bool]:
        """``(model key, canonical layer, canonical?)`` for URL segments; ``canonical`` False means redirect.

        Raises :class:`~neuronscope.atlas.AtlasError` (a 404) for a model or layer the atlas lacks.
        """
        def resolve(atlas: Atlas) -> tuple[str, str | None, bool]:
            known = atlas.models()
            key = atlas.resolve_model(model)
            canonical = model == model_slug(key, known)
            if layer is None:
                return key, None, canonical
            entry = atlas.resolve_layer(key, layer)
            return key, entry["layer"], canonical and layer == entry["layer"]

        return self.read(resolve)
