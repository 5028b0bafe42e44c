"""The static export: the same pages as plain files, relative links that all resolve, atlas internals left out."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from typer.testing import CliRunner

from neuronscope.atlas import AtlasError
from neuronscope.cli import app as cli_app
from neuronscope.web import export_site
from tests.web_atlas import LAYER, build_hub_atlas, web_atlas  # noqa: F401 - web_atlas is a fixture


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.links.append(value)


def page_links(page: Path) -> list[str]:
    return page_links_of(page.read_text(encoding="utf-8"))


def page_links_of(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.links


@pytest.fixture(scope="module")
def site(web_atlas, tmp_path_factory) -> Path:
    result = CliRunner().invoke(cli_app, ["export", str(web_atlas), "--site",
                                          str(tmp_path_factory.mktemp("export") / "site"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["units"] == 512 and summary["pages"] == 1 + 5 + 512 + 1  # home, 5 layer pages, units, search
    return Path(summary["site"])


def checked_links(site: Path) -> int:
    """Asserts that every link of every page is relative and names a file of the site; returns how many."""
    checked = 0
    for page in sorted(site.rglob("*.html")):
        for link in page_links(page):
            parts = urlsplit(link)
            assert not parts.scheme and not parts.netloc and not link.startswith("/"), f"{page}: {link}"
            if not parts.path:
                continue  # a fragment on the same page
            target = (page.parent / unquote(parts.path)).resolve()
            assert target.is_relative_to(site.resolve()) and target.is_file(), f"{page}: {link}"
            checked += 1
    return checked


def test_every_link_of_every_page_points_to_a_file_of_the_export(site):
    assert len(sorted(site.rglob("*.html"))) == 519
    assert checked_links(site) > 5000


def test_a_model_key_with_a_slash_exports_one_folder_level_its_links_reach(tmp_path):
    # hf-hub:org/repo@hub: the folder was m/hf-hub:org/repo (two levels) while links counted one.
    export_site(build_hub_atlas(tmp_path / "atlas"), tmp_path / "site")
    layer = tmp_path / "site" / "m" / "hf-hub:org~repo" / "l" / "visual.layer4"
    assert (layer / "index.html").is_file() and (layer / "u" / "1" / "index.html").is_file()
    assert checked_links(tmp_path / "site") > 10


def test_export_holds_the_pages_and_images_but_no_atlas_internals(site):
    layer = site / "m" / "tiny-rn" / "l" / LAYER
    unit = (layer / "u" / "2" / "index.html").read_text()
    assert "facet: text" in unit and "diagram" in unit and "histogram.svg" in unit
    assert (layer / "u" / "2" / "histogram.svg").read_bytes().startswith(b"<svg")
    assert "No text-side texts in this atlas." in (layer / "u" / "100" / "index.html").read_text()
    assert "Filtering and sorting need" in (layer / "index.html").read_text()
    assert (layer / "page-5.html").is_file() and not (layer / "page-6.html").exists()
    names = {path.name for path in site.rglob("*") if path.is_file()}
    assert not {name for name in names if name.endswith((".sqlite", ".npz", ".sqlite-wal"))}
    assert len(list((site / "files" / "featurevis").rglob("*.png"))) == 16  # 4 units x 4 renders
    assert list((site / "files" / "artifacts").rglob("*.png"))


def test_search_index_has_words_and_labels_and_says_what_it_searches(site):
    script = (site / "static" / "search-index.js").read_text()
    index = json.loads(re.match(r"window\.NEURONSCOPE_INDEX = (.*);\s*$", script, re.S).group(1))
    by_unit = {entry["unit"]: entry for entry in index["units"]}
    assert set(by_unit) == {0, 1, 2, 3}
    assert by_unit[0]["label"] == "star (drawn or written)" and by_unit[0]["words"][0] == "star"
    # Each word's score as its dense rank over the atlas's word scores (3.0 2.5 2.2 2.0 1.9 1.5 1.1 1.0 0.4): the
    # browser ranks word matches by it as the server ranks them by score.
    assert [by_unit[unit]["ranks"] for unit in range(4)] == [[0, 1, 7], [3, 5], [2, 6], [4, 8]]
    assert (site / by_unit[0]["href"]).resolve() == (site / "m/tiny-rn/l" / LAYER / "u/0/index.html").resolve()
    assert "searches the units' top words and labels only" in (site / "search.html").read_text()


def test_re_export_replaces_an_export_but_never_a_foreign_folder(web_atlas, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(AtlasError, match="not empty"):
        export_site(web_atlas, foreign, plots=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    site = tmp_path / "site"
    export_site(web_atlas, site, plots=False)
    (site / "stale.html").write_text("from before")
    summary = export_site(web_atlas, site, plots=False)
    assert not (site / "stale.html").exists() and summary.pages == 519
    assert "Plots were left out of this export." in (site / "m/tiny-rn/l" / LAYER / "u/0/index.html").read_text()


def test_a_failed_re_export_keeps_the_previous_site_and_a_file_is_refused(web_atlas, tmp_path, monkeypatch):
    """The previous export was deleted before the new one was written, so a failure left nothing; a file
    given as --site raised a raw NotADirectoryError."""
    site = tmp_path / "site"
    export_site(web_atlas, site, plots=False)
    before = sorted(path.relative_to(site) for path in site.rglob("*"))

    def broken(store, site):
        raise RuntimeError("disk full")

    monkeypatch.setattr("neuronscope.web.export._export_search", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_site(web_atlas, site, plots=False)
    assert sorted(path.relative_to(site) for path in site.rglob("*")) == before
    assert [path.name for path in tmp_path.iterdir()] == ["site"]  # no partial folder left beside it
    afile = tmp_path / "afile"
    afile.write_text("mine")
    result = CliRunner().invoke(cli_app, ["export", str(web_atlas), "--site", str(afile)])
    assert result.exit_code == 1 and "is a file: pass a folder" in result.output
    assert afile.read_text() == "mine"


def test_export_through_a_symlink_replaces_the_real_folder(web_atlas, tmp_path):
    """A --site that is a symlink to a folder: the folder it points to gets the site, the link stays."""
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    link.symlink_to(real)
    export_site(web_atlas, link, plots=False)
    assert link.is_symlink() and (real / "index.html").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link", "real"]  # nothing staged left beside


def test_a_site_whose_parent_is_not_writable_is_refused_in_one_line(web_atlas, tmp_path, monkeypatch):
    """The export is staged in a sibling folder: a parent it cannot write in (a web root) is one line."""
    real_mkdir = Path.mkdir

    def read_only_parent(path, *args, **kwargs):
        if path.name.startswith(".site."):
            raise PermissionError(13, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only_parent)
    result = CliRunner().invoke(cli_app, ["export", str(web_atlas), "--site", str(tmp_path / "site")])
    assert result.exit_code == 1 and "give a site folder whose parent you can write to" in result.output
    assert "\n" not in result.output.strip() and "Permission denied" in result.output


def test_a_unit_page_links_to_the_grid_page_that_shows_it_and_to_its_neighbours_in_its_head(site):
    layer = site / "m" / "tiny-rn" / "l" / LAYER
    unit = (layer / "u" / "300" / "index.html").read_text()
    assert 'href="../../page-3.html#u300"' in unit
    assert '<link rel="prev" href="../299/index.html">' in unit and '<link rel="next" href="../301/index.html">' in unit
    grid = (layer / "page-3.html").read_text()
    assert 'href="./u/300/index.html" id="u300"' in grid  # the anchor it lands on; a static card carries no query


def test_every_layer_result_links_its_json_served_and_exported(web_atlas, tmp_path):
    """"Layer results" entries without an image (a word probe's summary) showed a caption with nothing to open
    (its JSON was at /api/.../artifacts/words/NAME, unlinked). Each entry now links its JSON: the /api URL when
    served, a JSON file the export writes beside the layer's pages, holding what /api answers."""
    import shutil

    from fastapi.testclient import TestClient

    from neuronscope.atlas import Atlas
    from neuronscope.web import create_app
    from tests.web_atlas import MODEL

    atlas_dir = tmp_path / "atlas"
    shutil.copytree(web_atlas, atlas_dir)
    with Atlas(atlas_dir) as atlas:
        atlas.save_artifact(MODEL, LAYER, "words", "words/300", data={"vocabulary": "words300", "words": 300})
    site = tmp_path / "site"
    export_site(atlas_dir, site)
    layer_page = site / "m" / "tiny-rn" / "l" / LAYER / "index.html"
    exported = [link for link in page_links(layer_page) if link.endswith(".json")]
    with TestClient(create_app(atlas_dir)) as client:
        served = [link for link in page_links_of(client.get(f"/m/tiny-rn/l/{LAYER}").text)
                  if link.startswith("/api/")]
        assert len(served) == len(exported) == 2  # emotions · codes (an image too), words · words/300
        for api, file in zip(served, exported):
            target = layer_page.parent / unquote(file)
            assert json.loads(target.read_text()) == client.get(api).json()
    assert json.loads(target.read_text())["data"] == {"vocabulary": "words300", "words": 300}


def test_an_exported_conditional_plot_is_the_servers_with_the_stored_categories(web_atlas, tmp_path):
    """The export restated Atlas.conditional_buckets beside the server's call; both now read the same method,
    categories from the scan's index.json included."""
    import shutil
    import sqlite3
    from contextlib import closing

    from fastapi.testclient import TestClient

    from neuronscope.atlas import Atlas
    from neuronscope.web import create_app
    from tests.web_atlas import MODEL

    atlas_dir = tmp_path / "atlas"
    shutil.copytree(web_atlas, atlas_dir)
    with Atlas(atlas_dir, create=False, read_only=True) as atlas:
        sample = next(image for images in atlas.unit(MODEL, LAYER, 2)["histogram"]["samples"] for image in images)
    with closing(sqlite3.connect(atlas_dir / "atlas.sqlite")) as db, db:
        db.execute("UPDATE images SET category = 'star' WHERE id = ?", (sample,))
    site = tmp_path / "site"
    export_site(atlas_dir, site)
    exported = (site / "m" / "tiny-rn" / "l" / LAYER / "u" / "2" / "conditional.svg").read_text()
    with TestClient(create_app(atlas_dir, warm=False)) as client:
        served = client.get(f"/m/tiny-rn/l/{LAYER}/u/2/conditional.svg")
    assert served.status_code == 200 and exported == served.text and "star" in exported


def test_an_export_shows_the_servers_multimodality_and_lists_the_multimodal_units_by_score(tmp_path):
    """The export cannot filter or sort: its layer page lists the multimodal units, highest score first (the
    server's ?multimodal=1&sort=multimodality), and its unit pages and cards show what the server's show."""
    import re

    from fastapi.testclient import TestClient

    from neuronscope.web import create_app
    from tests.web_atlas import MM_BARE, MM_LAYER, build_multimodal_atlas

    atlas_dir = build_multimodal_atlas(tmp_path / "atlas")
    site = tmp_path / "site"
    export_site(atlas_dir, site)
    layer = site / "m" / "mm-model" / "l" / MM_LAYER
    page = (layer / "index.html").read_text()
    assert ("Multimodality: 2 of 4 units multimodal at 0.9, for 2 of 3 concepts; with the images' labels shuffled, "
            "1, 0, 2 units pass (what chance gives).") in page  # no link: no filter here
    listed = re.search(r'<details class="multimodal-list">.*?</details>', page, re.S).group(0)
    assert re.findall(r'href="\./u/(\d)/index\.html">unit \d</a> <span class="match">(\w+)', listed) \
        == [("1", "card"), ("0", "star")]
    assert "2 units, 2 concepts" in (site / "index.html").read_text()
    assert "multimodal-list" not in (site / "m" / "mm-model" / "l" / MM_BARE / "index.html").read_text()
    section = re.compile(r'<section class="multimodality">.*?</section>|<span class="multimodal".*?</span>', re.S)
    with TestClient(create_app(atlas_dir, warm=False)) as client:
        served = client.get(f"/api/m/mm-model/l/{MM_LAYER}", params={"sort": "multimodality", "multimodal": "1"})
        assert [card["unit"] for card in served.json()["cards"]] == [1, 0]
        assert section.findall(page) == section.findall(client.get(f"/m/mm-model/l/{MM_LAYER}").text) != []
        for unit in range(4):
            exported = (layer / "u" / str(unit) / "index.html").read_text()
            assert section.findall(exported) == section.findall(client.get(f"/m/mm-model/l/{MM_LAYER}/u/{unit}").text)
    assert checked_links(site) > 10


def test_an_export_shows_the_servers_families_and_lists_each_familys_units(tmp_path):
    """The export cannot filter: its layer page lists each family's units (the server's ?family=NAME, in unit
    order, with the score or affix its cards show), and its unit pages and cards show the server's families."""
    from fastapi.testclient import TestClient

    from neuronscope.web import create_app
    from tests.web_atlas import FAM_EMPTY, FAM_LAYER, build_family_atlas

    atlas_dir = build_family_atlas(tmp_path / "atlas")
    site = tmp_path / "site"
    export_site(atlas_dir, site)
    layer = site / "m" / "fam-model" / "l" / FAM_LAYER
    page = (layer / "index.html").read_text()
    assert '<p class="meta families">Families: colour 2, lexical 2, person 1, region 1.</p>' in page  # no links
    lists = dict(re.findall(r'<details class="family-list"><summary>The \d+ (\w+) units?</summary>(.*?)</details>',
                            page, re.S))
    listed = {name: re.findall(r'href="\./u/(\d)/index\.html">unit \d</a>(?: <span class="\w+">([^<]+)</span>)?</li>',
                               body) for name, body in lists.items()}
    assert listed == {"colour": [("0", "0.910"), ("2", "0.880")], "lexical": [("1", "-ing"), ("4", "un-")],
                      "person": [("5", "")], "region": [("3", "0.950")]}  # a user's family: no score, no affix
    home = (site / "index.html").read_text()
    assert re.findall(r'<td class="families">(.*?)</td>', home)[1:] == ["none",
                                                                      "colour 2, lexical 2, person 1, region 1"]
    empty = (site / "m" / "fam-model" / "l" / FAM_EMPTY / "index.html").read_text()
    assert "Families: no unit has one." in empty and "family-list" not in empty
    tags = re.compile(r'<section class="family">.*?</section>|<span class="family".*?</span>', re.S)
    with TestClient(create_app(atlas_dir, warm=False)) as client:
        for name, units in listed.items():
            served = client.get(f"/api/m/fam-model/l/{FAM_LAYER}", params={"family": name}).json()["cards"]
            assert [str(card["unit"]) for card in served] == [unit for unit, _ in units]
        assert tags.findall(page) == tags.findall(client.get(f"/m/fam-model/l/{FAM_LAYER}").text) != []
        for unit in range(6):
            exported = (layer / "u" / str(unit) / "index.html").read_text()
            assert tags.findall(exported) == tags.findall(client.get(f"/m/fam-model/l/{FAM_LAYER}/u/{unit}").text)
    assert checked_links(site) > 10
