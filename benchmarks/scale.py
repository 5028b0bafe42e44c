"""What grows with a collection before and beside the forward: listing a source, and a scan's checkpoint.

    .venv/bin/python benchmarks/scale.py [--files 20000] [--records 50000] [--keys 1000000]

(a) Listing: ``open_source`` of a folder of ``--files`` tiny files and of a ``.txt`` list of the same paths,
    in microseconds a file, beside a bare ``os.walk`` of the folder (the floor: listing / walk).
(b) A scan's checkpoint as it grows: ``ScanState.state_dict`` of one 512-unit layer holding ``--records``
    image records (reservoir samples keep records growing with the scan) and ``--keys`` content keys, written
    with ``Atlas.save_checkpoint``: seconds, megabytes, and the bytes a record and a key take on disk.

Files and atlas live in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from neuronscope.atlas import Atlas
from neuronscope.mining import LayerAccumulator, ScanSettings, open_source
from neuronscope.mining.results import ImageRecord
from neuronscope.mining.scanner import ContentKeys, ScanState


def make_folder(root: Path, files: int) -> Path:
    """``files`` tiny files in folders of 1,000, and a ``.txt`` list of their paths beside them."""
    folder = root / "images"
    paths = []
    for index in range(files):
        sub = folder / f"d{index // 1000:04d}"
        if index % 1000 == 0:
            sub.mkdir(parents=True)
        path = sub / f"{index:07d}.png"
        path.write_bytes(b"x" * (index % 97))
        paths.append(str(path))
    (root / "images.txt").write_text("\n".join(paths))
    return folder


def seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def listing(root: Path, files: int) -> None:
    folder = make_folder(root, files)
    walk = min(seconds(lambda: sum(len(names) for _, _, names in os.walk(folder))) for _ in range(3))
    as_folder = min(seconds(lambda: open_source(folder)) for _ in range(3))
    as_list = min(seconds(lambda: open_source(root / "images.txt")) for _ in range(3))
    micro = 1e6 / files
    print(f"(a) {files} files: os.walk {walk * micro:.1f} us a file; folder {as_folder * micro:.1f} us a file "
          f"(listing / walk {as_folder / walk:.1f}); .txt list {as_list * micro:.1f} us a file")


def checkpoint(root: Path, records: int, keys: int) -> None:
    state = ScanState({"neurons": LayerAccumulator(512, (9, 9), ScanSettings())})
    empty_arrays, _ = state.state_dict()
    empty = sum(array.nbytes for array in empty_arrays.values())
    state.prune_records = lambda: None  # made-up records no unit holds: keep them
    state.records = {o: ImageRecord(f"d{o // 1000:04d}/{o:07d}.jpg#{o:012x}", "images", f"d{o // 1000:04d}/{o:07d}.jpg",
                                    f"{o:064x}", 640, 480) for o in range(records)}
    state.seen = ContentKeys(np.random.default_rng(0).integers(0, 2**63, keys, dtype=np.int64).astype(np.uint64))
    for key in range(min(keys, 2048)):  # a checkpoint's worth of new keys, added since the last one
        state.seen.add(key)
    with Atlas(root / "atlas") as atlas:
        took = seconds(lambda: atlas.save_checkpoint("bench", *state.state_dict()))
        size = sum(path.stat().st_size for path in atlas.checkpoints_dir.iterdir())
    arrays, _ = state.state_dict()
    record_bytes = (arrays["records.utf8"].nbytes + arrays["records.ordinal"].nbytes) / max(records, 1)
    # Side by side: the encoding checkpoints used before (a NumPy string of JSON objects, 4 bytes a character).
    as_string = np.array(json.dumps([asdict(record) for record in state.records.values()])).nbytes / max(records, 1)
    print(f"(b) one 512-unit layer, {records} records, {keys} content keys: checkpoint {took:.2f} s, "
          f"{size / 1e6:.1f} MB on disk ({empty / 1e6:.1f} MB of statistics); {record_bytes:.0f} bytes a record "
          f"(as a NumPy string of JSON objects: {as_string:.0f}, {as_string / record_bytes:.1f}x), "
          f"{arrays['seen'].nbytes / max(keys, 1):.0f} a key")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--records", type=int, default=50000)
    parser.add_argument("--keys", type=int, default=1000000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        listing(Path(work), args.files)
        checkpoint(Path(work), args.records, args.keys)


if __name__ == "__main__":
    main()
