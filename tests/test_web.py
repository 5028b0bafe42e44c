"""The microscope server: pages, JSON API, redirects, 404/400, file safety, caching, concurrency, notebook cards."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import shutil
import sqlite3
from contextlib import closing
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from neuronscope.atlas import Atlas, AtlasError
from neuronscope.atlas.browse import layer_counts, layer_grid, search_index, search_units
from neuronscope.cli import app as cli_app
from neuronscope.errors import NeuronscopeError
from neuronscope.web import create_app, export_site, layer_view, unit_view
from tests.web_atlas import (  # noqa: F401 - web_atlas is a fixture
    FAM_BARE,
    FAM_EMPTY,
    FAM_LAYER,
    HUB_MODEL,
    LAYER,
    MM_BARE,
    MM_LAYER,
    MODEL,
    build_family_atlas,
    build_hub_atlas,
    build_multimodal_atlas,
    png,
    running_server,
    web_atlas,
)

LAYER_URL = f"/m/tiny-rn/l/{LAYER}"


@pytest.fixture(scope="module")
def client(web_atlas):
    with TestClient(create_app(web_atlas)) as test_client:
        yield test_client


def test_home_lists_models_and_layers_with_counts(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert f'href="{LAYER_URL}"' in page.text and MODEL in page.text
    models = client.get("/api/models").json()["models"]
    layer = models[0]["layers"][0]
    assert models[0]["model"] == MODEL and layer["layer"] == LAYER and "neurons" in layer["aliases"]
    assert (layer["units"], layer["scanned"], layer["featurevis"], layer["words"], layer["texts"], layer["labels"]) \
        == (512, 512, 4, 4, 2, 2)


def test_layer_page_pages_filters_and_sorts(client):
    first = client.get(LAYER_URL).text
    assert first.count('class="card"') == 120 and "page 1 of 5" in first  # 512 units, 120 a page
    assert f'href="{LAYER_URL}/u/0"' in first and "star (drawn or written)" in first
    assert f'href="{LAYER_URL}?page=2"' in first
    page = client.get(f"/api{LAYER_URL}", params={"per_page": "10", "page": "3"}).json()
    assert [card["unit"] for card in page["cards"]] == list(range(20, 30)) and page["pages"] == 52
    filtered = client.get(f"/api{LAYER_URL}", params={"q": "STAR"}).json()  # words or label, any case
    assert [card["unit"] for card in filtered["cards"]] == [0, 3] and filtered["total"] == 2
    by_label = client.get(f"/api{LAYER_URL}", params={"q": "bubble"}).json()
    assert [card["unit"] for card in by_label["cards"]] == [3]
    ranked = client.get(f"/api{LAYER_URL}", params={"sort": "max", "per_page": "1000"}).json()["cards"]
    maxima = [card["max"] for card in ranked]
    assert maxima == sorted(maxima, reverse=True) and len(ranked) == 512
    html = client.get(LAYER_URL, params={"q": "star", "sort": "max"}).text
    assert html.count('class="card"') == 2 and "2 units match" in html


def test_layer_page_shows_layer_artifacts(client):
    html = client.get(LAYER_URL).text
    assert "emotions · codes" in html and 'src="/files/artifacts/' in html


def test_unit_page_shows_every_part_and_missing_parts_as_missing(client, web_atlas):
    html = client.get(f"{LAYER_URL}/u/2").text
    for part in ("plain", "diverse", "facet: text", "diagram", "Top dataset examples", "histogram.svg",
                 "conditional.svg", "run 1: scan", "run 2: visualize"):
        assert part in html, part
    assert "a diagram &lt;b&gt;bold&lt;/b&gt;" in html  # user data is escaped
    assert html.count('src="/files/thumbs/') == 4  # k = 4 top examples, cells marked in the thumbnails
    bare = client.get(f"{LAYER_URL}/u/100").text
    for missing in ("No feature visualization in this atlas.", "No rastered words in this atlas.",
                    "No text-side texts in this atlas."):
        assert missing in bare
    for image in ("histogram", "conditional"):
        plot = client.get(f"{LAYER_URL}/u/2/{image}.svg")
        assert plot.status_code == 200 and plot.headers["content-type"] == "image/svg+xml"
        assert plot.content.startswith(b"<svg") and b"<rect" in plot.content
    # The images sit in folders a and b: the conditional plot stacks each bucket's share of each (the paper's
    # y axis), named in its legend.
    conditional = client.get(f"{LAYER_URL}/u/2/conditional.svg").content
    assert b"share of images" in conditional and b"<title>a</title>" in conditional and b"<title>b</title>" in conditional


def test_a_missing_histogram_file_shows_the_unit_without_it(web_atlas, tmp_path):
    # A rescan removes the previous run's histogram file after its commit: a server reading in between
    # (or a partly copied atlas) finds it gone.
    copy = tmp_path / "atlas"
    shutil.copytree(web_atlas, copy)
    for arrays in (copy / "arrays").rglob("*.npz"):
        arrays.unlink()
    with TestClient(create_app(copy, warm=False)) as bare:
        page = bare.get(f"{LAYER_URL}/u/2")
        assert page.status_code == 200 and "No histogram" in page.text
        assert bare.get(f"/api{LAYER_URL}/u/2").json()["histogram"] is None
        for plot in ("histogram", "conditional"):
            answer = bare.get(f"{LAYER_URL}/u/2/{plot}.svg")
            assert answer.status_code == 200 and answer.content.startswith(b"<svg")


def test_a_unit_without_finite_activations_says_so_rather_than_unscanned(web_atlas, tmp_path):
    """A scanned unit whose every activation was inf/NaN has an empty histogram ({"edges": [], ...}, truthy):
    its page showed two plots that each said "this layer was not scanned"."""
    import numpy as np

    copy = tmp_path / "atlas"
    shutil.copytree(web_atlas, copy)
    [arrays] = (copy / "arrays").rglob("*.npz")
    with np.load(arrays) as data:
        saved = {name: data[name] for name in data.files}
    saved["counts"][5] = 0
    np.savez(arrays, **saved)
    with TestClient(create_app(copy, warm=False)) as browser:
        page = browser.get(f"{LAYER_URL}/u/5").text
        assert "No finite activations for this unit" in page and "histogram.svg" not in page
        assert b"no finite activations" in browser.get(f"{LAYER_URL}/u/5/histogram.svg").content
        assert "histogram.svg" in browser.get(f"{LAYER_URL}/u/6").text
    site = export_site(copy, tmp_path / "site")
    unit = site.site / "m/tiny-rn/l" / LAYER / "u"
    assert "No finite activations" in (unit / "5/index.html").read_text() and not (unit / "5/histogram.svg").exists()


def test_api_unit_is_the_show_json_object(client, web_atlas):
    answer = client.get(f"/api{LAYER_URL}/u/0").json()
    with Atlas(web_atlas, create=False) as atlas:
        assert answer == json.loads(json.dumps(atlas.unit(MODEL, LAYER, 0)))
    assert answer["label"] == "star (drawn or written)" and answer["words"][0] == {"word": "star", "score": 3.0}
    assert [render["kind"] for render in answer["featurevis"]] == ["plain", "diverse", "diverse", "facet:text"]


def test_search_matches_words_labels_and_texts(client):
    hits = client.get("/api/search", params={"q": "star"}).json()["hits"]
    assert [(hit["unit"], hit["match"], hit["text"]) for hit in hits] == [(0, "word", "star"), (3, "word", "star")]
    assert [(match["match"], match["text"]) for match in hits[0]["matches"]] \
        == [("label", "star (drawn or written)"), ("word", "star"), ("word", "stars")]
    assert [hit["unit"] for hit in client.get("/api/search", params={"q": "jigsaw"}).json()["hits"]] == [1]
    assert client.get("/api/search", params={"q": "no such word"}).json()["hits"] == []
    html = client.get("/search", params={"q": "puzzle"}).text
    assert f'href="{LAYER_URL}/u/1"' in html and "word: puzzle" in html


def test_search_and_the_layer_filter_fold_every_script_and_read_only_units_the_atlas_shows(tmp_path):
    """SQLite's lower() and LIKE fold ASCII only: "Éclair" was found by no spelling, while the static export's
    script found it. Labels of units no layer page shows (a unit past the layer's end, a layer never scanned)
    were found, and linked to a 404. The layer filter saw only each card's top three words."""
    with Atlas(tmp_path / "atlas") as atlas:
        # written before the layer is registered (a writer refuses unit 9 after): registering keeps them
        for model, layer, unit in ((MODEL, LAYER, 9), (MODEL, "visual.layer3", 0), ("mini-clip@bundled", LAYER, 0)):
            atlas.set_label(model, layer, unit, "Éclair")
            atlas.write_unit_texts("words", None, model, layer, {unit: [("œuvre", 1.0)]})
        atlas.register_layer(MODEL, LAYER, aliases=["neurons"], units=4, grid=(1, 1))
        atlas.set_label(MODEL, LAYER, 1, "Éclair")
        atlas.write_unit_texts("words", None, MODEL, LAYER, {2: [("first", 5.0), ("second", 4.0), ("third", 3.0),
                                                                 ("fourth", 2.0), ("Œuvre", 1.0)]})
    with TestClient(create_app(tmp_path / "atlas", warm=False)) as client:
        for spelling, unit in (("éclair", 1), ("ÉCLAIR", 1), ("Éclair", 1), ("œuvre", 2), ("ŒUVRE", 2)):
            hits = client.get("/api/search", params={"q": spelling}).json()["hits"]
            assert [(hit["model"], hit["layer"], hit["unit"]) for hit in hits] == [(MODEL, LAYER, unit)], spelling
            cards = client.get(f"/api{LAYER_URL}", params={"q": spelling}).json()["cards"]
            assert [card["unit"] for card in cards] == [unit], spelling  # "Œuvre" is unit 2's fifth word
    with Atlas(tmp_path / "atlas", read_only=True) as atlas:
        assert [(entry["model"], entry["layer"], entry["unit"]) for entry in search_index(atlas)] \
            == [(MODEL, LAYER, 1), (MODEL, LAYER, 2)]


@pytest.mark.parametrize("url, location", [
    ("/m/tiny-rn/l/neurons", LAYER_URL),
    ("/m/tiny-rn/l/image_block_4~1~Add_6/u/3", f"{LAYER_URL}/u/3"),
    ("/m/tiny-rn@random/l/neurons/u/3/histogram.svg", f"{LAYER_URL}/u/3/histogram.svg"),
    (f"/m/tiny-rn@random/l/{LAYER}?q=star&sort=max", f"{LAYER_URL}?q=star&sort=max"),
    ("/api/m/tiny-rn/l/neurons/u/0", f"/api{LAYER_URL}/u/0"),
])
def test_aliases_and_model_keys_redirect_to_canonical_urls(client, url, location):
    answer = client.get(url, follow_redirects=False)
    assert answer.status_code == 301 and answer.headers["location"] == location


def test_a_model_key_with_a_slash_is_browsed_with_a_tilde(tmp_path):
    # hf-hub:org/repo@hub: "/" was written %2F, which servers decode before routing (404 everywhere).
    with TestClient(create_app(build_hub_atlas(tmp_path / "atlas"), warm=False)) as hub:
        url = "/m/hf-hub:org~repo/l/visual.layer4"
        assert f'href="{url}"' in hub.get("/").text
        assert hub.get(url).status_code == 200 and "hub unit" in hub.get(f"{url}/u/1").text
        assert hub.get(f"/api{url}/u/1").json()["model"] == HUB_MODEL
        key_url = hub.get("/m/hf-hub:org~repo@hub/l/neurons/u/1", follow_redirects=False)
        assert key_url.status_code == 301 and key_url.headers["location"] == f"{url}/u/1"


@pytest.mark.parametrize("url", ["/m/nope/l/neurons", "/m/tiny-rn/l/visual.layer9", f"{LAYER_URL}/u/512",
                                 f"{LAYER_URL}/u/0/other.svg", "/nothing/here", "/m/nope"])
def test_unknown_names_answer_a_404_page(client, url):
    answer = client.get(url)
    assert answer.status_code == 404 and "404" in answer.text and "text/html" in answer.headers["content-type"]


def test_unknown_names_in_the_api_answer_json_404(client):
    for url in ("/api/m/nope/l/neurons/u/0", f"/api{LAYER_URL}/u/9999", "/api/nothing"):
        answer = client.get(url)
        assert answer.status_code == 404 and answer.json()["status"] == 404


@pytest.mark.parametrize("url", [f"{LAYER_URL}/u/abc", f"{LAYER_URL}/u/-1", f"{LAYER_URL}?page=0",
                                 f"{LAYER_URL}?page=x", f"{LAYER_URL}?sort=random", f"{LAYER_URL}?per_page=100000",
                                 f"/api{LAYER_URL}/u/1.5",
                                 # digits str.isdigit() takes but int() refuses or reads as another unit
                                 f"{LAYER_URL}/u/%C2%B2", f"/api{LAYER_URL}/u/%C2%B2", f"{LAYER_URL}/u/%D9%A3",
                                 f"{LAYER_URL}?page=%C2%B2", f"{LAYER_URL}?page={'1' * 5000}",
                                 # past the last page (512 units, 120 a page): was 200, "page 99 of 5"
                                 f"{LAYER_URL}?page=6", f"/api{LAYER_URL}?page=99", f"{LAYER_URL}?q=star&page=2"])
def test_malformed_parameters_answer_400(client, url):
    assert client.get(url).status_code == 400


def test_a_url_unit_segment_is_parsed_apart_from_pythons_parse_unit():
    """Two ``parse_unit`` functions, with different contracts: the web one, for URL segments, has its own name."""
    from neuronscope.web import pages
    from neuronscope.web.pages import BadRequest, parse_unit_segment

    assert parse_unit_segment("7") == 7 and not hasattr(pages, "parse_unit")
    with pytest.raises(BadRequest, match="a unit is a whole number"):
        parse_unit_segment("²")


def test_images_carry_caching_headers_and_revalidate(client):
    record = client.get(f"/api{LAYER_URL}/u/0").json()
    thumb = client.get(f"/files/{record['top'][0]['thumb']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    assert "immutable" in thumb.headers["cache-control"] and thumb.headers["etag"]
    again = client.get(f"/files/{record['top'][0]['thumb']}", headers={"If-None-Match": thumb.headers["etag"]})
    assert again.status_code == 304 and not again.content
    render = client.get(f"/files/{record['featurevis'][0]['path']}")
    assert render.status_code == 200 and "must-revalidate" in render.headers["cache-control"]
    plot = client.get(f"{LAYER_URL}/u/0/histogram.svg")
    assert plot.headers["etag"] and plot.headers["cache-control"]


def raw_get(base: str, path: str) -> int:
    """GET ``path`` exactly as written (no client-side normalising of ``..`` or escapes)."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_only_atlas_images_are_served(web_atlas, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"not yours")
    (web_atlas / "thumbs" / "escape.png").symlink_to(outside)
    (web_atlas / "thumbs" / "db.png").symlink_to(web_atlas / "atlas.sqlite")
    try:
        with Atlas(web_atlas, create=False) as atlas:
            thumb = atlas.unit(MODEL, LAYER, 0)["top"][0]["thumb"]
            histogram = atlas.db.execute("SELECT path FROM histograms").fetchone()[0]
        with running_server(create_app(web_atlas)) as base:
            assert raw_get(base, f"/files/{thumb}") == 200
            refused = ["/files/atlas.sqlite", f"/files/{histogram}", "/files/../atlas.sqlite",
                       "/files/thumbs/../atlas.sqlite", "/files/thumbs/%2e%2e/atlas.sqlite",
                       "/files/thumbs/%2E%2E/%2E%2E/%2E%2E/etc/passwd", "/files/%2e%2e%2fatlas.sqlite",
                       "/files/thumbs/..%2f..%2fatlas.sqlite", "/files/thumbs/%252e%252e/atlas.sqlite",
                       "/files//etc/passwd", "/files/%2fetc%2fpasswd", f"/files/{outside}",
                       "/files/thumbs/escape.png", "/files/thumbs/db.png", "/files/thumbs/",
                       "/files/thumbs/..\\atlas.sqlite", "/files/thumbs/missing.png", "/static/../atlas.sqlite",
                       "/static/%2e%2e/app.py"]
            assert {path: raw_get(base, path) for path in refused} == {path: 404 for path in refused}
    finally:
        (web_atlas / "thumbs" / "escape.png").unlink()
        (web_atlas / "thumbs" / "db.png").unlink()


def test_keeps_serving_under_200_concurrent_requests(web_atlas):
    urls = ["/", LAYER_URL, f"{LAYER_URL}/u/1", f"/api{LAYER_URL}/u/2", "/search?q=star",
            f"{LAYER_URL}/u/3/histogram.svg"]

    async def hammer(base: str) -> list[int]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
            answers = await asyncio.gather(*(http.get(urls[i % len(urls)]) for i in range(200)))
        return [answer.status_code for answer in answers]

    with running_server(create_app(web_atlas)) as base:
        assert asyncio.run(hammer(base)) == [200] * 200
        assert httpx.get(base + "/").status_code == 200  # and still serving after


def test_server_is_read_only_and_sees_new_writes(web_atlas):
    with Atlas(web_atlas, create=False, read_only=True) as reader:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.set_label(MODEL, LAYER, 5, "written by a reader")
    with TestClient(create_app(web_atlas)) as test_client:
        assert "a label written later" not in test_client.get(LAYER_URL).text
        with Atlas(web_atlas, create=False) as writer:  # a command writing while the microscope runs
            writer.set_label(MODEL, LAYER, 5, "a label written later", source="test")
        try:
            assert "a label written later" in test_client.get(LAYER_URL).text  # the cached grid was dropped
        finally:
            with Atlas(web_atlas, create=False) as writer, writer.transaction() as db:
                db.execute("DELETE FROM labels WHERE unit = 5")


def test_a_plot_drawn_while_the_atlas_changed_is_not_kept(tmp_path):
    """A plot is drawn outside the reader's locks: when a scan committed meanwhile and another request
    cleared the cache, the bytes drawn from the old data were stored after the clear and served for good."""
    from neuronscope.web.reader import AtlasReader

    path = build_hub_atlas(tmp_path / "atlas")
    reader = AtlasReader(path)
    reader.read(lambda atlas: atlas.models())  # a request has seen the current version

    def draw_while_a_scan_commits() -> bytes:
        with Atlas(path) as writer:
            writer.set_label(HUB_MODEL, "visual.layer4", 0, "written meanwhile")
        reader.read(lambda atlas: None)  # another request sees the commit and clears the cache
        return b"old"

    try:
        assert reader.plot(("unit", 0), draw_while_a_scan_commits) == b"old"
        assert reader.plot(("unit", 0), lambda: b"new") == b"new"
        assert reader.plot(("unit", 0), lambda: b"newer") == b"new"  # kept when nothing changed
    finally:
        reader.close()


def test_the_app_opens_and_closes_its_atlas_through_lifespan(tmp_path):
    """router.on_startup / on_shutdown are gone from Starlette 1.0: the app uses lifespan= instead."""
    app = create_app(build_hub_atlas(tmp_path / "atlas"), warm=False)
    assert not app.router.on_startup and not app.router.on_shutdown
    with TestClient(app) as browser:
        assert browser.get("/").status_code == 200
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        app.state.reader.atlas.db.execute("SELECT 1")


def test_an_app_made_but_never_served_holds_no_connection_to_its_atlas(tmp_path):
    """create_app opened the atlas's SQLite connection, and only the lifespan closed it: an app made and never
    served (a test, or a failure before uvicorn started) kept it open. It now opens at the first read."""
    import os
    from pathlib import Path

    descriptors = Path("/proc/self/fd")
    if not descriptors.is_dir():
        pytest.skip("lists open files through /proc/self/fd (Linux)")
    folder = str(build_hub_atlas(tmp_path / "atlas").resolve())

    def open_atlas_files() -> list[str]:
        targets = []
        for descriptor in descriptors.iterdir():
            try:
                targets.append(os.readlink(descriptor))
            except OSError:  # closed since listed (the listing's own descriptor)
                pass
        return [target for target in targets if target.startswith(folder + os.sep)]

    app = create_app(folder, warm=False)
    assert open_atlas_files() == []
    with TestClient(app) as browser:
        assert browser.get("/").status_code == 200 and open_atlas_files() != []
    assert open_atlas_files() == []


def test_a_model_the_atlas_only_labels_is_refused_and_the_atlas_closed(tmp_path, monkeypatch):
    """A model with labels but no layer passed the 'held' check, then PromptAttributor raised and the
    reader's connection stayed open."""
    from neuronscope.errors import NeuronscopeError
    from neuronscope.web import app as web_app

    path = build_hub_atlas(tmp_path / "atlas")
    with Atlas(path) as atlas:
        atlas.set_label("mini-clip@bundled", "visual.layer4", 0, "cat")
    readers, reader_class = [], web_app.AtlasReader
    monkeypatch.setattr(web_app, "AtlasReader", lambda atlas: readers.append(reader_class(atlas)) or readers[-1])
    with pytest.raises(NeuronscopeError, match="holds no layer of mini-clip@bundled"):
        create_app(path, model=type("Labelled", (), {"key": "mini-clip@bundled", "preprocess": None})(), warm=False)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        readers[0].atlas.db.execute("SELECT 1")


def test_read_only_atlas_refuses_missing_and_old_atlases(tmp_path):
    with pytest.raises(AtlasError, match="not an atlas"):
        Atlas(tmp_path / "none", read_only=True)
    assert not (tmp_path / "none").exists()
    db = sqlite3.connect(tmp_path / "atlas.sqlite", isolation_level=None)
    from neuronscope.atlas import ensure_schema

    ensure_schema(db, target=1)
    db.close()
    # show opens read-only too: the remedy is that show migrates an atlas it can write, not "a writing command"
    with pytest.raises(AtlasError, match=re.escape(f"run `neuronscope show {tmp_path}` once to migrate it") + "$"):
        Atlas(tmp_path, read_only=True)


def test_layer_grid_agrees_with_unit_records(web_atlas):
    with Atlas(web_atlas, create=False, read_only=True) as atlas:
        cards = layer_grid(atlas, MODEL, LAYER)
        assert len(cards) == 512
        for card in cards[:6] + cards[-2:]:
            record = atlas.unit(MODEL, LAYER, card["unit"])
            assert card["max"] == record["stats"]["max"] and card["label"] == record["label"]
            assert card["words"] == [w["word"] for w in record["words"][:3]]
            assert card["thumb"] == record["top"][0]["thumb"]
            plain = [r["path"] for r in record["featurevis"] if r["kind"] == "plain"]
            assert card["featurevis"] == (plain[0] if plain else None)
        assert layer_grid(atlas, "tiny-rn", "neurons") == cards  # a bare name read the alias's units, no rows
        assert [entry["layer"] for entry in layer_counts(atlas)] == [LAYER]
        assert search_units(atlas, "100%") == [] and search_units(atlas, "st_r") == []  # LIKE wildcards escaped


def test_notebook_cards_inline_the_unit(web_atlas):
    with Atlas(web_atlas, create=False, read_only=True) as atlas:
        view = unit_view(atlas, "tiny-rn", "neurons", 0)
        assert view.record == atlas.unit(MODEL, LAYER, 0)  # the card shows the record `show --json` prints
    html = view._repr_html_()  # usable after the atlas is closed
    assert html.count("data:image/png;base64,") == 4 + 4 and "star (drawn or written)" in html
    assert view.record["words"][0]["word"] == "star" and "unit 0" in repr(view)
    bare = unit_view(web_atlas, None, "neurons", 100)._repr_html_()
    assert "No feature visualization in this atlas." in bare
    grid = layer_view(web_atlas, "tiny-rn", "neurons", units=8)
    assert grid._repr_html_().count('class="card"') == 8 and "504 more units" in grid._repr_html_()


def test_notebook_cards_link_no_server_page_escape_names_and_read_each_image_once(web_atlas, tmp_path, monkeypatch):
    """A LayerView's cards linked to /m/.../u/0, a path no notebook serves; its wrapper was an f-string that
    put names in unescaped; a unit card read and base64-encoded every thumbnail twice."""
    from collections import Counter
    from pathlib import Path

    grid = layer_view(web_atlas, "tiny-rn", "neurons", units=4)._repr_html_()
    assert "href=" not in grid and grid.count('<div class="card"') == 4
    with Atlas(tmp_path / "odd") as atlas:
        atlas.register_layer("m<i>@x", "l<b>", aliases=[], units=2, grid=(1, 1))
    odd = layer_view(tmp_path / "odd", None, "l<b>")._repr_html_()
    assert "<b>" not in odd and "<i>" not in odd and "l&lt;b&gt;" in odd
    view = unit_view(web_atlas, None, "neurons", 0)
    reads, read_bytes = Counter(), Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda path: reads.update([path.name]) or read_bytes(path))
    view._repr_html_()
    assert len(reads) == 4 + 4 and set(reads.values()) == {1}  # 4 renders, 4 top examples


@pytest.mark.parametrize("name, mime", [("a.jpeg", "image/jpeg"), ("a.webp", "image/webp"), ("a.gif", "image/gif"),
                                        ("a.PNG", "image/png")])
def test_notebook_cards_inline_files_with_the_servers_media_type(tmp_path, name, mime):
    from neuronscope.web.links import InlineLinks

    (tmp_path / "featurevis").mkdir()
    (tmp_path / "featurevis" / name).write_bytes(b"image")
    assert InlineLinks([], tmp_path).file(f"featurevis/{name}") == f"data:{mime};base64,aW1hZ2U="


def test_serve_command_binds_localhost_by_default(web_atlas, monkeypatch):
    calls = []
    monkeypatch.setattr("neuronscope.web.serve", lambda atlas, **options: calls.append((atlas, options)))
    result = CliRunner().invoke(cli_app, ["serve", str(web_atlas)])
    assert result.exit_code == 0, result.output
    assert calls[0][1]["host"] == "127.0.0.1" and calls[0][1]["port"] == 8000
    monkeypatch.undo()
    missing = CliRunner().invoke(cli_app, ["serve", str(web_atlas / "nope")])  # fails before binding anything
    assert missing.exit_code == 1
    # ... and before loading a model (it loaded the model first: seconds, then "not an atlas")
    monkeypatch.setattr("neuronscope.commands.microscope.load_cli_model", lambda *args: pytest.fail("loaded"))
    missing = CliRunner().invoke(cli_app, ["serve", str(web_atlas / "nope"), "--model", "mini-clip"])
    assert missing.exit_code == 1 and "is not an atlas" in missing.output


def test_serve_without_the_web_extra_says_how_to_install_it(web_atlas, monkeypatch):
    """neuronscope.web imports fastapi lazily, so the ImportError guard around importing it never fired: serve
    printed a raw ModuleNotFoundError from inside create_app."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr("neuronscope.web.serve", lambda *args, **options: pytest.fail("served without fastapi"))
    for absent, command in (("fastapi", ["serve", str(web_atlas)]),
                            ("jinja2", ["export", str(web_atlas), "--site", str(web_atlas.parent / "site")])):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == absent
                            else find_spec(name, *args))
        result = CliRunner().invoke(cli_app, command)
        assert result.exit_code == 1 and f"({absent} missing): pip install 'neuronscope[web]'" in result.output
    assert not (web_atlas.parent / "site").exists()


def test_search_attributes_new_prompts_when_the_model_is_loaded(web_atlas, tiny_rn, client):
    assert client.get("/api/search", params={"q": "a red star"}).json()["attribution"] is None  # no model: none
    with TestClient(create_app(web_atlas, model=tiny_rn, warm=False)) as with_model:
        answer = with_model.get("/api/search", params={"q": "a red star"}).json()
        html = with_model.get("/search", params={"q": "a red star"}).text
    [layer] = answer["attribution"]
    scores = [entry["score"] for entry in layer["units"]]
    assert layer["layer"] == LAYER and layer["prompt"] == "a red star" and len(scores) == 20
    assert scores == sorted(scores, reverse=True)
    assert "Units the prompt reads from" in html and f'href="{LAYER_URL}/u/{layer["units"][0]["unit"]}"' in html
    with pytest.raises(AtlasError, match="--model loads"):
        create_app(web_atlas, model=type("Other", (), {"key": "mini-clip@bundled"})())
    from dataclasses import replace

    from neuronscope.models.spec import TokenizerSpec

    unreadable = replace(tiny_rn, spec=replace(tiny_rn.spec, tokenizer=TokenizerSpec(hf_name="timm/ViT-B-16-SigLIP")))
    with pytest.raises(NeuronscopeError, match="timm/ViT-B-16-SigLIP"):  # at start, not a 500 on every search
        create_app(web_atlas, model=unreadable, warm=False)


def test_pager_links_keep_the_filter_sort_and_page_size(client):
    html = client.get(LAYER_URL, params={"sort": "max", "per_page": "50", "page": "2"}).text
    assert f'href="{LAYER_URL}?sort=max&amp;per_page=50&amp;page=3"' in html
    assert f'href="{LAYER_URL}?sort=max&amp;per_page=50"' in html  # page 1 has no page parameter


def test_a_layer_lists_defaults_are_left_out_of_links_in_one_place():
    """links._with_query restated two of pages' defaults (and knew nothing of per_page or labelled): the
    defaults live in LayerQuery.params alone, and links carry what they are given."""
    from neuronscope.web.links import Links
    from neuronscope.web.pages import PER_PAGE, LayerQuery

    links = Links([])
    plain = LayerQuery(q="", sort="unit", per_page=PER_PAGE, labelled=False)
    assert links.layer("m", "l", **plain.params) == "/m/m/l/l"
    assert links.unit("m", "l", 3, **LayerQuery(sort="max", labelled=True).params) == "/m/m/l/l/u/3?sort=max&labelled=1"
    assert links.layer("m", "l", page=2, sort="unit", per_page=None) == "/m/m/l/l?sort=unit&page=2"


def test_notebook_views_keep_their_images_after_the_notebook_changes_directory(web_atlas, monkeypatch):
    """A view made from a relative atlas path kept it relative and reads images when displayed: after an
    os.chdir every image was silently missing from the card."""
    monkeypatch.chdir(web_atlas.parent)
    unit, grid = unit_view(web_atlas.name, None, "neurons", 0), layer_view(web_atlas.name, None, "neurons", units=4)
    monkeypatch.chdir(web_atlas.parent.parent)
    assert unit._repr_html_().count("data:image/png;base64,") == 4 + 4
    assert grid._repr_html_().count("data:image/png;base64,") == 4


def test_a_file_the_server_cannot_read_answers_404_not_500(tmp_path, monkeypatch):
    """Files written 0600 by another user raised PermissionError in read_bytes: every render answered 500."""
    from pathlib import Path

    path = build_hub_atlas(tmp_path / "atlas")
    with Atlas(path) as atlas:
        relative = atlas.save_artifact(HUB_MODEL, "visual.layer4", "emotions", "codes", file_bytes=b"png",
                                       suffix=".png")["path"]
    read_bytes = Path.read_bytes

    def denied(self: Path) -> bytes:  # what another user's 0600 file does (root reads it whatever its mode)
        if self.suffix == ".png":
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with TestClient(create_app(path, warm=False), raise_server_exceptions=False) as browser:
        answer = browser.get(f"/files/{relative}")
    assert answer.status_code == 404 and "the server can read" in answer.text


def test_serve_on_an_unreadable_catalogue_is_one_line(tmp_path):
    (tmp_path / "atlas").mkdir()
    (tmp_path / "atlas" / "atlas.sqlite").write_bytes(b"not a database, " * 100)
    result = CliRunner().invoke(cli_app, ["serve", str(tmp_path / "atlas")])
    assert result.exit_code == 1 and "DatabaseError" not in result.output
    message = result.output.strip()
    assert message.startswith("error: ") and "is damaged" in message and ".recover" in message  # what to do
    assert len(message.splitlines()) == 1


def test_search_lists_each_unit_once_ranks_labels_apart_and_counts_every_match(tmp_path):
    """Search gave one hit per matching word (one unit twelve times), scored labels 0 so they sank below every
    word, and cut the list at 200 while the page said "200 matches"."""
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.register_layer(MODEL, LAYER, aliases=["neurons"], units=300, grid=(1, 1))
        atlas.set_label(MODEL, LAYER, 299, "a hotdog stand")
        atlas.write_unit_texts("words", None, MODEL, LAYER, {
            0: [(f"dogs{i}", 10.0 - i) for i in range(8)] + [("dog", 0.1)],
            **{unit: [("dogma", unit / 1000)] for unit in range(1, 250)}})
    with TestClient(create_app(tmp_path / "atlas", warm=False)) as client:
        found = client.get("/api/search", params={"q": "dog"}).json()
        hits = found["hits"]
        assert found["total"] == 251 and len(hits) == 200  # 249 + unit 0 + unit 299, each once
        assert len({hit["unit"] for hit in hits}) == 200
        # exact first, then the label (no score: not ranked against word scores), then words by their score
        assert [hit["unit"] for hit in hits[:4]] == [0, 299, 249, 248]
        assert (hits[1]["match"], hits[1]["score"]) == ("label", None)
        assert [match["text"] for match in hits[0]["matches"]] == ["dog", "dogs0", "dogs1", "dogs2", "dogs3"]
        assert hits[0]["more"] == 4 and (hits[0]["match"], hits[0]["text"], hits[0]["exact"]) == ("word", "dog", True)
        page = client.get("/search", params={"q": "dog"}).text
        assert "251 units match “dog” (the first 200 shown)" in page and "and 4 more" in page
        assert page.count(f'href="{LAYER_URL}/u/0"') == 1


def test_head_a_unit_written_with_zeros_and_weak_etags(client):
    """HEAD answered 405 everywhere (`curl -I`); /u/01 rendered a second URL of unit 1; If-None-Match W/"..."
    (the weak form a compressing proxy sends back) never matched."""
    thumb = f"/files/{client.get(f'/api{LAYER_URL}/u/0').json()['top'][0]['thumb']}"
    for url in ("/", LAYER_URL, f"{LAYER_URL}/u/1", f"{LAYER_URL}/u/1/histogram.svg", "/search?q=star",
                "/api/models", f"/api{LAYER_URL}/u/1", thumb, "/static/app.js"):
        answer = client.head(url)
        assert answer.status_code == 200 and not answer.content, url
    assert client.head("/nothing/here").status_code == 404
    for url, location in ((f"{LAYER_URL}/u/01", f"{LAYER_URL}/u/1"), (f"/api{LAYER_URL}/u/007", f"/api{LAYER_URL}/u/7"),
                          (f"{LAYER_URL}/u/00/histogram.svg", f"{LAYER_URL}/u/0/histogram.svg"),
                          ("/m/tiny-rn@random/l/neurons/u/02", f"{LAYER_URL}/u/2")):
        answer = client.get(url, follow_redirects=False)
        assert answer.status_code == 301 and answer.headers["location"] == location, url
    etag = client.get(thumb).headers["etag"]
    for header in (f"W/{etag}", f'"other", W/{etag}', "*"):
        assert client.get(thumb, headers={"If-None-Match": header}).status_code == 304, header
    assert client.get(thumb, headers={"If-None-Match": 'W/"other"'}).status_code == 200


def test_serve_on_a_port_in_use_is_one_line_and_prints_no_url(web_atlas):
    """serve printed the URL as if serving, then uvicorn's raw "[Errno 98] address already in use" (exit 3)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli_app, ["serve", str(web_atlas), "--port", str(port)])
    assert result.exit_code == 1 and "http://" not in result.output
    assert result.output.strip() == f"error: port {port} is in use: pick another --port"


def test_the_layer_api_lists_artifacts_and_serves_their_data_on_its_own(client):
    """Every page of the layer's JSON, per_page=2 too, re-sent each artifact's data (emotion codes: ~25 kB)."""
    listed = client.get(f"/api{LAYER_URL}", params={"per_page": "2"}).json()["artifacts"]
    assert [(entry["kind"], entry["name"]) for entry in listed] == [("emotions", "codes")]
    assert "data" not in listed[0] and listed[0]["path"].startswith("artifacts/") and listed[0]["run_id"]
    assert listed[0]["api"] == f"/api{LAYER_URL}/artifacts/emotions/codes"
    full = client.get(listed[0]["api"]).json()
    assert full["data"] == {"codes": 3} and (full["model"], full["layer"]) == (MODEL, LAYER)
    assert {key: full[key] for key in listed[0] if key != "api"} == {key: listed[0][key] for key in listed[0]
                                                                      if key != "api"}
    alias = client.get("/api/m/tiny-rn/l/neurons/artifacts/emotions/codes", follow_redirects=False)
    assert alias.status_code == 301 and alias.headers["location"] == listed[0]["api"]
    missing = client.get(f"/api{LAYER_URL}/artifacts/emotions/nope")
    assert missing.status_code == 404 and missing.json()["status"] == 404


def test_a_bare_model_url_keeps_working_after_a_second_weights_joins_the_atlas(tmp_path):
    """/m/mini-clip/... answered 200, then 404 "names several models" once mini-clip@random was scanned into the
    same atlas: every URL handed out before broke. A bare name now answers 301 to its default weights' key."""
    path = tmp_path / "atlas"
    with Atlas(path) as atlas:
        atlas.register_layer("mini-clip@bundled", "visual.layer4", aliases=["neurons"], units=4, grid=(1, 1))
        atlas.set_label("mini-clip@bundled", "visual.layer4", 1, "cat")
    with TestClient(create_app(path, warm=False)) as browser:
        assert browser.get("/m/mini-clip/l/neurons/u/1", follow_redirects=False).status_code == 301
        assert "cat" in browser.get("/m/mini-clip/l/visual.layer4/u/1").text
    with Atlas(path) as atlas:
        atlas.register_layer("mini-clip@random", "visual.layer4", aliases=["neurons"], units=4, grid=(1, 1))
        for weights in ("sha256:aaaaaaaaaaaa", "sha256:bbbbbbbbbbbb"):  # two weights, neither the default
            atlas.register_layer(f"tiny-vit@{weights}", "visual.layer4", aliases=[], units=2, grid=(1, 1))
    with TestClient(create_app(path, warm=False)) as browser:
        for url, location in (("/m/mini-clip/l/visual.layer4/u/1", "/m/mini-clip@bundled/l/visual.layer4/u/1"),
                              ("/m/mini-clip/l/neurons?q=cat", "/m/mini-clip@bundled/l/visual.layer4?q=cat"),
                              ("/api/m/mini-clip/l/neurons/u/1", "/api/m/mini-clip@bundled/l/visual.layer4/u/1")):
            answer = browser.get(url, follow_redirects=False)
            assert answer.status_code == 301 and answer.headers["location"] == location, url
        assert "cat" in browser.get("/m/mini-clip/l/visual.layer4/u/1").text
        assert browser.get("/m/mini-clip@random/l/visual.layer4/u/1").status_code == 200
        for url in ("/m/mini-clip/l/visual.layer9", "/m/tiny-vit/l/visual.layer4"):
            assert browser.get(url).status_code == 404, url
        assert "names several models" in browser.get("/api/m/tiny-vit/l/visual.layer4").json()["detail"]
    with Atlas(path) as atlas, pytest.raises(AtlasError, match="names several models"):
        atlas.resolve_model("mini-clip")  # the command line and Python still ask which weights


def test_a_server_on_an_atlas_it_cannot_write_sees_its_owners_later_writes(tmp_path, monkeypatch):
    """In a folder the server cannot write the atlas is opened immutable, where SQLite detects no change: the
    server showed the catalogue of its start for good (and could read torn pages once the owner checkpointed).
    The reader now watches the files and reopens when they move, whether the owner's commit is still in the
    -wal or checkpointed into the catalogue."""
    import os

    from neuronscope.web.reader import AtlasReader

    folder = tmp_path / "atlas"
    with Atlas(folder) as owner:
        owner.register_layer("mini-clip@bundled", "visual.layer4", aliases=["neurons"], units=4, grid=(1, 1))
        owner.set_label("mini-clip@bundled", "visual.layer4", 1, "cat")
    access = os.access
    # root writes anywhere whatever the mode bits: say what a non-owner would find
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if mode & os.W_OK and str(path) == str(folder)
                        else access(path, mode, **kw))
    reader = AtlasReader(folder)
    try:
        assert reader.atlas.immutable
        label = lambda: reader.read(lambda atlas: atlas.label("mini-clip@bundled", "visual.layer4", 1))  # noqa: E731
        home = lambda: reader.read(lambda atlas: reader.memo(("home",), atlas.models))  # noqa: E731
        assert label() == "cat" and home() == ["mini-clip@bundled"]
        with Atlas(folder) as owner:  # committed, and checkpointed into atlas.sqlite when it closes
            owner.set_label("mini-clip@bundled", "visual.layer4", 1, "dog")
            owner.register_layer("tiny-rn@random", "visual.layer4", aliases=[], units=2, grid=(1, 1))
        assert label() == "dog" and home() == ["mini-clip@bundled", "tiny-rn@random"]  # the memo was cleared
        with Atlas(folder) as owner:  # a commit still in the -wal: the owner (a scan) is still writing
            owner.set_label("mini-clip@bundled", "visual.layer4", 1, "fish")
            assert label() == "fish"
        assert label() == "fish"
    finally:
        reader.close()


def test_unit_page_shows_bottom_examples_every_top_example_image_names_and_what_scores_mean(client, monkeypatch):
    """The bottom examples were stored but shown nowhere, only 24 of 48 top examples were shown, thumbnails were
    no links and the image id was in a tooltip only; word and text scores had no caption."""
    from neuronscope.web import pages

    record = client.get(f"/api{LAYER_URL}/u/2").json()
    html = client.get(f"{LAYER_URL}/u/2").text
    assert "Bottom dataset examples" in html and html.count("<tr><td>") == len(record["bottom"]) == 2
    for example in record["top"] + record["bottom"]:
        name = example["image"].rsplit("#", 1)[0]
        assert f">{name}<" in html  # visible, not only in a title
    for example in record["top"]:
        assert f'<a href="/files/{example["thumb"]}"><img src="/files/{example["thumb"]}"' in html
    assert "the word rastered as an image" in html and "attribution to the unit through the text tower" in html
    monkeypatch.setattr(pages, "TOP_EXAMPLES", 3)
    html = client.get(f"{LAYER_URL}/u/2").text
    assert "1 more top examples</summary>" in html and html.count('src="/files/thumbs/') == 4


def test_plots_sit_side_by_side_and_a_card_says_its_image_is_a_facet_render(web_atlas, tmp_path):
    copy = tmp_path / "atlas"
    shutil.copytree(web_atlas, copy)
    with Atlas(copy) as atlas:
        run_id = atlas.start_run(command="visualize", config={"steps": 4}, config_key="facet-only", model=MODEL,
                                 weights_sha256=None, layers=[{"layer": LAYER, "aliases": ["neurons"]}],
                                 dataset=None, precision="fp32")
        atlas.write_featurevis(run_id, MODEL, LAYER, [{"unit": 7, "kind": "facet:drawing", "index": 0,
                                                       "png": png(7), "objective": 0.5, "description": "facet"}])
        atlas.finish_run(run_id)
    with TestClient(create_app(copy, warm=False)) as browser:
        grid = browser.get(LAYER_URL).text
        card = grid[grid.index('data-unit="7"'):grid.index('data-unit="8"')]
        assert "facet: drawing render" in card
        assert "render</span>" not in grid[grid.index('data-unit="2"'):grid.index('data-unit="3"')]  # a plain one
        unit = browser.get(f"{LAYER_URL}/u/2").text
        figures = unit[unit.index('<div class="figures">'):]
        assert figures.index("histogram.svg") < figures.index("conditional.svg") < figures.index("</div>")
        assert "each category (from the source's index.json, else the image's folder" in figures  # not "folder" only


def test_labelled_units_can_be_listed_and_a_unit_number_goes_to_that_unit(client):
    """The home page's label count was plain text and no filter listed the labelled units; a unit's number typed
    in the layer filter or the search found nothing."""
    assert f'href="{LAYER_URL}?labelled=1"' in client.get("/").text
    labelled = client.get(f"/api{LAYER_URL}", params={"labelled": "1"}).json()
    assert [card["unit"] for card in labelled["cards"]] == [0, 3] and labelled["labelled"] is True
    page = client.get(LAYER_URL, params={"labelled": "1"}).text
    assert 'name="labelled" value="1" checked' in page and f'href="{LAYER_URL}/u/3?labelled=1"' in page
    assert client.get(LAYER_URL, params={"labelled": "yes"}).status_code == 400
    jump = client.get(LAYER_URL, params={"q": "473", "sort": "max"}, follow_redirects=False)
    assert jump.status_code == 302 and jump.headers["location"] == f"{LAYER_URL}/u/473?sort=max"
    assert [card["unit"] for card in client.get(f"/api{LAYER_URL}", params={"q": "473"}).json()["cards"]] == [473]
    assert client.get(f"/api{LAYER_URL}", params={"q": "512"}).json()["total"] == 0  # past the last unit
    found = client.get("/search", params={"q": "473"}, follow_redirects=False)
    assert found.status_code == 302 and found.headers["location"] == f"{LAYER_URL}/u/473"
    hit = client.get("/api/search", params={"q": "#473"}).json()["hits"][0]
    assert (hit["unit"], hit["match"], hit["layer"]) == (473, "unit", LAYER)


def test_a_unit_page_links_back_to_the_grid_page_and_list_it_came_from(client):
    """The crumb went to the grid's first page and dropped the filter and sort; the neighbour links walk the list
    the visitor came from (a card's link carries it), index order otherwise."""
    def crumbs(url: str, **params: str) -> str:
        html = client.get(url, params=params).text
        return html[html.index('<nav class="crumbs">'):html.index("</nav>")]

    plain = crumbs(f"{LAYER_URL}/u/300")
    assert f'href="{LAYER_URL}?page=3#u300"' in plain and f'href="{LAYER_URL}/u/299" rel="prev"' in plain
    assert 'id="u300"' in client.get(LAYER_URL, params={"page": "3"}).text  # the anchor it lands on
    assert f'href="{LAYER_URL}?per_page=50&amp;page=7#u300"' in crumbs(f"{LAYER_URL}/u/300", per_page="50")
    html = client.get(f"{LAYER_URL}/u/3", params={"labelled": "1"}).text
    assert f'<link rel="prev" href="{LAYER_URL}/u/0?labelled=1">' in html and 'rel="next"' not in html
    assert f'href="{LAYER_URL}?labelled=1#u3"' in html
    listed = client.get(f"/api{LAYER_URL}", params={"q": "star", "sort": "max"}).json()["cards"]
    ranked = [card["unit"] for card in listed]
    first = crumbs(f"{LAYER_URL}/u/{ranked[0]}", q="star", sort="max")
    assert f'href="{LAYER_URL}/u/{ranked[1]}?q=star&amp;sort=max" rel="next"' in first and 'rel="prev"' not in first
    outside = crumbs(f"{LAYER_URL}/u/100", q="star")  # not in that list: the plain grid's neighbours and page
    assert f'href="{LAYER_URL}#u100"' in outside and f'href="{LAYER_URL}/u/101" rel="next"' in outside


def test_a_top_level_examples_caption_reads_top_exactly_where_the_plot_counts_it_there():
    """The conditional plot counted an image at the top of its source under "(top)", while its caption showed
    no category and the table "–": both now read mining.buckets.category_of."""
    from neuronscope.atlas.browse import image_categories
    from neuronscope.mining.buckets import uniform_buckets

    class Stored:  # the atlas's index.json categories: none here
        def stored_categories(self, images):
            return {}

    top, folder = "a.png#000000000001", "cats/b.png#000000000002"
    record = {"top": [{"image": top}], "bottom": [{"image": folder}],
              "histogram": {"samples": [[top], [folder]]}}
    buckets = uniform_buckets([0.0, 1.0, 2.0], [1, 1], record["histogram"]["samples"], 0, std=1.0, reservoir=4,
                              n_buckets=2)
    assert [bucket["categories"] for bucket in buckets] == [{"(top)": 1.0}, {"cats": 1.0}]
    assert image_categories(Stored(), record) == {top: "(top)", folder: "cats"}
    flat = {**record, "top": [{"image": top}], "bottom": [], "histogram": {"samples": [[top]]}}
    assert image_categories(Stored(), flat) == {}  # no categories in the plot: none in the captions


def test_example_captions_show_each_images_category(web_atlas, tmp_path):
    """The demo's examples sit in one flat tar: nothing on the page said which concept an example was. A caption
    shows the category a scan stored (index.json), else the image's folder: the one the conditional plot counts."""
    import sqlite3 as sqlite

    copy = tmp_path / "atlas"
    shutil.copytree(web_atlas, copy)
    with Atlas(copy, create=False, read_only=True) as atlas:
        record = atlas.unit(MODEL, LAYER, 2)
    first, other = record["top"][0]["image"], record["top"][1]["image"]
    with closing(sqlite.connect(copy / "atlas.sqlite")) as db, db:
        db.execute("UPDATE images SET category = 'star' WHERE id = ?", (first,))
    with TestClient(create_app(copy, warm=False)) as browser:
        html = browser.get(f"{LAYER_URL}/u/2").text
    folder = other.split("#")[0].split("::")[-1].rsplit("/", 1)[0]
    assert f'<span class="category">star</span><span class="image-name" title="{first}">' in html
    assert f'<span class="category">{folder}</span><span class="image-name" title="{other}">' in html


@pytest.fixture(scope="module")
def mm_client(tmp_path_factory):
    """A server over :func:`~tests.web_atlas.build_multimodal_atlas`: one layer measured, one not."""
    with TestClient(create_app(build_multimodal_atlas(tmp_path_factory.mktemp("mm") / "atlas"), warm=False)) as test:
        yield test


MM_URL, MM_BARE_URL = f"/m/mm-model/l/{MM_LAYER}", f"/m/mm-model/l/{MM_BARE}"


def _multimodality_block(html: str) -> str | None:
    found = re.search(r'<section class="multimodality">.*?</section>', html, re.S)
    return found and found.group(0)


def test_a_unit_page_the_api_and_the_notebook_card_show_a_stored_multimodality(mm_client, tmp_path_factory):
    """The measurement reached show --json only: the unit page and its notebook card say the concept, score,
    both AUROCs and the verdict (and that the words' top concept differs, where it does)."""
    record = mm_client.get(f"/api{MM_URL}/u/1").json()["multimodality"]
    assert record == {"concept": "card", "score": 0.93, "auroc_images": 0.99, "auroc_words": 0.93,
                      "word_concept": "card", "threshold": 0.9, "multimodal": True}
    block = _multimodality_block(mm_client.get(f"{MM_URL}/u/1").text)
    assert "<strong>multimodal</strong> at 0.9: concept “card”, score 0.930 (AUROC among images 0.990, " \
           "among words 0.930)." in block and "differs" not in block
    differs = _multimodality_block(mm_client.get(f"{MM_URL}/u/2").text)
    assert "<strong>not multimodal</strong> at 0.9: concept “hat”, score 0.950" in differs
    assert "the words' top concept differs: “star”" in differs
    assert _multimodality_block(mm_client.get(f"{MM_BARE_URL}/u/1").text) is None  # not measured: no block
    assert mm_client.get(f"/api{MM_BARE_URL}/u/1").json()["multimodality"] is None
    atlas = mm_client.app.state.reader.root
    card = unit_view(atlas, None, MM_LAYER, 2)._repr_html_()
    verdict = re.compile(r'<p class="verdict">.*?</p>', re.S)
    assert verdict.findall(card) == verdict.findall(differs) != []
    assert _multimodality_block(unit_view(atlas, None, MM_BARE, 2)._repr_html_()) is None


def test_a_layer_grid_sorts_by_multimodality_and_lists_the_multimodal_units(mm_client):
    def listed(**params) -> list[int]:
        return [card["unit"] for card in mm_client.get(f"/api{MM_URL}", params=params).json()["cards"]]

    assert listed(sort="multimodality") == [2, 1, 0, 3]  # scores 0.95, 0.93, 0.92, 0.60
    assert listed(multimodal="1") == [0, 1]  # 2 reaches 0.9, but its words answer most to another concept
    assert listed(multimodal="1", sort="multimodality") == [1, 0]
    assert listed(multimodal="1", q="star") == [0]  # with the filter: unit 0 is labelled "Star"
    bare = mm_client.get(f"/api{MM_BARE_URL}", params={"sort": "multimodality", "multimodal": "1"}).json()
    assert bare["cards"] == [] and bare["multimodality"] is None
    assert [card["unit"] for card in mm_client.get(f"/api{MM_BARE_URL}", params={"sort": "multimodality"})
            .json()["cards"]] == [0, 1, 2, 3]  # unmeasured units keep index order
    assert mm_client.get(MM_URL, params={"multimodal": "yes"}).status_code == 400
    page = mm_client.get(MM_URL, params={"sort": "multimodality", "multimodal": "1"}).text
    assert '<option value="multimodality" selected>' in page and 'name="multimodal" value="1" checked' in page
    assert "2 units multimodal" in page and f'href="{MM_URL}/u/1?sort=multimodality&amp;multimodal=1"' in page
    plain = mm_client.get(MM_BARE_URL).text
    assert 'value="multimodality"' not in plain and 'name="multimodal"' not in plain  # nothing to sort by
    unit = mm_client.get(f"{MM_URL}/u/1", params={"sort": "multimodality", "multimodal": "1"}).text
    assert f'<link rel="next" href="{MM_URL}/u/0?sort=multimodality&amp;multimodal=1">' in unit
    assert "(in the list of units multimodal by multimodality score)" in unit


def test_a_multimodal_units_card_shows_its_concept_unless_its_label_says_it(mm_client):
    cards = dict(re.findall(r'data-unit="(\d)">(.*?)</a>', mm_client.get(MM_URL).text, re.S))
    assert "multimodal “card” 0.930" in cards["1"]
    assert ">multimodal 0.920<" in cards["0"]  # labelled "Star" already: the concept is not repeated
    assert 'class="multimodal"' not in cards["2"] + cards["3"]
    ranked = dict(re.findall(r'data-unit="(\d)">(.*?)</a>', mm_client.get(MM_URL, params={"sort": "multimodality"})
                             .text, re.S))
    assert "multimodality 0.950" in ranked["2"]  # sorted by it: every card says its score


def test_the_home_page_and_layer_page_say_how_many_units_are_multimodal(mm_client):
    layers = {layer["layer"]: layer for layer in mm_client.get("/api/models").json()["models"][0]["layers"]}
    assert layers[MM_LAYER]["multimodality"] == {"units": 2, "concepts": 2, "threshold": 0.9, "measured_units": 4,
                                              "measured_concepts": 3, "chance": [1, 0, 2]}
    assert layers[MM_BARE]["multimodality"] is None
    home = mm_client.get("/").text
    assert f'href="{MM_URL}?sort=multimodality&amp;multimodal=1" title="list the multimodal units, highest score ' \
           f'first">2 units</a>, 2 concepts' in home
    layer = mm_client.get(MM_URL).text
    assert (">2 of 4 units multimodal</a> at 0.9, for 2 of 3 concepts; with the images' labels shuffled, 1, 0, 2 "
            "units pass (what chance gives).") in layer
    assert "multimodal</a> at" not in mm_client.get(MM_BARE_URL).text


@pytest.fixture(scope="module")
def family_client(tmp_path_factory):
    """A server over :func:`~tests.web_atlas.build_family_atlas`: families stored, computed with none, never."""
    with TestClient(create_app(build_family_atlas(tmp_path_factory.mktemp("fam") / "atlas"), warm=False)) as test:
        yield test


FAM_URL, FAM_EMPTY_URL, FAM_BARE_URL = (f"/m/fam-model/l/{layer}" for layer in (FAM_LAYER, FAM_EMPTY, FAM_BARE))


def _family_block(html: str) -> str | None:
    found = re.search(r'<section class="family">.*?</section>', html, re.S)
    return found and found.group(0)


def test_a_unit_page_and_its_notebook_card_show_the_units_family(family_client):
    """The family reached show --json only: the unit page and its notebook card say it, its score and threshold,
    a lexical unit's affix (from the families artifact), its source and probe."""
    assert family_client.get(f"/api{FAM_URL}/u/0").json()["family"] == {"family": "colour", "score": 0.91,
                                                                         "source": "auto:words"}
    lexical_card = family_client.get(f"/api{FAM_URL}").json()["cards"][4]["family"]
    assert family_client.get(f"/api{FAM_URL}/u/4").json()["family"] == lexical_card == {
        "family": "lexical", "score": None, "source": "auto:words", "affix": "un-"}  # one unit object everywhere
    colour = _family_block(family_client.get(f"{FAM_URL}/u/0").text)
    assert "<strong>colour</strong>, score 0.910 (threshold 0.85; random word lists reach 0.6983) · source " \
           "auto:words, from the english-10k word probe." in colour and "length-matched AUROC" in colour
    lexical = _family_block(family_client.get(f"{FAM_URL}/u/4").text)
    assert "<strong>lexical</strong>: its top words share “un-” · source auto:words" in lexical
    person = _family_block(family_client.get(f"{FAM_URL}/u/5").text)
    assert "<strong>person</strong> · source user." in person and "AUROC" not in person  # a user's: no note
    for url in (f"{FAM_EMPTY_URL}/u/1", f"{FAM_BARE_URL}/u/1"):
        assert _family_block(family_client.get(url).text) is None  # no family: no block
    atlas = family_client.app.state.reader.root
    card = unit_view(atlas, None, FAM_LAYER, 4)._repr_html_()
    assert _family_block(card) == lexical
    assert _family_block(unit_view(atlas, None, FAM_BARE, 4)._repr_html_()) is None


def test_a_layer_grid_filters_by_family_and_its_links_keep_the_filter(family_client):
    def listed(url: str = FAM_URL, **params) -> list[int]:
        return [card["unit"] for card in family_client.get(f"/api{url}", params=params).json()["cards"]]

    assert listed(family="colour") == [0, 2] and listed(family="lexical") == [1, 4] and listed(family="person") == [5]
    assert listed(family="colour", q="red") == [2]  # with the word / label filter: unit 2 is labelled "Red"
    assert listed(family="") == list(range(6))
    for url, params in ((FAM_URL, {"family": "colr"}), (f"/api{FAM_URL}", {"family": "colr"}),
                        (FAM_EMPTY_URL, {"family": "colour"}), (f"{FAM_URL}/u/0", {"family": "colr"})):
        assert family_client.get(url, params=params).status_code == 400, url
    assert "one of this layer's families (colour, lexical, person, region), not 'colr'" in \
        family_client.get(f"/api{FAM_URL}", params={"family": "colr"}).json()["detail"]
    page = family_client.get(FAM_URL, params={"family": "lexical"}).text
    assert re.findall(r'<option value="(\w*)"( selected)?>', re.search(r'<select name="family">.*?</select>', page,
                                                                       re.S).group(0)) \
        == [("", ""), ("colour", ""), ("lexical", " selected"), ("person", ""), ("region", "")]
    assert "2 units in family “lexical”" in page and f'href="{FAM_URL}/u/4?family=lexical"' in page
    for url in (FAM_EMPTY_URL, FAM_BARE_URL):
        assert 'name="family"' not in family_client.get(url).text  # nothing to filter by
    unit = family_client.get(f"{FAM_URL}/u/1", params={"family": "lexical"}).text
    assert f'<link rel="next" href="{FAM_URL}/u/4?family=lexical">' in unit and 'rel="prev"' not in unit
    assert "(in the list of units in family “lexical”)" in unit
    assert f'href="{FAM_URL}?family=lexical#u1"' in unit  # back to the filtered grid


def test_a_grid_card_tags_the_units_family(family_client):
    cards = dict(re.findall(r'data-unit="(\d)">(.*?)</a>', family_client.get(FAM_URL).text, re.S))
    tag = re.compile(r'<span class="family"[^>]*>(.*?)</span>')
    assert {unit: tag.findall(card) for unit, card in cards.items()} == {
        "0": ["colour 0.910"], "1": ["lexical -ing"], "2": ["colour 0.880"], "3": ["region 0.950"],
        "4": ["lexical un-"], "5": ["person"]}
    assert family_client.get(f"/api{FAM_URL}").json()["cards"][1]["family"] == {
        "family": "lexical", "score": None, "source": "auto:words", "affix": "-ing"}
    assert 'class="family"' not in family_client.get(FAM_BARE_URL).text
    layer_card = layer_view(family_client.app.state.reader.root, None, FAM_LAYER)._repr_html_()
    assert tag.findall(layer_card) == ["colour 0.910", "lexical -ing", "colour 0.880", "region 0.950", "lexical un-",
                                       "person"]


def test_the_home_page_and_layer_page_give_the_families_sizes(family_client):
    layers = {layer["layer"]: layer for layer in family_client.get("/api/models").json()["models"][0]["layers"]}
    assert list(layers[FAM_LAYER]["families"].items()) == [("colour", 2), ("lexical", 2), ("person", 1),
                                                            ("region", 1)]  # largest first, ties by name
    assert layers[FAM_EMPTY]["families"] == {} and layers[FAM_BARE]["families"] is None
    assert family_client.get(f"/api{FAM_URL}").json()["families"] == layers[FAM_LAYER]["families"]
    home = family_client.get("/").text
    cells = re.findall(r'<td class="families">(.*?)</td>', home)
    assert f'<a href="{FAM_URL}?family=colour" title="list the colour units">colour 2</a>, ' in cells[2]
    assert cells[1] == "none" and "not computed: neuronscope families ATLAS --layer visual.layer2" in cells[0]
    summary = re.compile(r'<p class="meta families">(.*?)</p>')
    line = summary.findall(family_client.get(FAM_URL).text)[0]
    assert re.sub(r"<[^>]+>", "", line) == "Families: colour 2, lexical 2, person 1, region 1."
    assert f'href="{FAM_URL}?family=region"' in line
    assert summary.findall(family_client.get(FAM_EMPTY_URL).text) == ["Families: no unit has one."]
    assert summary.findall(family_client.get(FAM_BARE_URL).text) == []


def test_search_lists_the_units_a_probed_word_stands_out_for(tmp_path):
    """The paper found its Spider-Man unit from the rastered word "spider": a search for a word of a stored probe
    lists the units it stands out for (its z-score among each unit's words), not only units whose top words
    hold it. Unit 0 answers every word strongly, "spider" most; unit 1 answers "spider" far above its other
    words: unit 1 comes first."""
    import io

    import numpy as np

    words = ["spider", "web", "cat", "dog", "Paris", "tree"]
    scores = np.array([[10.5, 3.0, 0.0], [10.4, 0.1, 0.0], [10.0, 0.0, 0.0], [10.1, 0.2, 0.0], [10.2, 0.1, 0.0],
                       [10.3, 0.0, 0.0]], dtype=np.float16)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, scores=scores, words=np.array(words))
    with Atlas(tmp_path / "atlas") as atlas:
        atlas.register_layer(MODEL, LAYER, aliases=["neurons"], units=3, grid=(1, 1))
        atlas.save_artifact(MODEL, LAYER, "words", "mine", file_bytes=buffer.getvalue(), suffix=".npz", data={})
    with TestClient(create_app(tmp_path / "atlas", warm=False)) as client:
        (probe,) = client.get("/api/search", params={"q": "SPIDER"}).json()["word_units"]  # else in lower case
        assert (probe["layer"], probe["vocabulary"], probe["word"]) == (LAYER, "mine", "spider")
        assert [(u["unit"], u["rank"]) for u in probe["units"]] == [(1, 1), (0, 1), (2, 1)]
        assert probe["units"][0]["z"] > probe["units"][1]["z"] > 0.0 == probe["units"][2]["z"]
        assert client.get("/api/search", params={"q": "Paris"}).json()["word_units"][0]["word"] == "Paris"
        assert client.get("/api/search", params={"q": "zebra"}).json()["word_units"] == []
        page = client.get("/search", params={"q": "spider"}).text
        assert "Units the rastered word stands out for" in page and f'href="{LAYER_URL}/u/1"' in page
