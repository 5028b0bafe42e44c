"""``neuronscope export ATLAS --site DIR``: the microscope's pages as plain files for any static host.

    from neuronscope.web import export_site
    summary = export_site("my-atlas", "site/")     # then open site/index.html, or upload site/

The site holds the same pages as the server (home, layer grids paged in unit
order, unit pages with their plots, search) with relative links only, the
images they show copied under ``files/``, and nothing else of the atlas.
Search runs in the browser over the units' words and labels (an index in
``static/search-index.js``, a script rather than JSON so it loads from
``file://`` too); filtering, sorting, texts search and the JSON API need the server.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from neuronscope.atlas import Atlas, AtlasError, reading
from neuronscope.atlas.browse import layer_grid, search_index
from neuronscope.web import pages
from neuronscope.web.files import atlas_file
from neuronscope.web.links import StaticLinks, artifact_json_segments, model_slug, page_segments, static_page_path
from neuronscope.web.plots import conditional_svg, histogram_svg

#: Written at the site's root; a non-empty folder without it is not overwritten.
MARKER = ".neuronscope-site"
STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    site: Path
    pages: int
    files: int
    units: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"site": str(self.site), "pages": self.pages, "files": self.files, "units": self.units,
                "seconds": round(self.seconds, 3)}


class _Site:
    """The folder being written, and which atlas files have been copied into it."""

    def __init__(self, root: Path, atlas: Atlas) -> None:
        self.root = root
        self.atlas_root = atlas.path.resolve()
        self.known = atlas.models()
        self.copied: set[str] = set()
        self.pages = 0

    def links(self, here: str) -> StaticLinks:
        return StaticLinks(self.known, here)

    def page_folder(self, model: str, layer: str, unit: int | None = None) -> str:
        """The folder of a layer's (or unit's) pages: the segments its links are made of, unencoded."""
        return "/".join(page_segments(model_slug(model, self.known), layer, unit))

    def write(self, relative: str, data: str | bytes) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
            self.pages += relative.endswith(".html")
        else:
            path.write_bytes(data)

    def page(self, relative: str, template: str, **context: Any) -> None:
        self.write(relative, pages.render(template, self.links(relative), **context))

    def copy(self, relative: str | None) -> None:
        """Copy an atlas file a page shows (only files the server would serve)."""
        if not relative or relative in self.copied:
            return
        source = atlas_file(self.atlas_root, relative)
        if source is None:
            return  # missing on disk: the page's image shows as broken, as on the server
        target = self.root / "files" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        self.copied.add(relative)


def _check_target(site_dir: Path) -> None:
    """Refuse a target that is not ours to replace: a file, or a folder with other content."""
    if site_dir.exists() and not site_dir.is_dir():
        raise AtlasError(f"{site_dir} is a file: pass a folder for the site (new, empty, or an earlier export)")
    if site_dir.is_dir() and any(site_dir.iterdir()) and not (site_dir / MARKER).is_file():
        raise AtlasError(f"{site_dir} is not empty and is not a neuronscope site: give an empty or new folder")


def _sibling(site_dir: Path, tag: str) -> Path:
    """A new empty folder beside ``site_dir`` (same file system: renames between them are atomic).

    Made with ``mkdir``, not ``mkdtemp``: the published folder keeps the umask's permissions, not 0700.
    """
    while True:
        candidate = site_dir.parent / f".{site_dir.name}.{tag}-{secrets.token_hex(4)}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as error:
            raise AtlasError(f"cannot write in {site_dir.parent} ({error.strerror}): the export is staged beside "
                             f"{site_dir.name} and swapped in; give a site folder whose parent you can write to"
                             ) from error


def _swap_in(staging: Path, site_dir: Path) -> None:
    """Put ``staging`` in ``site_dir``'s place (an earlier export, or an empty folder, is removed after)."""
    _check_target(site_dir)  # again: the folder may have changed during a long export
    previous = None
    if site_dir.exists():
        previous = _sibling(site_dir, "old")
        try:
            os.replace(site_dir, previous)  # onto an empty folder: a rename
        except OSError as error:
            previous.rmdir()
            raise AtlasError(f"cannot move the earlier export {site_dir} aside ({error.strerror}); "
                             f"the new site is not written") from error
    try:
        os.replace(staging, site_dir)
    except BaseException:
        if previous is not None:
            os.replace(previous, site_dir)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


@contextmanager
def _staged(site_dir: Path) -> Iterator[Path]:
    """A fresh sibling folder to write the site into, put in ``site_dir``'s place only when the export succeeds.

    A failed (or interrupted) export leaves the previous one as it was; a successful one replaces it whole,
    so no stale page survives.
    """
    # "." or "out/..", or a symlink to the folder: the real folder is replaced, among its real siblings
    site_dir = Path(os.path.realpath(site_dir))
    site_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(site_dir, "partial")
    try:
        (staging / MARKER).write_text("written by `neuronscope export`; the whole folder is replaced on re-export\n")
        yield staging
        _swap_in(staging, site_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export_site(atlas: Atlas | str | os.PathLike, site_dir: str | os.PathLike, *, plots: bool = True,
                progress: Callable[[int, int], None] | None = None) -> ExportSummary:
    """Write the atlas's microscope pages as a static site in ``site_dir``.

    Args:
        atlas: an open :class:`Atlas` or an atlas directory (opened read-only).
        site_dir: a new or empty folder, or an earlier export (replaced).
        plots: write each unit's histogram and conditional plot (SVG).
        progress: called with ``(units done, units in all)`` after each unit page.
    """
    started = time.perf_counter()
    site_dir = Path(site_dir)
    _check_target(site_dir)  # before opening the atlas: a wrong --site costs nothing
    with reading(atlas) as store, _staged(site_dir) as staging:
        site = _Site(staging, store)
        (staging / "static").mkdir()
        for name in ("style.css", "app.js"):
            shutil.copyfile(STATIC_DIR / name, staging / "static" / name)
        home = pages.home_data(store)
        site.page("index.html", "home.html", **home)
        layers = [layer for group in home["models"] for layer in group["layers"]]
        total = sum(layer["units"] for layer in layers)
        done = 0
        for layer in layers:
            done = _export_layer(store, site, layer["model"], layer["layer"], plots, done, total, progress)
        _export_search(store, site)
    return ExportSummary(site_dir, site.pages, len(site.copied), total, time.perf_counter() - started)


def _export_layer(store: Atlas, site: _Site, model: str, layer: str, plots: bool, done: int, total: int,
                  progress: Callable[[int, int], None] | None) -> int:
    folder = site.page_folder(model, layer)
    cards = layer_grid(store, model, layer)
    query = pages.LayerQuery()
    first = pages.layer_data(store, model, layer, query, cards=cards)
    for number in range(1, first["pages"] + 1):
        data = first if number == 1 else pages.layer_data(store, model, layer,
                                                          pages.LayerQuery(page=number), cards=cards)
        name = "index.html" if number == 1 else f"page-{number}.html"
        site.page(f"{folder}/{name}", "layer.html", **data)
    for artifact in first["artifacts"]:
        if artifact["image"]:
            site.copy(artifact["path"])
    _export_artifacts(site, model, layer, first["artifacts"])
    for card in cards:
        site.copy(card["featurevis"] or card["thumb"])
    for unit in range(len(cards)):
        data = pages.unit_data(store, model, layer, unit)
        record = data["record"]
        unit_folder = site.page_folder(model, layer, unit)
        for render in record["featurevis"]:
            site.copy(render["path"])
        for example in record["top"] + record["bottom"]:  # the page shows every stored example
            site.copy(example["thumb"])
        has_plots = plots and data["activations"] == "plottable"
        if has_plots:
            site.write(f"{unit_folder}/histogram.svg", histogram_svg(record))
            site.write(f"{unit_folder}/conditional.svg", conditional_svg(store.record_buckets(record)))
        site.page(f"{unit_folder}/index.html", "unit.html", plots=has_plots, **data)
        done += 1
        if progress is not None:
            progress(done, total)
    return done


def _export_artifacts(site: _Site, model: str, layer: str, artifacts: list[dict[str, Any]]) -> None:
    """Each layer artifact's JSON, as the server's ``/api`` answers it, where the layer page links it: an
    artifact without an image (words, facet probes) has nothing else to open. ``artifacts``: the layer page's
    (:func:`~neuronscope.web.pages.layer_data`, read once), less the ``image`` flag the page adds."""
    slug = model_slug(model, site.known)
    for artifact in artifacts:
        stored = {key: value for key, value in artifact.items() if key != "image"}
        site.write("/".join(artifact_json_segments(slug, layer, artifact["kind"], artifact["name"])),
                   json.dumps({"model": model, "layer": layer} | stored, separators=(",", ":")))


def _export_search(store: Atlas, site: _Site) -> None:
    links = site.links("search.html")
    units = [{**entry, "href": links.unit(entry["model"], entry["layer"], entry["unit"])}
             for entry in search_index(store)]
    # Every layer, for a query that is a unit's number (app.js goes to that unit): a unit's page is
    # "<href><unit>/index.html".
    layers = [{"model": model, "layer": entry["layer"], "units": entry["units"],
               "href": links.unit(model, entry["layer"], 0).removesuffix("0/index.html")}
              for model in store.models() for entry in store.layers(model)]
    index = json.dumps({"units": units, "layers": layers}, separators=(",", ":"))
    site.write("static/search-index.js", f"window.NEURONSCOPE_INDEX = {index};\n")
    site.page(static_page_path("search"), "search.html", q="", hits=[])

