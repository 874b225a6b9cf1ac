"""The completion store: SQLite, content-addressed, with stored-completions semantics.

Every model call (failed ones too) is a row: its request, response, usage, latency, cost,
error and up to 16 string metadata tags, as OpenAI's stored completions define them.
`lookup(request_hash)` answers a repeated request from the store, which is what makes
every stage resumable and a rerun free. Rows are committed as they are written, so a
SIGKILL loses nothing already `put`.

This is the only module in `still` that knows SQL. Every user-supplied value (model
names, metadata keys and values, ids) reaches SQLite as a bound parameter, never as
SQL text.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from still.settings import scrub
from still.store._migrations import migrate
from still.types import HASH_ALGORITHM, Completion, Grade, Request, Usage

MAX_METADATA_KEYS = 16
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 512

_COLUMNS = (
    "id", "request_hash", "hash_algorithm", "model", "request", "text", "finish_reason",
    "prompt_tokens", "completion_tokens", "latency_s", "cost", "error", "label_logprobs",
    "token_logprobs", "metadata", "created_at", "cached", "attempts", "tokens", "top_logprobs",
    "ttft_s",
)  # fmt: skip
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM completions"
_INSERT = (
    f"INSERT INTO completions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
)
# Metadata keys that SQLite's JSON path `$."key"` addresses reliably: printable ASCII but
# `"` and `\`. SQLite compares the path's label with the key as spelled in the JSON text,
# so a key that JSON escapes (quote, backslash, non-ASCII) is matched with json_each.
_PLAIN_KEY = re.compile(r"[ !#-\[\]-~]+").fullmatch


def check_metadata(metadata: Mapping[str, str]) -> None:
    """Enforce OpenAI's stored-completions limits on metadata tags.

    Args:
        metadata: the tags of one completion.

    Raises:
        ValueError: more than 16 keys, a key that is not a 1-64 character string, or a
            value that is not a string of at most 512 characters; the message names the key.
    """
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValueError(
            f"metadata has {len(metadata)} keys; at most {MAX_METADATA_KEYS} are allowed"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS:
            raise ValueError(f"metadata key {key!r} must be a string of 1-{MAX_KEY_CHARS} chars")
        if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
            raise ValueError(
                f"metadata value of key {key!r} must be a string of at most {MAX_VALUE_CHARS} "
                f"chars (got {type(value).__name__} of length {len(str(value))})"
            )


class Store:
    """A SQLite completion store in one file, safe to share between threads and processes.

    Args:
        path: the database file; it and its folder are created when missing, and its
            schema is migrated to the current version.

    Use it as a context manager, or call `close()`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.reads: Counter[str] = Counter()
        """Answers `lookup` returned since this Store was opened, by their `split` tag
        ("" untagged): which splits' answers a stage read (`still tune` reads no test one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # Autocommit mode: every write below opens and commits its own transaction.
        self._conn = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.execute("PRAGMA busy_timeout = 30000")
            self._conn.execute("PRAGMA journal_mode = WAL")
            migrate(self._conn)
        except BaseException:
            self._conn.close()
            raise

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (everything written is already committed). Idempotent."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, committed on exit, rolled back on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, args: Iterable[Any] = ()) -> builtins.list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, tuple(args)).fetchall()

    # -- completions ------------------------------------------------------------------
    def put(self, completion: Completion) -> Completion:
        """Store one completion and commit it before returning.

        Args:
            completion: the completion; an empty `request_hash` is filled in.

        Returns:
            The completion as stored (with its request hash).

        Raises:
            ValueError: its metadata break the limits (see `check_metadata`), or its
                `request_hash` is not its request's key.
            sqlite3.IntegrityError: a completion with this id is already stored.
        """
        return self.put_many([completion])[0]

    def put_many(self, completions: Iterable[Completion]) -> builtins.list[Completion]:
        """Store several completions in one transaction, committed before returning.

        All are checked first: if one is invalid, none is stored.

        Args:
            completions: the completions, in order.

        Returns:
            The completions as stored, in the same order.

        Raises:
            ValueError: as for `put`.
        """
        out = [_prepare(c) for c in completions]
        with self._transaction() as conn:
            conn.executemany(_INSERT, [_to_row(c) for c in out])
        return out

    def put_new(self, completions: Iterable[Completion]) -> int:
        """Store the completions whose id is not stored yet, in one transaction; returns
        how many were new. What makes imports idempotent.

        Raises:
            ValueError: as for `put` (checked for all before any is written).
        """
        out = [_prepare(c) for c in completions]
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                _INSERT.replace("INSERT", "INSERT OR IGNORE", 1), [_to_row(c) for c in out]
            )
            return conn.total_changes - before

    def lookup(self, request_hash: str, include_failed: bool = False) -> Completion | None:
        """The stored answer to a request, to reuse instead of calling the model again.

        Args:
            request_hash: `Request.key()` of the request.
            include_failed: also return a failed attempt when no success is stored (for
                reports that count failures); by default failed ones are never returned,
                so a rerun retries them.

        Returns:
            The most recent successful completion of the request (then the most recent
            failed one, if asked), or None.
        """
        sql = f"{_SELECT} WHERE request_hash = ? AND hash_algorithm = ?"
        if not include_failed:
            sql += " AND error IS NULL"
        sql += " ORDER BY error IS NULL DESC, created_at DESC, rowid DESC LIMIT 1"
        rows = self._query(sql, (request_hash, HASH_ALGORITHM))
        if not rows:
            return None
        hit = _from_row(rows[0])
        self.reads[hit.metadata.get("split", "")] += 1
        return hit

    def get(self, completion_id: str) -> Completion | None:
        """A completion by its id, or None."""
        rows = self._query(f"{_SELECT} WHERE id = ?", (completion_id,))
        return _from_row(rows[0]) if rows else None

    def list(
        self,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
        errors: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
        cached: bool | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> builtins.list[Completion]:
        """Completions matching every filter given, oldest first.

        Args:
            model: only this model reference.
            metadata: only completions carrying every one of these tags (equal values).
            errors: True for failed completions only, False for successful ones only.
            limit: at most this many (None: all).
            offset: skip this many first.
            cached: only completions whose `cached` flag is this.
            since: only completions created at or after this time (Unix seconds).
            until: only completions created before this time (Unix seconds).

        Returns:
            The completions ordered by `created_at` (then insertion order).
        """
        where, args = _where(model, metadata, errors, cached, since, until)
        sql = f"{_SELECT} WHERE {where} ORDER BY created_at, rowid LIMIT ? OFFSET ?"
        args += [-1 if limit is None else limit, offset]
        return [_from_row(r) for r in self._query(sql, args)]

    def count(
        self,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
        errors: bool | None = None,
        cached: bool | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """How many completions match every filter given (same filters as `list`)."""
        where, args = _where(model, metadata, errors, cached, since, until)
        return int(self._query(f"SELECT COUNT(*) FROM completions WHERE {where}", args)[0][0])

    def models(self) -> builtins.list[tuple[str, int]]:
        """Each distinct model with its number of completions, by model name."""
        rows = self._query("SELECT model, COUNT(*) FROM completions GROUP BY model ORDER BY model")
        return [(str(m), int(n)) for m, n in rows]

    def export_jsonl(
        self,
        path: str | Path,
        *,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
        errors: bool | None = None,
        cached: bool | None = None,
    ) -> int:
        """Write matching completions to a JSONL file, one `Completion` per line.

        Rows are streamed, not loaded at once; the file is written beside `path` and
        renamed into place, so an interrupted export never leaves a partial file.

        Args:
            path: the output file (its folder is created when missing).
            model, metadata, errors, cached: filters, as for `list`.

        Returns:
            The number of completions written.
        """
        where, args = _where(model, metadata, errors, cached)
        return self._write_lines(path, where, args, lambda c: c.model_dump_json())

    def export_chat_jsonl(
        self,
        path: str | Path,
        *,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        """Write successful matching completions as chat JSONL (the OpenAI fine-tuning
        format): `{"messages": [...the request's messages, the answer]}` per line.

        Written beside `path` and renamed into place. Returns the number of rows.
        """
        where, args = _where(model, metadata, False, None)

        def line(c: Completion) -> str:
            msgs = [m.model_dump() for m in c.request.messages]
            msgs.append({"role": "assistant", "content": c.text})
            return json.dumps({"messages": msgs}, ensure_ascii=False)

        return self._write_lines(path, where, args, line)

    def _write_lines(
        self,
        path: str | Path,
        where: str,
        args: builtins.list[Any],
        line: Callable[[Completion], str],
    ) -> int:
        """Stream matching rows to a file, one line each, oldest first; the file is
        written beside `path` and renamed into place, so an interrupted export never
        leaves a partial file. Returns the number of lines."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        n = 0
        try:
            with self._lock, tmp.open("w", encoding="utf-8") as f:
                for row in self._conn.execute(
                    f"{_SELECT} WHERE {where} ORDER BY created_at, rowid", args
                ):
                    f.write(line(_from_row(row)) + "\n")
                    n += 1
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return n

    # -- grades ------------------------------------------------------------------------
    def put_grades(self, grades: Iterable[Grade]) -> None:
        """Store grades in one transaction; a regrade (same grader, example and
        completion) replaces the previous grade. Error text is scrubbed of secrets first
        (a grader's error may quote what it read)."""
        now = time.time()
        rows = [
            (g.grader, g.example_id, g.completion_id or "", g.score, int(g.passed),
             None if g.error is None else scrub(g.error), now)
            for g in grades
        ]  # fmt: skip
        with self._transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO grades VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def grades(
        self, grader: str | None = None, completion_ids: Iterable[str] | None = None
    ) -> builtins.list[Grade]:
        """Stored grades in the order they were (last) written.

        Args:
            grader: only this grader's grades (None: all).
            completion_ids: only the grades of these completions (None: all).
        """
        if completion_ids is not None:
            ids = builtins.list(dict.fromkeys(completion_ids))
            # in chunks: SQLite caps the number of bound parameters of one statement
            return [
                g for i in range(0, len(ids), 500) for g in self._grades(grader, ids[i : i + 500])
            ]
        return self._grades(grader, None)

    def _grades(
        self, grader: str | None, completion_ids: builtins.list[str] | None
    ) -> builtins.list[Grade]:
        sql = "SELECT grader, example_id, completion_id, score, passed, error FROM grades"
        clauses: builtins.list[str] = []
        args: builtins.list[Any] = []
        if grader is not None:
            clauses.append("grader = ?")
            args.append(grader)
        if completion_ids is not None:
            clauses.append(f"completion_id IN ({', '.join('?' * len(completion_ids))})")
            args += completion_ids
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return [
            Grade(
                grader=g, example_id=e, completion_id=c or None, score=s, passed=bool(p), error=err
            )
            for g, e, c, s, p, err in self._query(sql + " ORDER BY rowid", args)
        ]


def _where(
    model: str | None,
    metadata: Mapping[str, str] | None,
    errors: bool | None,
    cached: bool | None,
    since: float | None = None,
    until: float | None = None,
) -> tuple[str, list[Any]]:
    """A WHERE clause of fixed SQL fragments, and the bound values that go with it."""
    clauses = ["1 = 1"]
    args: list[Any] = []
    if model is not None:
        clauses.append("model = ?")
        args.append(model)
    for key, value in (metadata or {}).items():
        if _PLAIN_KEY(key):
            clauses.append("json_extract(metadata, ?) = ?")
            args += [f'$."{key}"', value]
        else:
            clauses.append(
                "EXISTS (SELECT 1 FROM json_each(completions.metadata) AS m"
                " WHERE m.key = ? AND m.value = ?)"
            )
            args += [key, value]
    if errors is not None:
        clauses.append("error IS NOT NULL" if errors else "error IS NULL")
    if cached is not None:
        clauses.append("cached = ?")
        args.append(int(cached))
    if since is not None:
        clauses.append("created_at >= ?")
        args.append(since)
    if until is not None:
        clauses.append("created_at < ?")
        args.append(until)
    return " AND ".join(clauses), args


def _prepare(c: Completion) -> Completion:
    """Check a completion before it is stored and fill in its request hash."""
    try:
        check_metadata(c.metadata)
    except ValueError as exc:
        raise ValueError(f"completion {c.id}: {exc}") from None
    key = c.request.key()
    if not c.request_hash:
        return c.model_copy(update={"request_hash": key})
    if c.request_hash != key:
        raise ValueError(
            f"completion {c.id}: request_hash {c.request_hash[:12]}... is not its request's "
            f"key {key[:12]}...; a wrong hash would answer other requests with it"
        )
    return c


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _to_row(c: Completion) -> tuple[Any, ...]:
    """A completion as the values of `_COLUMNS`, in order."""
    return (
        c.id,
        c.request_hash,
        HASH_ALGORITHM,
        c.model,
        c.request.model_dump_json(),
        c.text,
        c.finish_reason,
        c.usage.prompt_tokens,
        c.usage.completion_tokens,
        c.latency_s,
        c.cost,
        c.error,
        _json_or_none(c.label_logprobs),
        _json_or_none(c.token_logprobs),
        json.dumps(c.metadata, sort_keys=True),
        c.created_at,
        int(c.cached),
        c.attempts,
        _json_or_none(c.tokens),
        _json_or_none(c.top_logprobs),
        c.ttft_s,
    )


def _from_row(row: tuple[Any, ...]) -> Completion:
    """The completion a row of `_COLUMNS` holds."""
    r = dict(zip(_COLUMNS, row, strict=True))
    return Completion(
        id=r["id"],
        request=Request.model_validate_json(r["request"]),
        request_hash=r["request_hash"],
        text=r["text"] or "",
        finish_reason=r["finish_reason"],
        usage=Usage(
            prompt_tokens=r["prompt_tokens"] or 0, completion_tokens=r["completion_tokens"] or 0
        ),
        latency_s=r["latency_s"] or 0.0,
        cost=r["cost"],
        error=r["error"],
        label_logprobs=None if r["label_logprobs"] is None else json.loads(r["label_logprobs"]),
        token_logprobs=None if r["token_logprobs"] is None else json.loads(r["token_logprobs"]),
        metadata=json.loads(r["metadata"]),
        created_at=r["created_at"],
        cached=bool(r["cached"]),
        attempts=r["attempts"],
        tokens=None if r["tokens"] is None else json.loads(r["tokens"]),
        top_logprobs=None if r["top_logprobs"] is None else json.loads(r["top_logprobs"]),
        ttft_s=r["ttft_s"],
    )
