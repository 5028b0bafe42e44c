"""``neuronscope``: the command line.

Commands live in small modules under :mod:`neuronscope.commands`, each with a
``register(app)``; sub-apps (``world``) are mounted with ``add_typer``. A
command module imports torch, open_clip and the code that runs models inside
its commands, so ``--help`` and the commands that only read an atlas start
without them (tests/test_cli.py checks it).
"""

from __future__ import annotations

import importlib
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


def main() -> None:
    """Console entry point (``neuronscope``)."""
    app()
