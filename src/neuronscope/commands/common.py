"""What every command shares: the options, error handling, JSON and model loading.

Options are ``Annotated`` types, so a command declares them in its signature:

    def scan(model: ModelOpt = None, weights: WeightsOpt = None, ...): ...

Errors a user can fix print as one line on stderr and exit 1; the traceback
only shows with ``--debug`` (or ``NEURONSCOPE_DEBUG=1``).
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import shlex
import sqlite3
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional, TypeVar

import typer

from neuronscope.errors import NeuronscopeError

if TYPE_CHECKING:  # torch is imported by the commands that run, not at start-up
    from neuronscope.models import LoadedModel

F = TypeVar("F", bound=Callable[..., Any])

ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Model: NAME, NAME@WEIGHTS, hf-hub:ORG/REPO or a checkpoint PATH.")]
WeightsOpt = Annotated[Optional[str], typer.Option(
    "--weights", "-w", help="random, a registry tag (openai...), or PATH to a local file. "
                            "Omitted: the bundled or locally cached weights.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="auto|fp32|bf16|fp16|bf16-weights (auto: bf16 only where the device runs it natively).")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for random weights and sampling.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")]
LayerOpt = Annotated[str, typer.Option("--layer", "-l", help="Layer: canonical name or alias (neurons).")]
AtlasArg = Annotated[str, typer.Argument(metavar="ATLAS", help="An atlas directory (from `neuronscope scan --out`).")]


class _Invocation:
    """Options given to ``neuronscope`` itself (before the command); set by the app's callback."""

    debug = False


def set_global_debug(debug: bool) -> None:
    _Invocation.debug = debug


def debug_requested(flag: bool = False) -> bool:
    """``--debug`` on the command or on ``neuronscope`` itself, or ``NEURONSCOPE_DEBUG=1``."""
    env = os.environ.get("NEURONSCOPE_DEBUG", "").strip().lower() in ("1", "true", "yes")
    return flag or env or _Invocation.debug


def configure_logging(debug: bool) -> None:
    """Logs go to stderr (stdout stays clean for --json): warnings, or everything with --debug."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def cli_command(func: F) -> F:
    """Wrap a command: logging set-up, and errors as one line on stderr with exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = debug_requested(bool(kwargs.get("debug", False)))
        configure_logging(debug)
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own exits and usage errors (typer.Exit is a RuntimeError)
        except NeuronscopeError as err:
            if debug:
                raise
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo(interrupted_message(func.__name__), err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:
            _silence_stdout()  # the reader (``| head``) has all it wanted: not a failure
            raise typer.Exit(0) from None
        except Exception as err:  # noqa: BLE001 - the one place that turns crashes into one line
            if debug:
                raise
            full = disk_full_message(err, func.__name__)
            typer.echo(f"error: {full}" if full else
                       f"error: {type(err).__name__}: {_one_line(err)} (run with --debug for the traceback)", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


#: What running a command again after a failure reuses, by the command's function name: only the commands
#: that do pick up where they stopped are named (the others start over).
RERUN_REUSES = {
    "scan": "scan resumes from its last checkpoint",
    "visualize": "visualize renders only the missing units",
    "demo": "the demo goes on where it stopped",
    "train": "world train resumes from its last checkpoint",
    "words": "words resumes from its last checkpoint",
    "reproduce_words": "reproduce words --out resumes from its last checkpoint",
    "textvis": "textvis goes on with the units it has not stored",
    "emotions": "emotions reuses the attribution basis it kept",
    "multimodal": "multimodal --out resumes from its last checkpoint",
}


def interrupted_message(command: str) -> str:
    """The line for a command stopped by Ctrl-C: that running it again resumes, where it does."""
    if command in RERUN_REUSES:
        return f"interrupted: run the same command again to resume ({RERUN_REUSES[command]})"
    return "interrupted"


def disk_full_message(err: BaseException, command: str = "") -> str | None:
    """The one line for an error that a full disk (or quota) caused, anywhere in its chain, else None.

    An exception's name ("OSError: [Errno 28] ...", "OperationalError: database or disk is full") says
    what broke but not that freeing space and running the same command again is all it takes.
    """
    for cause in _causes(err):
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "no space left on the device" if cause.errno == errno.ENOSPC else "over the disk quota"
            where = f" writing {cause.filename}" if cause.filename else ""
        elif isinstance(cause, sqlite3.OperationalError) and "disk is full" in str(cause):
            what, where = "no space left on the device", " writing the atlas database"
        else:
            continue
        reuses = f" ({RERUN_REUSES[command]})" if command in RERUN_REUSES else ""
        return f"{what}{where}: free some space and run the same command again{reuses}"
    return None


def _causes(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or while handling (a wrapped write failure)."""
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def _one_line(err: BaseException) -> str:
    """An unexpected error's message in one line: its first, and for an error a DataLoader worker raised
    (torch re-raises it with the worker's traceback as the message, "Caught ValueError in DataLoader worker
    process 0." first) also its last, which says what went wrong."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return ""
    if len(lines) > 1 and "Original Traceback" in lines[1]:
        return f"{lines[0]} {lines[-1]}"
    return lines[0]


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of the closed pipe does not
    raise (and print) the BrokenPipeError again at exit."""
    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stdout (tests) has no descriptor to re-point
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


def resumed_note(noun: str) -> Callable[[int, int], None]:
    """A job's ``on_resume`` hook: ``resumed at NOUN N of M`` on stderr, before the first batch, so the user
    sees that what a killed run got through is not done again."""
    return lambda done, total: typer.echo(f"resumed at {noun} {done} of {total}", err=True)


#: Below this many seconds since a label's first report, a progress line gives no rate or ETA.
MIN_RATE_SECONDS = 0.5


class ProgressBars:
    """Progress of long jobs on stderr, one bar per label: a rich bar on a terminal, elsewhere (logs, CI)
    a line per label every ``every_s`` seconds with its rate, ETA and ``detail``. ``quiet`` prints nothing.

        bars = ProgressBars(quiet=False)
        render_units(..., on_step=bars.track("visualize plain"))   # a (done, total) callback
        bars("words", 300, 10000)                                   # or report a label directly
        bars("train", step, steps, detail=f"loss {loss:.4f}")       # with what else the job reports
        bars.close()

    The rate counts from a label's first report, so a job that resumes half-way (a scan, training) is
    not credited with the work done before it started.
    """

    def __init__(self, *, quiet: bool = False, every_s: float = 10.0) -> None:
        self.quiet, self.every_s = quiet, every_s
        self.tasks: dict[str, Any] = {}
        self.started: dict[str, tuple[float, int]] = {}  # label -> (time, done) of its first report
        self.last_line: dict[str, float] = {}
        self.bars = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=True)
            self.bars.start()

    def __call__(self, label: str, done: int, total: int, *, detail: str = "") -> None:
        if self.quiet:
            return
        now = time.monotonic()
        first_time, first_done = self.started.setdefault(label, (now, done))
        if self.bars is not None:
            if label not in self.tasks:
                self.tasks[label] = self.bars.add_task(label, total=total, detail=detail)
            self.bars.update(self.tasks[label], completed=done, total=total, detail=detail)
            return
        first = label not in self.last_line
        if first or now - self.last_line[label] >= self.every_s or done == total:
            self.last_line[label] = now
            line = f"{label}: {done}/{total}"
            elapsed = now - first_time
            if elapsed >= MIN_RATE_SECONDS:  # a label's first report: no time has passed to measure a rate by
                line += _rate_and_eta((done - first_done) / elapsed, total - done)
            typer.echo(f"{line}, {detail}" if detail else line, err=True)

    def track(self, label: str) -> Callable[[int, int], None]:
        """A ``(done, total)`` callback reporting under ``label``."""
        return functools.partial(self, label)

    def close(self) -> None:
        if self.bars is not None:
            self.bars.stop()


def _rate_and_eta(rate: float, left: int) -> str:
    """``, 3.1/s, ETA 20 s`` (or ``, 1.25 s each`` for slow work, such as a training step)."""
    pace = f"{rate:.1f}/s" if rate >= 1 or rate <= 0 else f"{1 / rate:.2f} s each"
    return f", {pace}, ETA {left / max(rate, 1e-9):.0f} s"


def print_json(payload: Any) -> None:
    """One JSON document on stdout."""
    typer.echo(json.dumps(payload, indent=2))


def require_model(model: str | None, how: str = "--model NAME") -> str:
    """The model a command was given, or the one-line error that says how to give one."""
    if not model:
        raise NeuronscopeError(f"no model given: pass {how} (`neuronscope models` lists them)")
    return model


def choose_model(argument: str | None, option: str | None, default: str | None = None) -> str:
    """A command's model from ``MODEL`` or ``--model`` (not both, unless equal)."""
    if argument and option and argument != option:
        raise NeuronscopeError(f"two models given ({argument!r} and --model {option!r}); give one")
    return require_model(argument or option or default, how="MODEL or --model NAME")


def require_out(out: str | None, command: str) -> str:
    """``--out ATLAS`` of a command that writes an atlas: given, and not a file (checked before any model
    loads), or the one-line error that says ``command`` needs it."""
    from neuronscope.atlas import check_atlas_target

    if not out:
        raise NeuronscopeError(f"{command} needs --out ATLAS (the atlas directory to write into)")
    check_atlas_target(out)
    return out


def fill_report(atlas: str | os.PathLike | None, run_id: int | None, model: str, layers: list[str], units: int,
                seconds: float, skipped: dict[str, int] | None = None, **extra: Any) -> dict[str, Any]:
    """CONVENTIONS' ``--json`` report of a command that fills an atlas (``atlas`` None: it wrote none, as
    ``visualize --png`` alone), then the command's own ``extra`` keys."""
    return {"atlas": None if atlas is None else str(atlas), "run_id": run_id, "model": model,
            "layers": list(layers), "units": units, "seconds": round(seconds, 3), "skipped": dict(skipped or {}),
            **extra}


#: Options that change how a command runs, not what it computes: left out of the command line a run records.
HOW_IT_RUNS = frozenset({"device", "json_out", "debug", "batch_size", "workers", "checkpoint_every"})


def recorded_command(context: typer.Context, model: LoadedModel, *, leave_out: Collection[str] = HOW_IT_RUNS,
                     paths: Collection[str] = (), threads: bool = False, **values: Any) -> str:
    """The command line a run records, built from the options in effect (``context``, the running command's),
    so that running it again reproduces the run: every option but ``leave_out``, with its value as given or
    defaulted, or as ``values`` replaces it (the canonical layer, say). ``--model`` is the model's key, which
    names its weights (weights from a local file: the architecture and ``--weights`` as given, since a
    ``NAME@sha256:...`` key cannot be loaded by itself), and ``--precision`` the one it ran at (``auto``
    resolves by device). The options are read from the command itself: a new one is recorded without anyone
    remembering to add it.

    No absolute paths (runs are shown in static exports): ``--out`` is the atlas's folder name, and the
    options named in ``paths`` are given as :func:`~neuronscope.probing.vocab.recorded_path` gives them.
    An option whose value is None is left out; a flag is written when set (``--no-X`` when it has one).
    ``threads``: also torch's intra-op thread count (``--threads N``) when the model runs on the CPU, for results
    that an optimiser amplifies from float rounding (a render), which that count changes.
    """
    from neuronscope.probing.vocab import recorded_path

    options = {param.name: param for param in context.command.params if param.param_type_name == "option"}
    unknown = set(values) - set(options)
    if unknown:
        raise ValueError(f"{context.info_name} has no option {sorted(unknown)}")
    given = {**context.params, **_recorded_model(context.params, model), "precision": model.precision.name,
             **values}
    words = ["neuronscope"]
    if threads and model.device.type == "cpu":
        import torch

        words += ["--threads", str(torch.get_num_threads())]
    words += _command_words(context)
    for name, option in options.items():
        value = given.get(name)
        if name in leave_out or value is None:
            continue
        if name == "out":
            value = Path(value).name
        elif name in paths:
            value = [recorded_path(v) for v in value] if option.multiple else recorded_path(value)
        words += _option_words(option, value)
    return shlex.join(words)


def _recorded_model(params: dict[str, Any], model: LoadedModel) -> dict[str, Any]:
    """``--model`` and ``--weights`` as a run records them: the key alone for registry, bundled and random
    weights; for a local file, the architecture and the file as given (a path given as ``--model``: itself)."""
    from neuronscope.probing.vocab import recorded_path

    if not model.spec.weights.startswith("sha256:"):  # a tag, bundled or random: the key loads them
        return {"model": model.key, "weights": None}
    if params.get("weights"):
        return {"model": model.spec.name, "weights": recorded_path(params["weights"])}
    return {"model": recorded_path(params["model"]), "weights": None}


def _command_words(context: typer.Context) -> list[str]:
    """The (sub)command names below the program: ``["scan"]``, ``["reproduce", "words"]``."""
    names = []
    while context.parent is not None:
        names.append(context.info_name or "")
        context = context.parent
    return names[::-1]


def _option_words(option: Any, value: Any) -> list[str]:
    """``--flag VALUE`` (repeated for a multiple option), or a flag's ``--flag`` / ``--no-flag`` / nothing."""
    flag = _long_name(option.opts)
    if option.is_flag:
        if value:
            return [flag]
        return [_long_name(option.secondary_opts)] if option.secondary_opts else []
    return [word for item in (value if option.multiple else [value]) for word in (flag, str(item))]


def _long_name(opts: list[str]) -> str:
    return next((opt for opt in opts if opt.startswith("--")), opts[0])


def load_cli_model(model: str, weights: str | None, device: str, precision: str):
    """``load_model`` for a command: an omitted ``--weights`` means the default weights, never random.

    (In the Python API ``weights=None`` is random init; on the command line
    random must be asked for with ``--weights random``.)
    """
    from neuronscope.models import DEFAULT, load_model

    return load_model(model, weights=weights or DEFAULT, device=device, precision=precision)
