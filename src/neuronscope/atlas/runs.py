"""The life of a run in an atlas, shared by every command that writes one.

A run is recorded ``running`` before its work starts, keyed by a hash of
what decides its results (its config key). If its command fails or is
killed, the run is marked ``interrupted``; the same command started again
finds it by its key and continues it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neuronscope.atlas.store import Atlas
    from neuronscope.models.loaded import LoadedModel


def model_identity(model: LoadedModel) -> str:
    """What tells a model's results apart in a key: its key (``RN50x4@openai`` names its weights), plus the
    state dict's sha256 when the key does not name them (``NAME@random`` is every seed's init)."""
    return model.key if model.weights_sha256 is not None else f"{model.key}#{model.weights_identity()}"


@contextmanager
def marked_interrupted(atlas: Atlas, run_id: int) -> Iterator[None]:
    """Mark run ``run_id`` ``interrupted`` (resumable) if the block fails or is killed (Ctrl-C), instead of
    leaving it ``running`` for good; a run the block got to finish (its results written, only the clean-up
    after failed) stays ``finished``."""
    try:
        yield
    except BaseException:
        if atlas.run(run_id)["status"] != "finished":
            atlas.set_run_status(run_id, "interrupted")
        raise
