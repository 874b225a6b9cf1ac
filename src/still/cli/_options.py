"""What the pipeline commands share: their options and how they open a run.

Each option is defined once here so `capture`, `grade`, `export` and the rest describe
`--role`, `--split` or `--max-cost` in the same words. Choices come from the library's own
`Literal`s (`RunRole`, `Keep`), so a command's parameter has the type the stage expects.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast, get_args

import click

from still.curate import Keep
from still.errors import StillError
from still.pipeline import ROLES

if TYPE_CHECKING:
    from still.cost import Budget
    from still.pipeline import Engine, Run

F = TypeVar("F", bound=Callable[..., Any])

TASK = click.argument("task_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
RUN_DIR = click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder (default: runs/<task name>). Holds the store, data, model and reports.",
)


def store_file(help: str) -> Callable[[F], F]:
    """`--db FILE`: a store file, `$STILL_DB` or ./still.db by default (the store, proxy,
    serve --shadow and monitor commands; a run's own store is in its run folder)."""
    return click.option(
        "--db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=lambda: os.environ.get("STILL_DB", "still.db"),
        show_default="$STILL_DB or ./still.db",
        help=help,
    )


ROLES_CHOICE = click.Choice(ROLES)
SPLIT = click.option(
    "--split",
    "split_name",
    type=click.Choice(["train", "validation", "heldout"]),
    default="train",
    show_default=True,
    help="train: the examples the teacher labels; validation: the ones choices are made "
    "on; heldout: the test split, read by the final comparison alone.",
)

KEEP = click.option(
    "--keep",
    type=click.Choice(get_args(Keep)),
    default="parsed",
    show_default=True,
    help="Which distilled student: parsed learns from every parseable teacher answer "
    "(teacher-only: no reference answer read, as with production data), written to the "
    "run folder; correct from the answers the graders confirm (grader-verified), written "
    "to <run>/verified/.",
)

STUDENTS = click.option(
    "--keep",
    type=click.Choice(get_args(Keep)),
    default=None,
    help="Train only this distilled student (default: the task's curate.students, both "
    "the teacher-only `parsed` one and the grader-verified `correct` one).",
)

MAX_COST = click.option(
    "--max-cost",
    type=click.FloatRange(min=0),
    default=None,
    metavar="DOLLARS",
    help="Stop before spending more than this on priced models in this command (answers "
    "already stored are free). The next request's cost is bounded with the model's "
    "tokenizer first, so the limit is not crossed; rerun with more to go on. See "
    "`still estimate`.",
)


def RAY(command: F) -> F:  # noqa: N802 - used as @RAY, beside the other option constants
    """`--ray` (a flag: a Ray instance on this machine) and `--ray-address ADDRESS` (a
    cluster), given to the command as one `ray_address` ("local", the address, or None).

    Two options rather than `--ray [ADDRESS]` with an optional value: click would read the
    task file in `still capture --ray task.yaml` as the address."""

    @functools.wraps(command)
    def merged(*args: Any, ray: bool, ray_address: str | None, **kwargs: Any) -> Any:
        return command(*args, ray_address=ray_address or ("local" if ray else None), **kwargs)

    merged = click.option(
        "--ray-address",
        "ray_address",
        metavar="ADDRESS",
        default=None,
        help="The Ray cluster for --ray (implies it): auto, host:port or ray://host:port.",
    )(merged)
    merged = click.option(
        "--ray",
        "ray",
        is_flag=True,
        help="Answer on Ray: blocks of requests go to Ray actors (each holding the model) and "
        "their answers are stored here as blocks finish; a Ray instance is started on this "
        "machine unless --ray-address names a cluster. Needs `pip install 'still[ray]'`.",
    )(merged)
    return cast(F, merged)


PROCESSES = click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Training processes (train.processes; default: one per GPU, or 1 on CPU).",
)


def ray_engine(address: str | None) -> Engine | None:
    """The engine `--ray` asks for (None: models answer in this process). Ray missing or
    an address where nothing listens fails here, before the run folder is touched."""
    if address is None:
        return None
    from still.capture_ray import RayEngine

    return RayEngine(address)


def role_option(help: str) -> Callable[[F], F]:
    """The --role option, with a help text per command."""
    return click.option(
        "--role", type=ROLES_CHOICE, default="teacher", show_default=True, help=help
    )


def budget(max_cost: float | None) -> Budget | None:
    """The spending limit `--max-cost` asks for (None: no limit)."""
    from still.cost import Budget

    return None if max_cost is None else Budget(max_cost)


def open_task(task_file: Path, run_dir: Path | None) -> Run:
    """Open a task's run (`still.pipeline.open_run`) and say what its data gave."""
    from still.pipeline import open_run

    with _loading():
        run = open_run(task_file, run_dir)
    _say_loaded(run)
    return run


def open_folder(run_dir: Path) -> Run:
    """Reopen an existing run folder (`still.pipeline.open_run_dir`), as `open_task` does."""
    from still.pipeline import open_run_dir

    with _loading():
        run = open_run_dir(run_dir)
    _say_loaded(run)
    return run


@contextmanager
def _loading() -> Iterator[None]:
    """Loading reads the user's files, so an `OSError` it raises is about one of them (an
    unreadable path): it becomes a `StillError`, shown as one line like every other user
    error (the library raises those for what is wrong inside the files)."""
    try:
        yield
    except OSError as exc:
        raise StillError(str(exc)) from exc


def _say_loaded(run: Run) -> None:
    """One stderr line: the task's name, what loading kept and dropped, the split sizes."""
    click.echo(
        f"{run.task.name}: {run.load_report.summary()}; {len(run.split.train)} train, "
        f"{len(run.split.validation)} validation, {len(run.split.heldout)} held-out test, "
        f"{len(run.split.fewshot)} few-shot",
        err=True,
    )
