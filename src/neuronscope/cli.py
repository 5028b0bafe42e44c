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
    "neuronscope.commands.multimodal",
    "neuronscope.commands.families",
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


def _reflow_help(typer_app: typer.Typer) -> None:
    """Give each command its docstring with every paragraph on one line, and its first sentence as the
    summary that command lists show.

    Rich --help keeps a docstring's single line breaks (in the command list, and in every paragraph of a
    command's page after the first), so help wrapped for the source showed as ragged rows; Rich wraps
    one-line paragraphs to the terminal.
    """
    for info in typer_app.registered_commands:
        if info.help is None and info.callback is not None:
            paragraphs = (inspect.getdoc(info.callback) or "").split("\n\n")
            info.help = "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)
            info.short_help = re.split(r"(?<=[.])\s+(?=[A-Z`-])", info.help.split("\n\n")[0], maxsplit=1)[0]
    for group in typer_app.registered_groups:
        _reflow_help(group.typer_instance)


_reflow_help(app)


def main() -> None:
    """Console entry point (``neuronscope``)."""
    app()
