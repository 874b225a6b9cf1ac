"""The completion store: SQLite, content-addressed, with stored-completions semantics.

Every completion (failed ones too) is a row with its model, request, response, usage,
latency, error and up to 16 metadata tags, as OpenAI's stored completions define them.
`lookup(request_hash)` answers a repeated request from the store, which is what makes
every stage resumable. Rows are committed as they are written: a SIGKILL loses nothing
already put. This is the only module that knows SQL.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from still.store._migrations import migrate
from still.types import HASH_ALGORITHM, Completion, Grade, Request, Usage

MAX_TAGS, MAX_KEY, MAX_VALUE = 16, 64, 512
_COLS = (
    "id, request_hash, hash_algorithm, model, request, text, finish_reason, prompt_tokens, "
    "completion_tokens, latency_s, cost, error, label_logprobs, token_logprobs, metadata, "
    "created_at, cached"
)


def check_metadata(metadata: dict[str, str]) -> None:
    """Enforce the stored-completions limits: 16 tags, keys <= 64, values <= 512 chars."""
    if len(metadata) > MAX_TAGS:
        raise ValueError(f"metadata has {len(metadata)} keys; at most {MAX_TAGS} allowed")
    for key, value in metadata.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY:
            raise ValueError(f"metadata key {key!r} must be a string of 1-{MAX_KEY} characters")
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise ValueError(f"metadata value of {key!r} must be a string of <= {MAX_VALUE} chars")


class Store:
    """A SQLite completion store at `path` (created with its folder if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        migrate(self._conn)

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    # -- completions ---------------------------------------------------------------------
    def put(self, completion: Completion) -> Completion:
        """Store one completion and commit; returns it with its request hash filled in."""
        return self.put_many([completion])[0]

    def put_many(self, completions: Sequence[Completion]) -> builtins.list[Completion]:
        """Store several completions in one transaction (committed before returning)."""
        out = []
        for c in completions:
            check_metadata(c.metadata)
            out.append(
                c if c.request_hash else c.model_copy(update={"request_hash": c.request.key()})
            )
        with self._conn:
            self._conn.executemany(
                f"INSERT INTO completions ({_COLS}) VALUES ({', '.join('?' * 17)})",
                [_to_row(c) for c in out],
            )
        return out

    def lookup(self, request_hash: str, include_failed: bool = False) -> Completion | None:
        """The latest successful completion of a request.

        Failed ones are not reused (a rerun retries them) unless `include_failed`, which
        returns the latest attempt of any outcome, for reports that count failures.
        """
        ok = "" if include_failed else " AND error IS NULL"
        row = self._conn.execute(
            f"SELECT {_COLS} FROM completions WHERE request_hash = ?{ok} "
            "ORDER BY error IS NULL DESC, created_at DESC LIMIT 1",
            (request_hash,),
        ).fetchone()
        return _from_row(row) if row else None

    def get(self, completion_id: str) -> Completion | None:
        """A completion by id."""
        row = self._conn.execute(
            f"SELECT {_COLS} FROM completions WHERE id = ?", (completion_id,)
        ).fetchone()
        return _from_row(row) if row else None

    def _where(
        self,
        model: str | None,
        metadata: dict[str, str] | None,
        errors: bool | None,
        cached: bool | None = None,
    ) -> tuple[str, list[Any]]:
        clauses: builtins.list[str] = ["1=1"]
        args: builtins.list[Any] = []
        if model is not None:
            clauses.append("model = ?")
            args.append(model)
        for key, value in (metadata or {}).items():
            clauses.append("json_extract(metadata, ?) = ?")
            args += ['$."' + key.replace('"', "") + '"', value]
        if errors is not None:
            clauses.append("error IS NOT NULL" if errors else "error IS NULL")
        if cached is not None:
            clauses.append("cached = ?")
            args.append(int(cached))
        return " AND ".join(clauses), args

    def list(
        self,
        model: str | None = None,
        metadata: dict[str, str] | None = None,
        errors: bool | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[Completion]:
        """Completions filtered by model, metadata tags (all must match) and error state."""
        where, args = self._where(model, metadata, errors)
        sql = f"SELECT {_COLS} FROM completions WHERE {where} ORDER BY created_at, rowid"
        sql += " LIMIT ? OFFSET ?"
        args += [limit if limit is not None else -1, offset]
        return [_from_row(r) for r in self._conn.execute(sql, args)]

    def count(
        self,
        model: str | None = None,
        metadata: dict[str, str] | None = None,
        errors: bool | None = None,
        cached: bool | None = None,
    ) -> int:
        """How many completions match the filters."""
        where, args = self._where(model, metadata, errors, cached)
        return int(
            self._conn.execute(f"SELECT COUNT(*) FROM completions WHERE {where}", args).fetchone()[
                0
            ]
        )

    def models(self) -> builtins.list[tuple[str, int]]:
        """Distinct models with their completion counts."""
        return [
            (m, n)
            for m, n in self._conn.execute(
                "SELECT model, COUNT(*) FROM completions GROUP BY model ORDER BY model"
            )
        ]

    def export_jsonl(self, path: str | Path, **filters: Any) -> int:
        """Write matching completions as JSONL (one `Completion` per line); returns the count."""
        rows = self.list(**filters)
        with Path(path).open("w") as f:
            for c in rows:
                f.write(c.model_dump_json() + "\n")
        return len(rows)

    # -- grades --------------------------------------------------------------------------
    def put_grades(self, grades: Iterable[Grade]) -> None:
        """Store grades (a regrade replaces the previous grade of the same grader)."""
        with self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO grades VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        g.grader,
                        g.example_id,
                        g.completion_id,
                        g.score,
                        int(g.passed),
                        g.error,
                        time.time(),
                    )
                    for g in grades
                ],
            )

    def grades(self, grader: str | None = None) -> builtins.list[Grade]:
        """Stored grades, optionally of one grader."""
        sql = "SELECT grader, example_id, completion_id, score, passed, error FROM grades"
        args: builtins.list[Any] = []
        if grader is not None:
            sql += " WHERE grader = ?"
            args.append(grader)
        return [
            Grade(grader=g, example_id=e, completion_id=c, score=s, passed=bool(p), error=err)
            for g, e, c, s, p, err in self._conn.execute(sql + " ORDER BY rowid", args)
        ]


def _to_row(c: Completion) -> tuple[Any, ...]:
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
        json.dumps(c.label_logprobs) if c.label_logprobs is not None else None,
        json.dumps(c.token_logprobs) if c.token_logprobs is not None else None,
        json.dumps(c.metadata, sort_keys=True),
        c.created_at,
        int(c.cached),
    )


def _from_row(row: Sequence[Any]) -> Completion:
    (
        cid,
        rhash,
        _algo,
        _model,
        request,
        text,
        finish,
        ptok,
        ctok,
        latency,
        cost,
        error,
        llp,
        tlp,
        metadata,
        created,
        cached,
    ) = row
    return Completion(
        id=cid,
        request=Request.model_validate_json(request),
        request_hash=rhash,
        text=text or "",
        finish_reason=finish,
        usage=Usage(prompt_tokens=ptok or 0, completion_tokens=ctok or 0),
        latency_s=latency or 0.0,
        cost=cost,
        error=error,
        label_logprobs=json.loads(llp) if llp else None,
        token_logprobs=tuple(json.loads(tlp)) if tlp else None,
        metadata=json.loads(metadata),
        created_at=created,
        cached=bool(cached),
    )
