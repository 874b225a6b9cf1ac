"""Ordered, named schema migrations for the completion store.

Each migration runs once and is recorded in `_migrations`; new ones are appended, never
edited, so an old store opens with a new `still` and is brought up to date.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]


def m001_initial(conn: sqlite3.Connection) -> None:
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


MIGRATIONS: list[tuple[str, Migration]] = [("m001_initial", m001_initial)]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply every migration not yet recorded; return the names applied now."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    applied = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        with conn:
            fn(conn)
            conn.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
        applied.append(name)
    return applied
