"""`still monitor`: the served student's agreement with its shadowing teacher, per tag."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from still.cli._options import store_file


def _tags(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        out[key] = value
    return out


@click.command("monitor")
@store_file("The store `still serve --shadow` writes.")
@click.option(
    "--last",
    default=200,
    show_default=True,
    type=click.IntRange(0),
    help="Each row counts its last N shadowed requests (0: all in --minutes).",
)
@click.option(
    "--minutes", default=None, type=click.FloatRange(min=0, min_open=True),
    help="Only requests of the last T minutes.",
)  # fmt: skip
@click.option(
    "--by",
    multiple=True,
    metavar="KEY",
    help="Rows for these tag keys only (repeatable; default: every key=value seen).",
)
@click.option(
    "--tag",
    "metadata",
    multiple=True,
    callback=_tags,
    metavar="KEY=VALUE",
    help="Only requests tagged KEY=VALUE (repeatable; all must match).",
)
@click.option("--model", default=None, help="Only this student model reference.")
@click.option("--watch", is_flag=True, help="Refresh until interrupted.")
@click.option(
    "--interval", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
    help="With --watch: seconds between refreshes.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def monitor_cmd(
    db: Path,
    last: int,
    minutes: float | None,
    by: tuple[str, ...],
    metadata: dict[str, str],
    model: str | None,
    watch: bool,
    interval: float,
    as_json: bool,
) -> None:
    """Show how often the student served by `still serve --shadow` agrees with its
    teacher: per tag, the agreement rate and each grader's pass rate (with --task) with
    95% Wilson intervals, over the last N requests or T minutes.

    Requests whose teacher failed are counted apart ("no teacher"); a request the
    student failed counts as a disagreement. --json prints the same rows as JSON (one
    document, or one line per refresh with --watch).
    """
    from rich.console import Console

    from still.monitor import Window, read_summaries, table, to_json

    if not db.is_file():
        raise click.ClickException(f"no store at {db} (pass --db or set STILL_DB)")
    window = Window(last or None, minutes, metadata, model, by or None)
    span = f"last {last}" if last else "all"
    title = f"{db}: shadow agreement, {span}" + (f", {minutes:g} min" if minutes else "")

    def render() -> Any:
        rows = read_summaries(db, window)
        if as_json:
            return json.dumps(to_json(rows), indent=None if watch else 2)
        return table(rows, f"{title} ({time.strftime('%H:%M:%S')})")

    console = Console(width=max(150, Console().width))

    def show() -> None:
        if as_json:  # as it is: no markup, no colours, one line per refresh with --watch
            click.echo(render())
        else:
            console.print(render())

    if not watch:
        show()
        return
    try:
        if as_json or not console.is_terminal:  # a pipe or a log: one print per refresh
            while True:
                show()
                sys.stdout.flush()
                time.sleep(interval)
        from rich.live import Live

        with Live(render(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(), refresh=True)
    except KeyboardInterrupt:  # Ctrl-C ends --watch: not an error
        return
