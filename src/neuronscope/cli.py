"""``neuronscope``: the command line.

Commands live in small modules under :mod:`neuronscope.commands`, each with a
``register(app)``; sub-apps (``world``) are mounted with ``add_typer``. A
command module imports torch, open_clip and the code that runs models inside
its commands, so ``--help`` and the commands that only read an atlas start
without them (tests/test_cli.py checks it).
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Annotated, Optional

import typer

from neuronscope.commands.common import DebugOpt, set_global_debug

COMMAND_MODULES = (
    "neuronscope.commands.models",
    "neuronscope.commands.layers",
    "neuronscope.commands.demo",
    "neuronscope.commands.zeroshot",
    "neuronscope.commands.attack",
    "neuronscope.commands.scan",
    "neuronscope.commands.show",
    "neuronscope.commands.visualize",
    "neuronscope.commands.words",
    "neuronscope.commands.reproduce",
    "neuronscope.commands.microscope",
    "neuronscope.commands.textside",
)

app = typer.Typer(
    name="neuronscope",
    help="Find and explain the neurons of CLIP models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    debug: DebugOpt = False,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, envvar="NEURONSCOPE_THREADS",
        help="torch's intra-op threads (default: one per core). On a machine other jobs share, 1 is often "
             "much faster: idle OpenMP threads spin against the other jobs.")] = None,
) -> None:
    """Find and explain the neurons of CLIP models (Goh et al., Multimodal Neurons, 2021)."""
    set_global_debug(debug)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)

from neuronscope.world.cli import app as world_app  # noqa: E402 - mounted after the core commands

app.add_typer(world_app, name="world")


def _listing_summaries(typer_app: typer.Typer) -> None:
    """Give each command a one-sentence summary for the command lists of ``--help``.

    Rich --help keeps a docstring's line breaks in the command list (it rewraps only a command's own page),
    so a wrapped docstring showed there as ragged lines; the summary is its first sentence on one line, and
    the command's own ``--help`` keeps the whole text.
    """
    for info in typer_app.registered_commands:
        if info.short_help is None and info.callback is not None:
            text = " ".join((inspect.getdoc(info.callback) or "").split())
            info.short_help = re.split(r"(?<=[.])\s+(?=[A-Z`-])", text, maxsplit=1)[0] or None
    for group in typer_app.registered_groups:
        _listing_summaries(group.typer_instance)


_listing_summaries(app)


def main() -> None:
    """Console entry point (``neuronscope``)."""
    app()
