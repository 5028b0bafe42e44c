"""End to end: the installed ``neuronscope`` console script in a subprocess (seconds each)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def console_script() -> list[str]:
    found = shutil.which("neuronscope", path=str(Path(sys.executable).parent)) or shutil.which("neuronscope")
    if found is None:
        pytest.fail("the neuronscope console script is not installed (pip install -e .)")
    return [found]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NEURONSCOPE_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*console_script(), *args], capture_output=True, text=True, timeout=120, env=env)


def test_console_layers_json():
    done = run("layers", "tiny-rn", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["model"] == "tiny-rn@random"
    neurons = next(entry for entry in payload["layers"] if "neurons" in entry["aliases"])
    assert neurons == {"name": "visual.layer4.1.act3:input", "aliases": ["neurons", "image_block_4/1/Add_6"],
                       "shape": [512, 2, 2], "layout": "channels_first"}


def test_console_error_is_one_line_and_nonzero():
    done = run("layers", "tiny-rn", "--weights", "/no/such/file.pt")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: weights file '/no/such/file.pt' does not exist; pass an existing file with --weights PATH"]
