"""`still store`: list, show and export the completions a store holds.

A thin layer over `still.store.Store`: every command opens an existing store file (never
creates one: a mistyped --db is an error, not a new empty store), applies the same
filters and prints with rich. Stored text is printed as text, never as rich markup.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from still.cli._options import store_file
from still.store import Store

F = TypeVar("F", bound=Callable[..., Any])

_DB = store_file("The store file (a run keeps one at runs/<task>/still.db).")


def _parse_meta(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    """Turn repeated `--meta key=value` options into a dict (a value may contain `=`)."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        out[key] = value
    return out


_FILTERS = [
    click.option("--model", default=None, help="Only completions of this model reference."),
    click.option(
        "--meta",
        multiple=True,
        callback=_parse_meta,
        metavar="KEY=VALUE",
        help="Only completions tagged KEY=VALUE (repeatable; all must match).",
    ),
    click.option(
        "--errors/--ok",
        "errors",
        default=None,
        help="Only failed (--errors) or only successful (--ok) completions.  [default: both]",
    ),
]


def _filters(f: F) -> F:
    """Add the shared --model/--meta/--errors options to a command."""
    for option in reversed(_FILTERS):
        f = option(f)
    return f


def _open(db: Path) -> Store:
    if not db.is_file():
        raise click.ClickException(f"no store at {db} (pass --db or set STILL_DB)")
    return Store(db)


def _console() -> Console:
    """A console at least 150 columns wide: pipes and CI logs default to 80, which folds
    every cell of a six-column table into several lines."""
    return Console(width=max(Console().width, 150))


@click.group("store")
def store() -> None:
    """Inspect the completion store: every model call of a run, failed ones too.

    \b
    Each run keeps its store at runs/<task>/still.db; --db picks one (default: $STILL_DB,
    else ./still.db). Filters combine: --model, --meta KEY=VALUE (repeatable) and
    --errors/--ok.

    \b
    Examples:
      still store ls --db runs/trec/still.db --meta role=teacher --errors
      still store show --db runs/trec/still.db cmpl-0123456789abcdef01234567
      still store export --db runs/trec/still.db --meta split=train train.jsonl
      still store import --db prod.db listing.json --messages messages/
    """


@store.command("ls")
@_DB
@_filters
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Show the last N matches (0: all).",
)
def ls(db: Path, model: str | None, meta: dict[str, str], errors: bool | None, limit: int) -> None:
    """List matching completions, newest last, then how many match in all.

    Columns: id, model, metadata tags, the first 60 characters of the answer (or the
    error, in red), total tokens and latency.
    """
    with _open(db) as s:
        total = s.count(model=model, metadata=meta, errors=errors)
        offset = 0 if limit == 0 else max(0, total - limit)
        rows = s.list(model=model, metadata=meta, errors=errors, limit=limit or None, offset=offset)
    table = Table()
    table.add_column("id", no_wrap=True)
    for col in ("model", "metadata", "answer / error"):
        table.add_column(col)
    table.add_column("tokens", justify="right")
    table.add_column("latency s", justify="right")
    for c in rows:
        body = (c.error if c.error is not None else c.text).replace("\n", " ")[:60]
        table.add_row(
            Text(c.id),
            Text(c.model),
            Text(" ".join(f"{k}={v}" for k, v in sorted(c.metadata.items()))),
            Text(body, style="red" if c.error is not None else ""),
            str(c.usage.total_tokens),
            f"{c.latency_s:.3f}",
        )
    console = _console()
    console.print(table)
    console.print(f"{total} completions match")


@store.command("show")
@_DB
@click.argument("completion_id")
def show(db: Path, completion_id: str) -> None:
    """Print one completion as indented JSON.

    COMPLETION_ID is an id as `ls` lists it (cmpl-...). The JSON holds the request, the
    answer or error, usage, latency and tags. Exits with status 1 when there is no such
    completion.
    """
    with _open(db) as s:
        c = s.get(completion_id)
    if c is None:
        raise click.ClickException(f"no completion {completion_id!r} in {db}")
    click.echo(json.dumps(c.model_dump(mode="json"), indent=2, ensure_ascii=False))


@store.command("export")
@_DB
@_filters
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["completions", "chat"]),
    default="completions",
    show_default=True,
    help="completions: one full Completion per line (what `show` prints). chat: the OpenAI "
    "fine-tuning format, {'messages': [...prompt, answer]}, successful completions only.",
)
@click.argument("out", type=click.Path(dir_okay=False, writable=True, path_type=Path))
def export(
    db: Path, model: str | None, meta: dict[str, str], errors: bool | None, fmt: str, out: Path
) -> None:
    """Write matching completions to OUT as JSONL.

    The completions format reads back with `Completion.model_validate_json`; the chat
    format is what `still train`, OpenAI fine-tuning and TRL's SFTTrainer read.
    """
    with _open(db) as s:
        if fmt == "chat":
            if errors:
                raise click.UsageError("--format chat writes answers; failed calls have none")
            n = s.export_chat_jsonl(out, model=model, metadata=meta)
        else:
            n = s.export_jsonl(out, model=model, metadata=meta, errors=errors)
    click.echo(f"{n} completions written to {out}")


@store.command("import")
@store_file("The store to import into (created when missing).")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--messages",
    "messages_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of <completion id>.json files, as GET /v1/chat/completions/<id>/messages "
    "returns them (the list endpoint leaves input messages out).",
)
@click.option(
    "--model",
    "model_ref",
    default=None,
    help="Store every row under this model reference (default: <provider>:<the row's model>).",
)
@click.option(
    "--provider",
    type=click.Choice(["openai", "azure"]),
    default="openai",
    show_default=True,
    help="Scheme for the model names rows give, e.g. openai:gpt-4o-mini.",
)
@click.option(
    "--meta",
    multiple=True,
    callback=_parse_meta,
    metavar="KEY=VALUE",
    help="Tag every imported completion (repeatable); source=import is always added.",
)
@click.option(
    "--skip-bad", is_flag=True, help="Leave malformed rows out (listed) instead of failing."
)
def import_cmd(
    db: Path,
    files: tuple[Path, ...],
    messages_dir: Path | None,
    model_ref: str | None,
    provider: str,
    meta: dict[str, str],
    skip_bad: bool,
) -> None:
    """Import completions answered elsewhere, so production traffic can be graded and
    distilled without calling the teacher again.

    \b
    FILES may be:
      - OpenAI/Azure stored-completion listings: the JSON of GET /v1/chat/completions
        ({"object": "list", "data": [...]}) or its items one per line; input messages
        from each item (input_messages/messages) or from --messages;
      - chat JSONL: {"messages": [..., {"role": "assistant", "content": ...}]};
      - request logs: {"request": {...}, "response": <chat.completion>} per line.
    A malformed row stops the import naming its file and line, before anything of that
    file is written (or is listed and left out with --skip-bad). Importing a file twice
    stores its rows once.
    """
    from still.store import read_traffic

    added = seen = 0
    with Store(db) as s:
        for f in files:
            try:
                res = read_traffic(
                    f,
                    messages_dir=messages_dir,
                    model=model_ref,
                    provider=provider,
                    metadata=meta,
                    skip_bad=skip_bad,
                )
            except OSError as exc:  # a malformed row is an ImportFormatError, a StillError
                raise click.ClickException(str(exc)) from None
            for line in res.bad:
                click.echo(f"skipped {line}", err=True)
            new = s.put_new(res.completions)
            added += new
            seen += len(res.completions) - new
            click.echo(
                f"{f}: {len(res.completions)} completions read, {new} new"
                + (f", {len(res.bad)} bad rows left out" if res.bad else "")
            )
    click.echo(f"{added} imported into {db}; {seen} were already there")
