"""`still store`: list, show and export stored completions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

DB = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=lambda: os.environ.get("STILL_DB", "still.db"),
    show_default="$STILL_DB or still.db",
    help="The store file (a run keeps one at runs/<task>/still.db).",
)


def _meta(_: click.Context, __: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"{v!r} is not key=value")
        key, _sep, value = v.partition("=")
        out[key] = value
    return out


FILTERS = [
    click.option("--model", default=None, help="Only this model reference."),
    click.option(
        "--meta",
        multiple=True,
        callback=_meta,
        metavar="KEY=VALUE",
        help="Only completions tagged KEY=VALUE (repeatable; all must match).",
    ),
    click.option(
        "--errors/--ok",
        "errors",
        default=None,
        help="Only failed (--errors) or only successful (--ok) completions.",
    ),
]


def filters(f: click.decorators.FC) -> click.decorators.FC:
    for opt in reversed(FILTERS):
        f = opt(f)
    return f


def _open(db: Path):  # type: ignore[no-untyped-def]
    from still.store import Store

    if not db.is_file():
        raise click.ClickException(f"no store at {db}")
    return Store(db)


@click.group("store")
def store() -> None:
    """Inspect the completion store (SQLite; one per run folder)."""


@store.command("ls")
@DB
@filters
@click.option("--limit", type=int, default=20, show_default=True)
def ls(db: Path, model: str | None, meta: dict[str, str], errors: bool | None, limit: int) -> None:
    """List completions, newest last, with a total count."""
    from rich.table import Table

    from still.report import console as make_console

    with _open(db) as s:
        total = s.count(model=model, metadata=meta, errors=errors)
        rows = s.list(
            model=model, metadata=meta, errors=errors, limit=limit, offset=max(0, total - limit)
        )
    table = Table()
    for col in ("id", "model", "metadata", "answer / error", "tokens", "latency s"):
        table.add_column(col)
    for c in rows:
        body = f"[red]{c.error}[/red]" if c.error else c.text.replace("\n", " ")
        table.add_row(
            c.id,
            c.model[-40:],
            " ".join(f"{k}={v}" for k, v in c.metadata.items()),
            body[:60],
            str(c.usage.total_tokens),
            f"{c.latency_s:.3f}",
        )
    console = make_console()
    console.print(table)
    console.print(f"{total} completions match")


@store.command("show")
@DB
@click.argument("completion_id")
def show(db: Path, completion_id: str) -> None:
    """Print one completion as JSON."""
    with _open(db) as s:
        c = s.get(completion_id)
    if c is None:
        raise click.ClickException(f"no completion {completion_id!r} in {db}")
    click.echo(json.dumps(c.model_dump(mode="json"), indent=2))


@store.command("export")
@DB
@filters
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def export(
    db: Path, model: str | None, meta: dict[str, str], errors: bool | None, out: Path
) -> None:
    """Write matching completions to OUT as JSONL (one completion per line)."""
    with _open(db) as s:
        n = s.export_jsonl(out, model=model, metadata=meta, errors=errors)
    click.echo(f"{n} completions written to {out}")
