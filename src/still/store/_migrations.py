"""Ordered, named schema migrations for the completion store.

The schema of a store file is whatever its recorded migrations made it, so an old store
opens with a new `still` and is brought up to date instead of being rebuilt (its rows are
paid-for model calls). The pattern is simonw/llm's `migrations.py`:

- `MIGRATIONS` is an ordered list of `(name, function(conn))`;
- `migrate(conn)` applies, in order, every one whose name is not yet in the
  `_migrations(name, applied_at)` table, and records it;
- a migration that has shipped is never edited or reordered (stores in the wild already
  recorded it); a schema change is a new function appended to the list.

Each migration and its record commit in one transaction, taken with `BEGIN IMMEDIATE`
so two processes opening a fresh store at once cannot both apply it, and a crash midway
leaves the store as it was before that migration (SQLite DDL is transactional).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]
"""A schema step: runs its statements on the connection, inside `migrate`'s transaction."""


def m001_initial(conn: sqlite3.Connection) -> None:
    """Completions (one row per model call, failed ones included) and grades.

    JSON columns: `request` (the `Request`), `label_logprobs` (object or NULL),
    `token_logprobs` (array or NULL), `metadata` (object of string tags, never NULL).
    A grade is keyed by grader, example and completion: two examples with the same prompt
    share one stored completion yet can have different references, hence different grades.
    """
    conn.execute(
        """CREATE TABLE completions (
            id TEXT PRIMARY KEY,
            request_hash TEXT NOT NULL,
            hash_algorithm TEXT NOT NULL,
            model TEXT NOT NULL,
            request TEXT NOT NULL,
            text TEXT,
            finish_reason TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_s REAL,
            cost REAL,
            error TEXT,
            label_logprobs TEXT,
            token_logprobs TEXT,
            metadata TEXT NOT NULL,
            created_at REAL NOT NULL,
            cached INTEGER NOT NULL DEFAULT 0
        )"""
    )
    conn.execute("CREATE INDEX idx_completions_hash ON completions(request_hash)")
    conn.execute("CREATE INDEX idx_completions_model ON completions(model)")
    conn.execute("CREATE INDEX idx_completions_created ON completions(created_at)")
    conn.execute(
        """CREATE TABLE grades (
            grader TEXT NOT NULL,
            example_id TEXT NOT NULL,
            completion_id TEXT,
            score REAL NOT NULL,
            passed INTEGER NOT NULL,
            error TEXT,
            created_at REAL NOT NULL,
            PRIMARY KEY (grader, example_id, completion_id)
        )"""
    )


def m002_attempts(conn: sqlite3.Connection) -> None:
    """How many times a request was sent before this outcome (retries = attempts - 1)."""
    conn.execute("ALTER TABLE completions ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1")


def m003_token_detail(conn: sqlite3.Connection) -> None:
    """The generated tokens and each one's top-k alternatives (JSON), when asked for:
    what `top_logprobs` returns and what soft-target distillation learns from."""
    conn.execute("ALTER TABLE completions ADD COLUMN tokens TEXT")
    conn.execute("ALTER TABLE completions ADD COLUMN top_logprobs TEXT")


def m004_ttft(conn: sqlite3.Connection) -> None:
    """Time to first token, where it was measured (NULL otherwise)."""
    conn.execute("ALTER TABLE completions ADD COLUMN ttft_s REAL")


def m005_grades_by_completion(conn: sqlite3.Connection) -> None:
    """An index on grades(completion_id): `Store.grades(completion_ids=...)` looks grades up
    by completion (a GRPO run or a report over a large store asks for thousands), and the
    primary key, led by grader and example, cannot serve that lookup."""
    conn.execute("CREATE INDEX IF NOT EXISTS idx_grades_completion ON grades(completion_id)")


MIGRATIONS: list[tuple[str, Migration]] = [
    ("m001_initial", m001_initial),
    ("m002_attempts", m002_attempts),
    ("m003_token_detail", m003_token_detail),
    ("m004_ttft", m004_ttft),
    ("m005_grades_by_completion", m005_grades_by_completion),
]
"""Every migration, in the order it is applied. Append only."""


def applied(conn: sqlite3.Connection) -> list[str]:
    """Names of the migrations recorded in this database, oldest first.

    Args:
        conn: an open connection.

    Returns:
        The recorded names; empty for a database `migrate` never ran on.
    """
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
    ).fetchone()
    if not exists:
        return []
    return [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY applied_at, rowid")]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply, in order, every migration not yet recorded in `_migrations`.

    The connection must be in autocommit mode (`isolation_level=None`): transactions
    are managed here, one per migration.

    Args:
        conn: an open connection to the store file.

    Returns:
        The names applied by this call (empty when the store was up to date).
    """
    if conn.in_transaction:
        raise RuntimeError("migrate() needs a connection outside any transaction")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    recorded = set(applied(conn))
    done: list[str] = []
    for name, fn in MIGRATIONS:
        if name in recorded:  # the common case: no write lock taken to open a store
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have just applied it.
            seen = conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone()
            if not seen:
                fn(conn)
                conn.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
                done.append(name)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return done
