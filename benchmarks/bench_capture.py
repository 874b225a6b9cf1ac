"""Capture requests/s: still against the OpenAI distillation cookbook's approach.

Both call the same loopback OpenAI-compatible server (`still.testing.FaultyServer` with
200 ms of simulated latency and no faults) in this process. The baseline is the cookbook's
`process_dataframe`: a `ThreadPoolExecutor()` (default workers) calling the sync SDK one
request at a time. still sends each batch through the async SDK with bounded concurrency
and writes every completion to its SQLite store.

    .venv/bin/python benchmarks/bench_capture.py [N_PROMPTS]
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import tempfile
import time
from pathlib import Path

import openai

from still.capture import capture
from still.models import get_model
from still.store import Store
from still.testing import FaultyServer
from still.types import Message, Request


def cookbook(server: FaultyServer, prompts: list[str]) -> tuple[float, int]:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="none")
    answers: dict[int, str] = {}

    def call(i: int) -> None:
        resp = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": prompts[i]}]
        )
        answers[i] = resp.choices[0].message.content or ""

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor() as executor:
        futures = [executor.submit(call, i) for i in range(len(prompts))]
        for f in concurrent.futures.as_completed(futures):
            f.result()
        workers = executor._max_workers
    return time.perf_counter() - start, workers


def still_capture(server: FaultyServer, prompts: list[str], concurrency: int) -> float:
    os.environ["STILL_CONCURRENCY"] = str(concurrency)
    provider = get_model(server.ref())
    reqs = {
        str(i): Request(model=provider.name, messages=(Message(role="user", content=p),))
        for i, p in enumerate(prompts)
    }
    with tempfile.TemporaryDirectory() as d, Store(Path(d) / "s.db") as store:
        start = time.perf_counter()
        stats = capture(provider, reqs, store, batch_size=len(prompts))
        seconds = time.perf_counter() - start
        assert stats.called == len(prompts) and stats.failed == 0
        assert store.count() == len(prompts)
    return seconds


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    with FaultyServer(latency_s=0.2, faults=False) as server:
        rows = []
        for rep in range(3):
            prompts = [f"prompt {rep}-{i}" for i in range(n)]
            secs, workers = cookbook(server, prompts)
            rows.append(("cookbook ThreadPoolExecutor()", f"{workers} threads", secs))
            for conc in (16, 64):
                prompts = [f"prompt {rep}-{conc}-{i}" for i in range(n)]
                rows.append(
                    ("still capture", f"concurrency {conc}", still_capture(server, prompts, conc))
                )
    print(f"{n} prompts, 200 ms simulated latency, loopback, median of 3")
    print(f"{'approach':32} {'workers':16} {'seconds':>8} {'req/s':>7} {'ratio':>6}")
    medians: dict[tuple[str, str], float] = {}
    for name, workers, _ in rows:
        times = sorted(s for a, w, s in rows if (a, w) == (name, workers))
        medians[(name, workers)] = times[len(times) // 2]
    base = next(v for k, v in medians.items() if k[0].startswith("cookbook"))
    for (name, workers), secs in medians.items():
        print(f"{name:32} {workers:16} {secs:8.2f} {n / secs:7.1f} {base / secs:5.1f}x")


if __name__ == "__main__":
    main()
