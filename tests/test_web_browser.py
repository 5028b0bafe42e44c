"""The microscope in a real browser: Debian's Chromium, headless, driven by Selenium.

Skips, saying why, when Selenium, ``chromium`` or ``chromium-driver`` is
missing (``make test`` installs them with apt-get where it can). No browser
is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from neuronscope.web import create_app, export_site
from tests.web_atlas import LAYER, running_server, web_atlas  # noqa: F401 - web_atlas is a fixture

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no Chromium: `apt-get install chromium chromium-driver` (make test does this when it can)")

#: Reports every <img> on the page that has not loaded (naturalWidth 0) once all have settled.
BROKEN_IMAGES = """
const images = Array.from(document.images);
images.forEach(img => img.loading = 'eager');
return images.filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src);
"""


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1000", "--allow-file-access-from-files"):
        options.add_argument(argument)
    # Installed but failing to start is an error, not a skip: the only browser coverage must not vanish silently.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def images_loaded(driver) -> list[str]:
    """Wait until every image on the page is loaded (or give up after 20 s); returns the broken ones."""
    try:
        WebDriverWait(driver, 20).until(lambda d: not d.execute_script(BROKEN_IMAGES))
    except Exception:  # noqa: BLE001 - the assertion below says which images failed
        pass
    return driver.execute_script(BROKEN_IMAGES)


def test_browse_home_layer_unit_and_search(browser, web_atlas, tmp_path):
    with running_server(create_app(web_atlas)) as base:
        browser.get(base + "/")
        assert "neuronscope" in browser.title
        browser.find_element(By.LINK_TEXT, LAYER).click()
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".grid .card"))
        assert len(browser.find_elements(By.CSS_SELECTOR, ".grid .card")) == 120
        assert images_loaded(browser) == []

        box = browser.find_element(By.CSS_SELECTOR, "form.controls input[name=q]")
        box.send_keys("star")
        box.submit()
        WebDriverWait(browser, 20).until(lambda d: "q=star" in d.current_url)
        cards = browser.find_elements(By.CSS_SELECTOR, ".grid .card")
        assert [card.get_attribute("data-unit") for card in cards] == ["0", "3"]

        cards[0].click()  # the card carries its list: the unit page's neighbours and way back stay in it
        WebDriverWait(browser, 20).until(lambda d: d.current_url.endswith("/u/0?q=star"))
        assert "star (drawn or written)" in browser.find_element(By.TAG_NAME, "h1").text
        shown = browser.find_elements(By.CSS_SELECTOR, ".featurevis img, .examples img, .plots img")
        assert len(shown) == 4 + 4 + 2  # renders, top examples, histogram and conditional plot
        assert images_loaded(browser) == []
        browser.save_screenshot(str(tmp_path / "unit.png"))
        assert (tmp_path / "unit.png").stat().st_size > 10_000

        search = browser.find_element(By.CSS_SELECTOR, "header form.search input[name=q]")
        search.send_keys("puzzle")
        search.submit()
        WebDriverWait(browser, 20).until(lambda d: "/search" in d.current_url)
        hits = browser.find_elements(By.CSS_SELECTOR, "ol.hits li a")
        assert hits and hits[0].get_attribute("href").endswith("/u/1")
        hits[0].click()
        WebDriverWait(browser, 20).until(lambda d: d.current_url.endswith("/u/1"))


def test_static_export_works_from_file_urls(browser, web_atlas, tmp_path):
    site = tmp_path / "site"
    export_site(web_atlas, site)
    browser.get((site / "index.html").as_uri())
    browser.find_element(By.LINK_TEXT, LAYER).click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".grid .card"))
    assert images_loaded(browser) == []
    browser.find_element(By.CSS_SELECTOR, '.grid .card[data-unit="2"]').click()
    WebDriverWait(browser, 20).until(lambda d: "/u/2/" in d.current_url)
    assert images_loaded(browser) == []
    search = browser.find_element(By.CSS_SELECTOR, "header form.search input[name=q]")
    search.send_keys("star")
    search.submit()  # client-side: search.html reads the query and the index in the browser
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hits li"))
    units = [link.text.rsplit(" ", 1)[-1] for link in browser.find_elements(By.CSS_SELECTOR, "#hits li a")]
    assert units[:2] == ["0", "3"]
    browser.find_elements(By.CSS_SELECTOR, "#hits li a")[0].click()
    WebDriverWait(browser, 20).until(lambda d: "/u/0/" in d.current_url)
    browser.save_screenshot(str(tmp_path / "static-unit.png"))
    assert Path(tmp_path / "static-unit.png").stat().st_size > 10_000


def test_static_search_takes_a_bare_percent_and_says_when_it_cuts(browser, web_atlas, tmp_path):
    """`search.html#%` threw a URIError in decodeURIComponent and showed nothing; more than 500 hits were
    cut without a word."""
    import json

    site = tmp_path / "site"
    export_site(web_atlas, site)
    browser.get((site / "search.html").as_uri() + "#%")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "nohits").is_displayed())
    assert browser.find_element(By.CSS_SELECTOR, "header form.search input[name=q]").get_attribute("value") == "%"
    units = [{"model": "m", "layer": "l", "unit": unit, "label": None, "words": ["dog"], "ranks": [0], "href": "#"}
             for unit in range(501)]
    (site / "static" / "search-index.js").write_text(f"window.NEURONSCOPE_INDEX = {json.dumps({'units': units})};")
    browser.get((site / "search.html").as_uri() + "?q=dog")
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hits li"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#hits li")) == 500
    assert browser.find_element(By.ID, "count").text == "501 units match “dog” (the first 500 shown)"


def test_static_search_lists_the_units_the_server_does_in_the_servers_order(browser, web_atlas, tmp_path):
    """The export's search ranked word matches by unit index (its index had no scores), the server by the
    word's score: "star" listed 473, 10, 33, ... statically and 473, 491 (start 1.68), 486, ... served. The
    index now carries each word's score rank, and app.js ranks as search_units does."""
    from neuronscope.atlas import Atlas
    from neuronscope.atlas.browse import search_units
    from tests.web_atlas import MODEL

    atlas_dir = tmp_path / "atlas"
    shutil.copytree(web_atlas, atlas_dir)
    with Atlas(atlas_dir) as atlas:
        atlas.write_unit_texts("words", None, MODEL, LAYER, {
            4: [("zebra", 0.5), ("start", 5.0)], 5: [("zebras", 2.0)], 6: [("zebu", 1.0), ("Zeb", 0.05)],
            7: [("zeb", 0.1)], 8: [("zebu", 1.0)], 9: [("starting", 9.0)]})
    site = tmp_path / "site"
    export_site(atlas_dir, site)
    with Atlas(atlas_dir, read_only=True) as atlas:
        served = {query: [str(hit["unit"]) for hit in search_units(atlas, query)] for query in ("zeb", "sta", "e")}
    assert served["zeb"] == ["7", "6", "5", "8", "4"]  # exact (by score), then partial by score, a tie by unit
    for query, units in served.items():
        browser.get((site / "search.html").as_uri() + f"?q={query}")
        WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hits li"))
        listed = [link.text.rsplit(" ", 1)[-1] for link in browser.find_elements(By.CSS_SELECTOR, "#hits li a")]
        assert listed == units, query


def test_arrow_and_j_k_keys_step_through_units_served_and_exported(browser, web_atlas, tmp_path):
    """No key moved between units: the ‹ prev / next › links were six Tab presses away."""
    from selenium.webdriver.common.keys import Keys

    def press(key: str, expected: str, into: str = "body") -> None:
        browser.find_element(By.CSS_SELECTOR, into).send_keys(key)
        WebDriverWait(browser, 20).until(lambda d: d.current_url.split("?")[0].rstrip("/").endswith(expected))

    with running_server(create_app(web_atlas)) as base:
        browser.get(f"{base}/m/tiny-rn/l/{LAYER}/u/2")
        press(Keys.ARROW_RIGHT, "/u/3")
        press("k", "/u/2")
        browser.find_element(By.CSS_SELECTOR, "header form.search input[name=q]").send_keys("j")  # typed: no move
        press(Keys.ARROW_LEFT, "/u/1")  # from 2, not from 3
        browser.get(f"{base}/m/tiny-rn/l/{LAYER}/u/3?labelled=1")  # from the labelled list: its neighbour is 0
        press(Keys.ARROW_LEFT, "/u/0")
    site = tmp_path / "site"
    export_site(web_atlas, site, plots=False)
    browser.get((site / "m" / "tiny-rn" / "l" / LAYER / "u" / "2" / "index.html").as_uri())
    press(Keys.ARROW_LEFT, "/u/1/index.html")
    press("j", "/u/2/index.html")


def test_static_search_goes_to_the_unit_a_number_names(browser, web_atlas, tmp_path):
    """`473` in the static search found nothing: its index held words and labels only."""
    site = tmp_path / "site"
    export_site(web_atlas, site, plots=False)
    browser.get((site / "search.html").as_uri() + "?q=300")
    WebDriverWait(browser, 20).until(lambda d: d.current_url.endswith("/u/300/index.html"))
    browser.get((site / "search.html").as_uri() + "?q=512")  # past the last unit: no unit matches
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "nohits").is_displayed())
