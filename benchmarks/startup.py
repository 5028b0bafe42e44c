"""How long the command line takes before it does anything: ``--help`` and the commands that read an atlas.

    .venv/bin/python benchmarks/startup.py [--repeats 5]

Each call is a fresh process (as a user's shell starts one), timed wall to wall; the figure is the median of
``--repeats`` calls, run in turns so that the machine's load falls on every row alike. Beside them, the floors
and what they would cost with torch: a bare ``python -c pass`` and ``python -c "import torch, open_clip"``
(what every command paid at start-up before the commands imported what they run). The ratio column divides
by the torch import: under 1 is a start-up that does not pay it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from neuronscope.atlas import Atlas


def _atlas(folder: Path) -> Path:
    """An atlas with one registered layer and a label: what ``show`` reads, without running a model."""
    path = folder / "atlas"
    with Atlas(path) as atlas:
        atlas.register_layer("mini-clip@bundled", "visual.layer4.1.act3:input", aliases=["neurons"], units=4,
                             grid=(2, 2))
        atlas.set_label("mini-clip@bundled", "visual.layer4.1.act3:input", 1, "a label", source="benchmark")
    return path


def _seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "neuronscope"]
    with tempfile.TemporaryDirectory() as tmp:
        atlas = str(_atlas(Path(tmp)))
        rows = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import torch, open_clip": [sys.executable, "-c", "import torch, open_clip"],
            "neuronscope --help": [*cli, "--help"],
            "neuronscope scan --help": [*cli, "scan", "--help"],
            "neuronscope show ATLAS --unit 1 --json": [*cli, "show", atlas, "--unit", "1", "--json"],
            "neuronscope export ATLAS --site DIR": [*cli, "export", atlas, "--site", str(Path(tmp) / "site")],
        }
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.repeats):  # in turns: a burst of load hits every row
            for name, command in rows.items():
                times[name].append(_seconds(command))
    medians = {name: statistics.median(values) for name, values in times.items()}
    torch_import = medians["import torch, open_clip"]
    print(f"{'call':<42} {'median s':>9} {'/ torch import':>15}")
    for name, seconds in medians.items():
        print(f"{name:<42} {seconds:9.2f} {seconds / torch_import:15.2f}")


if __name__ == "__main__":
    main()
