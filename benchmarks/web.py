"""Microscope latency and throughput on a synthetic RN50x4-sized atlas (2560 units on a 9x9 grid).

    .venv/bin/python benchmarks/web.py [--units 2560] [--repeats 50] [--clients 32] [--seconds 10]

1. Server-side latency of the home, layer (first page, sorted by max, filtered by a word; the
   grid cached, plus its first, uncached read) and unit pages: an ASGI middleware times each
   request from its arrival in the app to its last byte (no client or network in the figure);
   median and p95 over ``--repeats`` requests. Target: unit and layer pages < 300 ms.
2. Requests per second under ``--clients`` concurrent keep-alive clients, against
   ``neuronscope serve`` in its own process (a mix of layer, unit and JSON unit pages).

The atlas is written through the Atlas writers: a LayerScan of random statistics with
16 top examples per unit (thumbnails from 400 distinct images), a 128-bin histogram with
a 4-image reservoir per bin, a plain render and 20 words per unit, 200 labels, texts for 500 units.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from neuronscope.atlas import Atlas
from neuronscope.mining.results import Examples, HistogramArrays, ImageRecord, LayerScan

MODEL = "RN50x4@random"
LAYER = "visual.layer4.5.act3:input"


def _png(rng: np.random.Generator, size: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def build_atlas(path: Path, units: int, seed: int = 0) -> None:
    """A synthetic atlas with every part the microscope shows, for ``units`` units of one layer."""
    rng = np.random.default_rng(seed)
    k, n_images, n_bins, reservoir, grid = 16, 400, 128, 4, (9, 9)
    images = {f"img{i:04d}.png#{i:012x}": ImageRecord(f"img{i:04d}.png#{i:012x}", "synthetic", f"img{i:04d}.png",
                                                      f"{i:064x}", 288, 288) for i in range(n_images)}
    ids = np.array(list(images), dtype=object)
    top_ids = ids[rng.integers(0, n_images, (units, k))]
    cells = rng.integers(0, 9, (units, k, 2))
    values = np.sort(rng.gamma(2.0, 1.0, (units, k)).astype(np.float32), axis=1)[:, ::-1]
    samples = ids[rng.integers(0, n_images, (units, n_bins, reservoir))]
    scan = LayerScan(
        model=MODEL, layer=LAYER, aliases=["neurons", "image_block_4/5/Add_6"], units=units, grid=grid,
        count=np.full(units, 100_000, np.int64), mean=rng.normal(0, 1, units), std=rng.uniform(0.5, 2, units),
        max=values[:, 0].astype(np.float64), min=rng.normal(-3, 1, units), map_mean=rng.normal(0, 1, units),
        top=Examples(top_ids, values, cells), bottom=Examples(top_ids[:, :4], -values[:, :4], cells[:, :4]),
        histogram=HistogramArrays(exponent=np.full(units, -4), first=np.full(units, -64),
                                  counts=rng.integers(0, 3000, (units, n_bins)), samples=samples,
                                  nonfinite=np.zeros(units, np.int64), seed=seed))
    with Atlas(path) as atlas:
        run_id = atlas.start_run(command="synthetic", config={"units": units}, config_key="synthetic", model=MODEL,
                                 weights_sha256=None, layers=[{"layer": LAYER, "aliases": scan.aliases}],
                                 dataset=None, precision="fp32")
        thumb_pngs = [_png(rng, 64) for _ in range(64)]
        thumbs = {}
        for unit in range(units):
            for rank in range(k):
                record = images[top_ids[unit, rank]]
                key = (record.sha256, *grid, int(cells[unit, rank, 0]), int(cells[unit, rank, 1]))
                if key not in thumbs:
                    name = f"{record.sha256[:16]}_g9x9_r{key[3]}c{key[4]}.png"
                    thumbs[key] = atlas.save_thumbnail(name, thumb_pngs[len(thumbs) % len(thumb_pngs)])
        atlas.write_scan(run_id, [scan], images, {}, 100_000, thumbs)
        renders = [_png(rng, 64) for _ in range(32)]
        atlas.write_featurevis(run_id, MODEL, LAYER, [
            {"unit": u, "kind": "plain", "index": 0, "png": renders[u % 32], "objective": 1.0, "description": "d"}
            for u in range(units)])
        vocabulary = [f"word{i}" for i in range(5000)]
        atlas.write_unit_texts("words", run_id, MODEL, LAYER, {
            u: [(vocabulary[i], float(s)) for i, s in zip(rng.choice(5000, 20, replace=False), rng.random(20))]
            for u in range(units)})
        atlas.write_unit_texts("texts", run_id, MODEL, LAYER, {u: [(f"a photo of {u}", 0.5)] for u in range(500)})
        for unit in range(0, units, max(1, units // 200)):
            atlas.set_label(MODEL, LAYER, unit, f"label {unit}", source="synthetic")


def stored_units(atlas: Path) -> int:
    """Units of the synthetic layer in an atlas this script built."""
    with Atlas(atlas) as opened:
        return opened.resolve_layer(MODEL, LAYER)["units"]


def server_side_latency(atlas: Path, units: int, repeats: int) -> list[tuple[str, list[float]]]:
    """Per page: server-side seconds of ``repeats`` requests (unit pages of units drawn from ``units``),
    timed by an ASGI middleware."""
    from fastapi.testclient import TestClient

    from neuronscope.web import create_app

    app = create_app(atlas, warm=False)  # the first layer read below is the uncached one
    timings: list[float] = []

    async def timed(scope, receive, send):  # first byte in to last byte out, inside the server
        start = time.perf_counter()
        await app(scope, receive, send)
        timings.append(time.perf_counter() - start)

    layer = f"/m/RN50x4/l/{LAYER}"
    pages = [("home /", "/"), (f"layer, page 1 ({min(120, units)} of {units} cards)", layer),
             ("layer, sorted by max", f"{layer}?sort=max"), ("layer, filtered by a word", f"{layer}?q=word42"),
             ("unit page", f"{layer}/u/{{unit}}"), ("unit JSON (/api)", f"/api{layer}/u/{{unit}}"),
             ("search page", "/search?q=word4")]
    results = []
    with TestClient(timed) as client:
        timings.clear()
        client.get(layer).raise_for_status()
        results.append(("layer, first read (grid not cached)", list(timings)))
        rng = np.random.default_rng(1)
        for name, url in pages:
            client.get(url.format(unit=0))  # warm: imports, template compile
            timings.clear()
            for _ in range(repeats):
                client.get(url.format(unit=int(rng.integers(0, units)))).raise_for_status()
            results.append((name, list(timings)))
    return results


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def throughput(atlas: Path, units: int, clients: int, seconds: float) -> tuple[int, float, int]:
    """(requests answered, seconds, errors) for ``clients`` concurrent clients against `neuronscope serve`."""
    import httpx

    port = _free_port()
    command = Path(sys.executable).with_name("neuronscope")  # the venv's console script
    server = subprocess.Popen([str(command), "serve", str(atlas), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(base + "/", timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("neuronscope serve did not start")
                time.sleep(0.3)
        layer = f"/m/RN50x4/l/{LAYER}"
        httpx.get(base + layer, timeout=60)  # grid cached before timing, as after any first visit

        async def client_loop(http, index: int, stop: float, counts: list[int]) -> None:
            rng = np.random.default_rng(index)
            while time.monotonic() < stop:
                unit = int(rng.integers(0, units))
                url = (layer, f"{layer}/u/{unit}", f"/api{layer}/u/{unit}")[int(rng.integers(0, 3))]
                answer = await http.get(url)
                counts[0 if answer.status_code == 200 else 1] += 1

        async def run() -> tuple[int, float, int]:
            counts = [0, 0]
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
                start = time.monotonic()
                await asyncio.gather(*(client_loop(http, i, start + seconds, counts) for i in range(clients)))
                return counts[0], time.monotonic() - start, counts[1]

        return asyncio.run(run())
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2560)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--atlas", type=Path,
                        help="reuse (or build here) the synthetic atlas; a reused one must have --units units")
    args = parser.parse_args()
    folder = tempfile.TemporaryDirectory(prefix="neuronscope-web-bench-")
    atlas = args.atlas or Path(folder.name) / "atlas"
    if (atlas / "atlas.sqlite").is_file():
        if (found := stored_units(atlas)) != args.units:  # its pages would not be the ones asked for
            parser.error(f"{atlas} holds a synthetic atlas of {found} units: pass --units {found}, "
                         f"or another --atlas to build one of {args.units}")
        print(f"synthetic atlas: {found} units, reused from {atlas}")
    else:
        start = time.perf_counter()
        build_atlas(atlas, args.units)
        print(f"synthetic atlas: {args.units} units built in {time.perf_counter() - start:.1f} s at {atlas}")
    print(f"CPU cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")
    print(f"server-side latency, {args.repeats} requests each (ms): median, p95")
    for name, seconds in server_side_latency(atlas, args.units, args.repeats):
        ms = sorted(1000 * s for s in seconds)
        p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
        print(f"  {name:<40} {statistics.median(ms):8.1f} {p95:8.1f}")
    answered, elapsed, errors = throughput(atlas, args.units, args.clients, args.seconds)
    print(f"throughput: {answered / elapsed:.1f} requests/s with {args.clients} concurrent clients "
          f"({answered} answered, {errors} not 200, {elapsed:.1f} s; layer, unit and JSON unit pages mixed)")


if __name__ == "__main__":
    main()
