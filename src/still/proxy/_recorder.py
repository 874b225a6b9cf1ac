"""Recording exchanges without ever holding a request up: a journal, then the store.

A request's answer must go out whatever happens to the store (locked by another writer,
a full disk, a schema migration in progress), and an answer the client received must not
be lost if the proxy is then killed. So recording is two steps:

1. `Recorder.record` appends the exchange as one JSON line to the current journal segment
   (`<store>.pending/<time>-<pid>-<n>.jsonl`): one `write` to the page cache, made before
   the answer's last bytes go out, which a SIGKILL does not undo. It never raises: a
   failed write is logged and counted (`lost`), and the answer still goes out.
2. A background thread closes the segment every `flush_s` seconds, turns its lines into
   completions (`still.store.exchange_completion`) and stores them in one transaction
   (`Store.put_new`: by id, so a segment read twice is stored once), then deletes it. A
   store that is locked or full is logged and counted (`write_errors`); the segment stays
   and is retried, by this process or, after a kill, by the next one to open the journal.

The segment being written holds an exclusive `flock`, so two proxies sharing one store
never read each other's open segment. An exchange no completion can hold (a tool call, an
image, a body that is not JSON) is appended to `<store>.rejected.jsonl` with the reason,
and counted (`rejected`).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from still.store import Store, exchange_completion
from still.types import Completion

log = logging.getLogger("still.proxy")


class Exchange(BaseModel):
    """One forwarded request and what came of it: the unit a `Recorder` keeps."""

    id: str
    """Its completion id in the store (also sent to the client as `X-Still-Completion-Id`)."""
    model: str
    """The still model reference it is stored under (`Upstream.model_ref`)."""
    provider: str
    """The upstream's scheme, which prices the model its answer names."""
    request: Any
    """The request body as the client sent it (parsed JSON; the text when not JSON)."""
    response: dict[str, Any] | None = None
    """The chat.completion answered (a stream assembled into one); None when it failed."""
    status: int
    """The HTTP status the client received."""
    error: str | None = None
    """Why it failed: the upstream's status and message, a dropped connection."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Tags from the `X-Still-Tags` header (beside the body's own `metadata`)."""
    created_at: float
    """When the request arrived (Unix seconds)."""
    latency_s: float
    """Seconds from the request to the whole answer (or the failure)."""
    ttft_s: float | None = None
    """Seconds to the first streamed content, when streamed."""

    def completion(self) -> Completion:
        """The stored completion (failed when `error` is set).

        Raises:
            ImportFormatError: one a completion cannot hold (see `exchange_completion`).
        """
        return exchange_completion(
            self.request,
            self.response,
            model=self.model,
            completion_id=self.id,
            created_at=self.created_at,
            latency_s=self.latency_s,
            ttft_s=self.ttft_s,
            error=self.error,
            tags=self.tags,
            provider=self.provider,
        )


@dataclass
class RecorderStats:
    """What the recorder did; every count is since this process started."""

    recorded: int = 0
    """Exchanges newly stored (a replayed one already stored is not counted again)."""
    pending: int = 0
    """Exchanges journaled and not stored yet."""
    rejected: int = 0
    """Exchanges no completion can hold, kept in the rejected file instead."""
    write_errors: int = 0
    """Failed attempts to write to the store (locked, full, unreadable); retried."""
    lost: int = 0
    """Exchanges that could not be journaled (a disk error): not recorded at all."""


class Recorder:
    """Records exchanges into a store through a journal and a background writer.

    Args:
        db: the store file (created when missing).
        flush_s: how often the writer moves journaled exchanges into the store (one
            transaction each time: a longer wait stores more exchanges per commit).
        retry_s: how long the writer waits after a failed write before trying again.
    """

    def __init__(self, db: str | Path, flush_s: float = 0.2, retry_s: float = 1.0) -> None:
        self.db = Path(db)
        self.journal = self.db.with_name(self.db.name + ".pending")
        self.rejected_file = self.db.with_name(self.db.name + ".rejected.jsonl")
        self.flush_s = flush_s
        self.retry_s = retry_s
        self.stats = RecorderStats()
        self._lock = threading.Lock()  # the open segment: appends and rotation
        self._fd: int | None = None
        self._in_segment = 0
        self._seq = itertools.count()
        self._appended = 0
        self._written = 0  # appended exchanges of this process moved to the store
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._last_error = ""

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Open the journal and start the writer, which first stores what an earlier
        process left in the journal."""
        if self._thread is not None:
            return
        self.journal.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._open_segment()
        self._thread = threading.Thread(target=self._run, name="still-recorder", daemon=True)
        self._thread.start()

    def record(self, exchange: Exchange) -> None:
        """Journal one exchange; never raises (a failure is logged and counted as lost)."""
        line = (exchange.model_dump_json() + "\n").encode()
        with self._lock:
            try:
                if self._fd is None:
                    raise OSError("the recorder is closed")
                os.write(self._fd, line)
            except OSError as exc:
                self.stats.lost += 1
                log.error(
                    "could not journal exchange %s (%s): it is not recorded", exchange.id, exc
                )
                return
            self._in_segment += 1
            self._appended += 1
            self.stats.pending += 1

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything journaled so far is in the store; False on timeout."""
        with self._lock:
            target = self._appended
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._written < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Store what is journaled (waiting at most `timeout_s`) and stop the writer; what
        could not be stored stays in the journal for the next start."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout_s)
        with self._lock:
            if self._fd is not None:  # the writer did not get to it
                os.close(self._fd)
                self._fd = None
        if self._store is not None and not self._thread.is_alive():
            self._store.close()
        left = self.stats.pending
        log.info(
            "recorded %d exchanges in %s (%d rejected, %d write errors, %d lost)%s",
            self.stats.recorded, self.db, self.stats.rejected, self.stats.write_errors,
            self.stats.lost, f"; {left} wait in {self.journal}" if left else "",
        )  # fmt: skip
        self._thread = None

    # -- the writer thread ---------------------------------------------------------------
    def _open_segment(self) -> None:
        """Start a new segment (under `_lock`), locked while this process appends to it."""
        name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._seq):06d}.jsonl"
        fd = os.open(self.journal / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _lock_file(fd, wait=True)
        self._fd, self._in_segment = fd, 0

    def _rotate(self, last: bool) -> None:
        """Close the open segment when it holds something (or for good), so it can be
        stored; then open the next one."""
        with self._lock:
            if self._fd is None or (self._in_segment == 0 and not last):
                return
            os.close(self._fd)  # releases its flock
            self._fd = None
            if not last:
                try:
                    self._open_segment()
                except OSError as exc:
                    log.error("cannot open a journal segment in %s: %s", self.journal, exc)

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.flush_s)
            try:
                self._rotate(last=stopping)
            except OSError as exc:  # the segment's close failed: its lines are written
                log.error("journal %s: %s", self.journal, exc)
            ok = self._drain()
            if stopping:
                return
            if not ok:
                self._stop.wait(self.retry_s)

    def _drain(self) -> bool:
        """Store every closed segment, oldest first; False when the store failed."""
        try:
            segments = sorted(self.journal.glob("*.jsonl"))
        except OSError as exc:
            log.error("cannot read the journal %s: %s", self.journal, exc)
            return False
        for path in segments:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # another proxy stored it
                continue
            try:
                if not _lock_file(fd, wait=False):
                    continue  # a segment still being written (ours or another proxy's)
                if not self._store_segment(path, fd):
                    return False
            finally:
                os.close(fd)
        return True

    def _store_segment(self, path: Path, fd: int) -> bool:
        with os.fdopen(os.dup(fd), "rb") as f:
            lines = f.read().splitlines()
        completions: list[Completion] = []
        rejected: list[str] = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                exchange = Exchange.model_validate_json(line)
            except ValueError as exc:  # a line cut by a crash mid-write
                log.warning("%s:%d: not an exchange, left out (%s)", path.name, n, exc)
                rejected.append(json.dumps({"reason": f"unreadable: {exc}", "line": line.decode(
                    "utf-8", errors="replace")}))  # fmt: skip
                continue
            try:
                completions.append(exchange.completion())
            except ValueError as exc:  # ImportFormatError: not a chat completion still keeps
                log.warning("not stored: %s", exc)
                rejected.append(json.dumps({"reason": str(exc), "exchange": json.loads(line)}))
        try:
            if self._store is None:
                self._store = Store(self.db)
            new = self._store.put_new(completions) if completions else 0
            if rejected:
                with self.rejected_file.open("a", encoding="utf-8") as out:
                    out.write("".join(r + "\n" for r in rejected))
            path.unlink(missing_ok=True)
        except (sqlite3.Error, OSError) as exc:
            self.stats.write_errors += 1
            message = f"{type(exc).__name__}: {exc}"
            if message != self._last_error:  # once per distinct error, not once per retry
                log.warning(
                    "cannot write to the store %s (%s); answers still go out, %d exchanges "
                    "wait in %s and are retried", self.db, message, self.stats.pending,
                    self.journal,
                )  # fmt: skip
                self._last_error = message
            return False
        if self._last_error:
            log.info("the store %s is writable again", self.db)
            self._last_error = ""
        self.stats.recorded += new
        self.stats.rejected += len(rejected)
        mine = sum(1 for x in lines if x.strip()) if f"-{os.getpid()}-" in path.name else 0
        with self._lock:  # `record` counts pending under it too
            self.stats.pending = max(0, self.stats.pending - mine)
        with self._idle:
            self._written += mine
            self._idle.notify_all()
        return True


def _lock_file(fd: int, wait: bool) -> bool:
    """Take an exclusive flock on `fd`; False when another holder has it (never waits
    unless `wait`). Where flock does not exist (Windows), always True: one proxy per store."""
    if sys.platform == "win32":
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True
