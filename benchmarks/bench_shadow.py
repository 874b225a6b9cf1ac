"""`still serve --shadow`: the latency a client sees, against plain `still serve`.

Serves a student with a fixed latency (20 ms per forward pass, whatever the batch) on
loopback, each server in its own process: plain `still serve` (the baseline), and with a
shadow teacher of fixed latency (200 ms per request, 2 workers) sampling 10% and 100% of
the requests. N chat requests go to each from 1 client and from 16 concurrent clients
(httpx, keep-alive), in 5 rounds that alternate between the servers, so that a drift in the
machine's load falls on all of them alike. The client's p50 and p99 latency are compared
with the baseline's at the same concurrency; the shadow's counts (pairs stored, dropped
when its queue was full) say what the teacher kept up with. The teacher's work is threads
in the server's process: what it can cost the client is the interpreter lock and the store
writes, never the teacher's latency.

    .venv/bin/python benchmarks/bench_shadow.py [N_REQUESTS]
"""

from __future__ import annotations

import logging
import multiprocessing
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import uvicorn

from still.bench import percentile
from still.models import get_model
from still.serve import create_app
from still.shadow import Shadow
from still.types import Completion, Request, Usage

STUDENT_S = 0.02
TEACHER = "scripted:const=yes?delay=0.2"


class FixedLatency:
    """A student that answers any batch in `latency_s` (one forward pass)."""

    name = "student"

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        time.sleep(self.latency_s)
        return [
            Completion(
                request=r, text="yes", finish_reason="stop", usage=Usage(completion_tokens=1)
            )
            for r in requests
        ]


def run_server(port: int, sample: float | None, db: str) -> None:
    """One server in its own process, so that its shadow's threads share no interpreter
    lock with the clients or with the other servers."""
    logging.getLogger("still.shadow").setLevel(logging.ERROR)  # drops: in the table
    shadow = None
    if sample is not None:
        shadow = Shadow(get_model(TEACHER), db, sample, seed=0, workers=2)
    app = create_app(FixedLatency(STUDENT_S), "student", observer=shadow)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start_server(sample: float | None, db: Path) -> tuple[Any, str]:
    """(the process, its base URL) once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = multiprocessing.get_context("spawn").Process(
        target=run_server, args=(port, sample, str(db)), daemon=True
    )
    proc.start()
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx2.get(base + "/v1/models", timeout=1).status_code == 200:
                return proc, base
        except httpx2.HTTPError:
            time.sleep(0.1)


def measure(url: str, n: int, clients: int) -> list[float]:
    """Each request's latency (seconds) as its client saw it."""
    local = threading.local()

    def ask(i: int) -> float:
        if not hasattr(local, "client"):
            local.client = httpx2.Client(timeout=60)
        body = {
            "model": "student",
            "messages": [{"role": "user", "content": f"question {i}"}],
            "metadata": {"app": "bench"},
        }
        start = time.perf_counter()
        resp = local.client.post(url, json=body)
        took = time.perf_counter() - start
        assert resp.status_code == 200, resp.text
        return took

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(ask, range(min(n, 2 * clients))))  # warm-up: connections, threads
        return list(pool.map(ask, range(n)))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    rounds = 5
    print(
        f"{n} requests per row, in {rounds} rounds interleaved with the other rows; each "
        f"server in its own process; student {STUDENT_S * 1000:.0f} ms per batch, teacher "
        f"{TEACHER} with 2 workers; client latency in ms, ratio to plain serve"
    )
    print(
        f"{'serve':<14} {'clients':>7} {'p50':>7} {'p99':>7} {'p50 x':>6} {'p99 x':>6} "
        f"{'stored':>7} {'dropped':>8}"
    )
    rows = (("plain", None), ("--shadow 0.1", 0.1), ("--shadow 1.0", 1.0))
    with tempfile.TemporaryDirectory() as tmp:
        for clients in (1, 16):
            servers = {
                label: start_server(sample, Path(tmp) / f"{clients}-{sample}.db")
                for label, sample in rows
            }
            times: dict[str, list[float]] = {label: [] for label, _ in rows}
            for r in range(rounds):
                for label, _ in rows if r % 2 == 0 else rows[::-1]:
                    url = servers[label][1] + "/v1/chat/completions"
                    times[label] += measure(url, n // rounds, clients)
            base: tuple[float, float] | None = None
            for label, sample in rows:
                p50, p99 = percentile(times[label], 50) * 1000, percentile(times[label], 99) * 1000
                base = base or (p50, p99)
                proc, url = servers[label]
                stats = httpx2.get(url + "/still/shadow").json() if sample is not None else {}
                print(
                    f"{label:<14} {clients:>7} {p50:>7.1f} {p99:>7.1f} {p50 / base[0]:>5.2f}x "
                    f"{p99 / base[1]:>5.2f}x {stats.get('shadowed', '-')!s:>7} "
                    f"{stats.get('dropped', '-')!s:>8}",
                    flush=True,
                )
            for proc, _ in servers.values():
                proc.kill()  # what the shadow still holds is not the client's concern
                proc.join()


if __name__ == "__main__":
    main()
