"""`still proxy --route route.yaml`: each call goes where its route says, and the routes follow
the shadow's evidence as it is stored.

`RouteTable` is the proxy's `Router` (a call in, an upstream out) over a `still.route.Router`,
which holds the decisions. It opens one upstream per reference the route file names, draws
each call's canary, and, in a background thread every `refresh_s`, reads the shadow records
stored since its last read (`still.shadow.read_shadow`: the pairs `still serve STUDENT
--shadow TEACHER` judged) and hands them to the router. Every switch is logged and appended,
with its evidence, to `<store>.switches.jsonl` beside the store the evidence comes from.

At start, each route's last `window` records are read back, so a restarted proxy routes as
it did before (a route whose tags overlap an earlier route's may start with fewer). A read
that fails (the store locked or missing) is logged and retried at the next refresh: the
calls keep going where they went.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from still.proxy._app import Call
from still.proxy._upstream import Upstream, open_upstream
from still.route import RouteConfig, Router, RouteState, Switch
from still.shadow import ShadowRecord, read_shadow
from still.store import Store

log = logging.getLogger("still.proxy")

OVERLAP_S = 5.0
"""How far back each read starts before the newest record already read: two workers that
stamp their pairs in one order may commit them in the other."""


class RouteTable:
    """Routes calls by a route file, following the shadow records of a store.

    Args:
        config: the routes.
        db: the store the evidence is read from when the route file names none.
        key_variable: for URL upstreams, the environment variable holding their key.
        timeout_s: see `still.proxy.Upstream`.
        seed: the seed of the canary draws (None: a random one).
    """

    def __init__(
        self,
        config: RouteConfig,
        db: str | Path,
        key_variable: str | None = None,
        timeout_s: float = 600.0,
        seed: int | None = None,
    ) -> None:
        self.config = config
        self.router = Router(config)
        self.evidence = Path(config.evidence or db)
        self.switch_log = self.evidence.with_name(self.evidence.name + ".switches.jsonl")
        self.upstreams = {ref: open_upstream(ref, key_variable, timeout_s) for ref in config.refs()}
        for spec in config.routes:
            # a student is a `still serve --shadow`, whose records need the call's tags
            self.upstreams[spec.student].forward_tags = True
        self.switches: list[Switch] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # the router: decided in the refresher, read per call
        self._seen: dict[str, float] = {}
        self._cursor: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, call: Call) -> Upstream:
        """The upstream of one call (the proxy's `Router`)."""
        with self._lock:
            ref = self.router.choose(call.metadata, self._rng.random())
        return self.upstreams[ref]

    def states(self) -> list[RouteState]:
        """Where each route sends its calls now, and its evidence."""
        with self._lock:
            return self.router.states()

    def start(self) -> None:
        """Read each route's recent evidence, then follow the store in the background."""
        if self._thread is not None:
            return
        self._catch_up()
        self._thread = threading.Thread(target=self._run, name="still-routes", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop following the store."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def refresh(self) -> list[Switch]:
        """Read the records stored since the last read, and route by them; the switches."""
        since = None if self._cursor is None else self._cursor - OVERLAP_S
        with Store(self.evidence) as store:
            records = read_shadow(store, since=since)
        return self._observe(records)

    def _catch_up(self) -> None:
        if not self.evidence.is_file():
            log.info("routes: no evidence yet in %s; every route starts on its teacher",
                     self.evidence)  # fmt: skip
            self._cursor = time.time()
            return
        started = time.time()
        with Store(self.evidence) as store:
            for spec in self.config.routes:
                records = read_shadow(store, metadata=spec.match, last=spec.window)
                # a record of a more specific earlier route is that route's evidence
                with self._lock:
                    mine = [r for r in records if self.router.route_of(r.tags) == spec.label]
                self._observe(mine, start=True)
        self._cursor = max(self._cursor or 0.0, started - OVERLAP_S)
        for state in self.states():
            log.info("route %s starts on its %s (%d records, agreement interval [%.3f, %.3f])",
                     state.route, state.serving, state.n, state.low, state.high)  # fmt: skip

    def _run(self) -> None:
        while not self._stop.wait(self.config.refresh_s):
            try:
                self.refresh()
            except (sqlite3.Error, OSError) as exc:
                log.warning("routes: cannot read the evidence in %s (%s); routing as before",
                            self.evidence, exc)  # fmt: skip

    def _observe(self, records: Iterable[ShadowRecord], start: bool = False) -> list[Switch]:
        new = []
        for r in records:
            if r.id in self._seen:
                continue
            self._seen[r.id] = r.created_at
            new.append(r)
        if new:
            newest = max(r.created_at for r in new)
            self._cursor = max(self._cursor or newest, newest)
            # forget what no later read can return again
            old = [i for i, at in self._seen.items() if at < self._cursor - 2 * OVERLAP_S]
            for i in old:
                del self._seen[i]
        with self._lock:
            switches = self.router.observe(new, now=time.time())
        for s in switches:
            self._record(s, start)
        return switches

    def _record(self, switch: Switch, start: bool) -> None:
        self.switches.append(switch)
        log.warning(
            "route %s%s: to the %s (%s): %s", switch.route, " at start" if start else "",
            switch.to, switch.upstream, switch.reason,
        )  # fmt: skip
        try:
            with self.switch_log.open("a", encoding="utf-8") as f:
                f.write(json.dumps({**asdict(switch), "at_start": start}) + "\n")
        except OSError as exc:
            log.error("cannot write the switch to %s: %s", self.switch_log, exc)
