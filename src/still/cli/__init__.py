"""The `still` command line: a thin layer, each command calls one library function.

Heavy libraries are imported inside commands, so `still --help` stays instant.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from still.cli.analysis import check_grader_cmd, curve_cmd, estimate_cmd, select_cmd, tune_cmd
from still.cli.export import export_dpo_cmd, export_gguf_cmd
from still.cli.models import models_cmd
from still.cli.monitor import monitor_cmd
from still.cli.proxy import proxy_cmd
from still.cli.serve import serve_cmd
from still.cli.stages import (
    bench_cmd,
    capture_cmd,
    export_cmd,
    grade_cmd,
    report_cmd,
    run_cmd,
    train_cmd,
)
from still.cli.store import store
from still.cli.synthesize import synthesize_cmd
from still.errors import StillError

USER_ERRORS: tuple[type[Exception], ...] = (StillError,)
"""What the CLI shows as one line: the library raises a `StillError` for every mistake a
user can fix (a bad task file, an unknown model, a missing API key, training data that
does not fit). Every other exception (ValueError, KeyError, TypeError, ...) is a bug and
keeps its traceback."""


class _Still(click.Group):
    """The root group: the one place where an error becomes what the user sees.

    A user error (`USER_ERRORS`: a bad task file, a stage run out of order, a budget
    reached) has a message that says what to do, so it is printed as one line,
    `Error: <message>`, with exit status 1; `still -v` shows its traceback too. Any other
    exception is a bug in still and keeps its traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            if ctx.params.get("verbose"):
                raise
            raise click.ClickException(str(exc)) from exc


def _quiet_libraries(verbose: bool) -> None:
    """Log still's progress at INFO and other libraries' only from WARNING, so a capture
    through an endpoint does not print a line per HTTP request; with -v, still logs at
    DEBUG and the libraries at INFO (their requests, not their internals)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("still").setLevel(logging.DEBUG if verbose else logging.INFO)


@click.group(cls=_Still, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging and error tracebacks.")
@click.version_option(package_name="still")
def main(verbose: bool) -> None:
    """still: distil one task from a large model into a small, cheap one.

    \b
    A typical session:
      still models                         what can answer (bundled models, schemes)
      still estimate examples/trec/task.yaml   tokens and dollars before a run
      still run examples/trec/task.yaml    capture -> export -> train -> bench
    or stage by stage:
      still capture TASK --role teacher --split train
      still grade TASK --role teacher --split train
      still export TASK
      still train TASK
      still bench TASK
      still store ls --db runs/<task>/still.db
      still serve local:runs/<task>/distilled-<hash>   OpenAI-compatible API
      still proxy openai: --db prod.db     record production traffic to distil from
      still serve STUDENT --shadow TEACHER --db prod.db   shadow the student
      still monitor --db prod.db           its agreement with the teacher, per tag
    """
    from still.settings import load_dotenv

    load_dotenv()
    _quiet_libraries(verbose)


main.add_command(models_cmd)
main.add_command(select_cmd)
main.add_command(estimate_cmd)
main.add_command(synthesize_cmd)
main.add_command(capture_cmd)
main.add_command(grade_cmd)
main.add_command(check_grader_cmd)
main.add_command(export_cmd)
main.add_command(export_dpo_cmd)
main.add_command(train_cmd)
main.add_command(curve_cmd)
main.add_command(tune_cmd)
main.add_command(export_gguf_cmd)
main.add_command(bench_cmd)
main.add_command(report_cmd)
main.add_command(run_cmd)
main.add_command(store)
main.add_command(serve_cmd)
main.add_command(proxy_cmd)
main.add_command(monitor_cmd)
