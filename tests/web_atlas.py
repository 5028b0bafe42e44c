"""A small atlas for the microscope's tests: a real scan of tiny-rn plus rows written through the Atlas writers.

The scan gives real top examples (with marked thumbnails), histograms and a
run; feature vis, words, texts, labels and an emotions plot are synthetic
rows, written the way the commands that compute them write.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuronscope.atlas import Atlas
from neuronscope.mining import ScanSettings, open_source, scan
from tests.helpers import make_images

MODEL = "tiny-rn@random"
LAYER = "visual.layer4.1.act3:input"
#: Units that get renders, words, texts and labels (the rest stay bare: "missing" must show as missing).
DRESSED = (0, 1, 2, 3)


def png(seed: int, size: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def build_web_atlas(model, folder: Path) -> Path:
    """Scan ``model``'s ``neurons`` over 12 images (thumbnails on), then add the other parts for DRESSED."""
    make_images(folder / "images", count=12)
    path = folder / "atlas"
    with Atlas(path) as atlas:
        scan(model, open_source(folder / "images"), atlas, ["neurons"],
             settings=ScanSettings(top_k=4, bottom_k=2), batch_size=6, thumbnails=True)
        run_id = atlas.start_run(command="visualize", config={"steps": 4}, config_key="fv-test", model=MODEL,
                                 weights_sha256=None, layers=[{"layer": LAYER, "aliases": ["neurons"]}],
                                 dataset=None, precision="fp32")
        renders = []
        for unit in DRESSED:
            renders.append({"unit": unit, "kind": "plain", "index": 0, "png": png(unit), "objective": 1.5 + unit,
                            "description": f"Channel [neurons, {unit}]"})
            renders += [{"unit": unit, "kind": "diverse", "index": i, "png": png(100 + 10 * unit + i),
                         "objective": 1.0, "description": "diverse"} for i in range(2)]
            renders.append({"unit": unit, "kind": "facet:text", "index": 0, "png": png(200 + unit),
                            "objective": 0.5, "description": "facet text"})
        atlas.write_featurevis(run_id, MODEL, LAYER, renders)
        atlas.finish_run(run_id)
        words = {0: [("star", 3.0), ("stars", 2.5), ("planet", 1.0)], 1: [("puzzle", 2.0), ("piece", 1.5)],
                 2: [("diagram", 2.2), ("chart", 1.1)], 3: [("bubble", 1.9), ("star", 0.4)]}
        atlas.write_unit_texts("words", run_id, MODEL, LAYER, words)
        atlas.write_unit_texts("texts", run_id, MODEL, LAYER, {1: [("a jigsaw puzzle", 0.8)],
                                                               2: [("a diagram <b>bold</b>", 0.6)]})
        atlas.set_label(MODEL, LAYER, 0, "star (drawn or written)", source="test")
        atlas.set_label(MODEL, LAYER, 3, "bubble", source="test")
        atlas.save_artifact(MODEL, LAYER, "emotions", "codes", data={"codes": 3}, file_bytes=png(7),
                            suffix=".png", run_id=run_id)
    return path


#: A model key with "/" in it (an hf-hub model): its URL name writes "/" as "~".
HUB_MODEL = "hf-hub:org/repo@hub"


def build_hub_atlas(path: Path) -> Path:
    """An atlas holding one layer (2 units, one labelled) of :data:`HUB_MODEL`, written without a scan."""
    with Atlas(path) as atlas:
        atlas.register_layer(HUB_MODEL, "visual.layer4", aliases=["neurons"], units=2, grid=(1, 1))
        atlas.set_label(HUB_MODEL, "visual.layer4", 1, "hub unit", source="test")
    return path


#: A stored multimodality measurement of :func:`build_multimodal_atlas`'s measured layer (4 units). Scores (the
#: weaker AUROC) 0.92, 0.93, 0.95, 0.60: units 0 and 1 are multimodal ("star", "card"); unit 2 reaches the
#: threshold but its words' top concept is "star", not "hat"; unit 3 is below it.
MULTIMODALITY = {"layer": "visual.layer4", "concepts": ["star", "card", "hat"], "threshold": 0.9,
                 "concept": [0, 1, 2, 0], "word_concept": [0, 1, 0, 0],
                 "auroc_images": [0.95, 0.99, 0.97, 0.60], "auroc_words": [0.92, 0.93, 0.95, 0.70],
                 "chance": {"units": [1, 0, 2], "concepts": [1, 0, 1]}}
#: :func:`build_multimodal_atlas`'s model and its layers: one measured, one not.
MM_MODEL, MM_LAYER, MM_BARE = "mm-model@test", "visual.layer4", "visual.layer3"


def build_multimodal_atlas(path: Path) -> Path:
    """An atlas of two 4-unit layers written without a scan: :data:`MULTIMODALITY` stored for ``MM_LAYER``
    (unit 0 labelled with its concept), nothing for ``MM_BARE``."""
    with Atlas(path) as atlas:
        for layer in (MM_LAYER, MM_BARE):
            atlas.register_layer(MM_MODEL, layer, aliases=[], units=4, grid=(1, 1))
        atlas.write_multimodality(None, MM_MODEL, MM_LAYER, MULTIMODALITY)
        atlas.set_label(MM_MODEL, MM_LAYER, 0, "Star", source="test")
    return path


#: :func:`build_family_atlas`'s model and its layers: families stored, families computed and none found, none.
FAM_MODEL, FAM_LAYER, FAM_EMPTY, FAM_BARE = "fam-model@test", "visual.layer4", "visual.layer3", "visual.layer2"
#: What the ``auto:words`` families of FAM_LAYER came from (``Families.about``'s shape).
FAMILY_ABOUT = {"vocabulary": "english-10k", "threshold": 0.85, "family_words": {"region": 131, "emotion": 76,
                                                                                 "colour": 20},
                "null": {"region": 0.5871, "emotion": 0.6093, "colour": 0.6983}, "null_draws": 20, "seed": 0,
                "lexical": {"1": "-ing", "4": "un-"}}


def build_family_atlas(path: Path) -> Path:
    """An atlas of three 6-unit layers written without a scan. FAM_LAYER: units 0 and 2 colour (0.91, 0.88), 1
    and 4 lexical ("-ing", "un-"), 3 region (0.95) from ``auto:words``; 5 a user's "person"; unit 2 labelled
    "Red". FAM_EMPTY: families computed, none found. FAM_BARE: never computed."""
    with Atlas(path) as atlas:
        for layer in (FAM_LAYER, FAM_EMPTY, FAM_BARE):
            atlas.register_layer(FAM_MODEL, layer, aliases=[], units=6, grid=(1, 1))
        atlas.write_families(FAM_MODEL, FAM_LAYER, {5: {"family": "person", "score": None}}, source="user")
        atlas.write_families(FAM_MODEL, FAM_LAYER, {0: {"family": "colour", "score": 0.91},
                                                    1: {"family": "lexical", "score": None},
                                                    2: {"family": "colour", "score": 0.88},
                                                    3: {"family": "region", "score": 0.95},
                                                    4: {"family": "lexical", "score": None}},
                             source="auto:words", about=FAMILY_ABOUT)
        atlas.write_families(FAM_MODEL, FAM_EMPTY, {}, source="auto:words",
                             about={**FAMILY_ABOUT, "lexical": {}})
        atlas.set_label(FAM_MODEL, FAM_LAYER, 2, "Red", source="test")
    return path


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def web_atlas(tmp_path_factory) -> Path:
    """The atlas of :func:`build_web_atlas`, built once per test module (import this fixture to use it)."""
    from neuronscope.models import load_model
    from neuronscope.runtime import seed_everything
    from tests.helpers import randomize_last_bn

    seed_everything(0)
    model = load_model("tiny-rn", weights="random")
    randomize_last_bn(model.module)
    return build_web_atlas(model, tmp_path_factory.mktemp("web"))
