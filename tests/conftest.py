"""Shared fixtures: tiny random models (milliseconds) and one RN50x4 per session.

Random-init open_clip ResNets zero the last BatchNorm of every block, so each
block starts as the identity and its pre-ReLU sum equals its (non-negative)
input. Fixtures give those BatchNorms random weights so the residual sums
can go negative; nothing here asserts what a random unit means.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import open_clip  # noqa: F401 - pay its import (seconds) once, outside any timed test
import pytest
import torch

from neuronscope.models import LoadedModel, load_model
from neuronscope.runtime import seed_everything
from tests.helpers import make_clipart_tree, randomize_last_bn

# One intra-op thread: the suite's models are small, and on a shared 2-core box
# OpenMP threads that spin-wait against other processes run ~100x slower
# (measured: tiny-rn forward 0.01 s with 1 thread, 1.2 s with 2 under load).
torch.set_num_threads(int(os.environ.get("NEURONSCOPE_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test downloads: every test runs offline unless it says otherwise."""
    monkeypatch.setenv("NEURONSCOPE_OFFLINE", "1")


@pytest.fixture
def ctrl_c() -> Iterator[Callable[[], None]]:
    """Send this process a Ctrl-C (SIGINT) that raises KeyboardInterrupt, as in a terminal: a test run started
    in the background of a shell without job control inherits SIGINT ignored, and a signal would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield lambda: os.kill(os.getpid(), signal.SIGINT)
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def no_mini_clip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pretend the mini CLIP is not shipped (an empty bundled folder)."""
    monkeypatch.setenv("NEURONSCOPE_MINI_CLIP_DIR", str(tmp_path / "no-mini-clip"))


@pytest.fixture
def tiny_rn() -> LoadedModel:
    seed_everything(0)
    model = load_model("tiny-rn", weights="random")
    randomize_last_bn(model.module)
    return model


@pytest.fixture
def tiny_vit() -> LoadedModel:
    seed_everything(0)
    return load_model("tiny-vit", weights="random")


@pytest.fixture(scope="session")
def rn50x4() -> LoadedModel:
    """RN50x4 with random weights, built once per session (it takes seconds)."""
    seed_everything(0)
    model = load_model("RN50x4", weights="random")
    randomize_last_bn(model.module)
    return model


@pytest.fixture(scope="session")
def mini_clip_fp32() -> LoadedModel:
    """The bundled mini CLIP in fp32 on the CPU, once per session. Shared: a test must leave it as it found it."""
    return load_model("mini-clip", precision="fp32")


@pytest.fixture(scope="session")
def test_split():
    """The mini CLIP's bundled test split, decoded once per session."""
    from neuronscope.world.split import load_test_split

    return load_test_split()


@pytest.fixture(scope="session")
def card_layer_multimodal(mini_clip_fp32, test_split) -> list[dict]:
    """Every multimodal unit (both AUROCs >= the card's threshold) at the card's layer, recomputed over the test
    split through the recorder, as the card lists its units (``card_units``). The split's forward is the costly
    part: once."""
    from neuronscope.analysis.multimodality import multimodality
    from neuronscope.models.bundled import bundled_dir
    from neuronscope.world.evaluate import card_units, split_responses

    card = json.loads((bundled_dir() / "mini_clip_card.json").read_text())["multimodal"]
    responses = split_responses(mini_clip_fp32, test_split, [card["layer"]])[card["layer"]]
    return card_units(multimodality(responses, card["layer"], control=()).units(card["threshold"]), card["layer"])


@pytest.fixture
def clipart_tree(tmp_path: Path) -> Path:
    """A small generated clipart tree with one bad file of each kind (:func:`tests.helpers.make_clipart_tree`)."""
    return make_clipart_tree(tmp_path)
