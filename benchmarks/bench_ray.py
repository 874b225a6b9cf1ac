"""Capture requests/s: two local Ray workers (`--ray`) against one process.

The model is `scripted:echo?delay=D`: each request sleeps D seconds, as a call to an
endpoint or a model with a fixed latency would wait, and uses no CPU, so the ratio
measures how well the work is spread and stored, not how busy this machine's two cores
are. Both paths run `still.capture.capture` into a fresh SQLite store with the same
requests and batch size; the Ray one through `still.capture_ray.RayEngine` on a Ray
instance started here with two CPUs (two workers). Its start-up (starting Ray, starting
and loading the workers) is timed apart: once a run's pool is up, later captures of the
same model reuse it.

    nice .venv/bin/python benchmarks/bench_ray.py [N_REQUESTS] [DELAY_S]
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

from still.capture import capture
from still.capture_ray import RayEngine
from still.models import Provider, get_model
from still.store import Store
from still.types import Message, Request

BATCH = 8


def requests(ref: str, n: int, tag: str) -> dict[str, Request]:
    msgs = [(Message(role="user", content=f"{tag} question {i}"),) for i in range(n)]
    return {str(i): Request(model=ref, messages=m) for i, m in enumerate(msgs)}


def timed(provider: Provider, reqs: dict[str, Request]) -> float:
    """Seconds to answer and store every request (none stored before)."""
    with tempfile.TemporaryDirectory() as d, Store(Path(d) / "s.db") as store:
        start = time.perf_counter()
        stats = capture(provider, reqs, store, batch_size=BATCH, desc="bench")
        seconds = time.perf_counter() - start
        assert stats.called == len(reqs) and stats.failed == 0, stats.summary()
        assert store.count() == len(reqs)
    return seconds


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.02
    ref = f"scripted:echo?delay={delay}"

    one = timed(get_model(ref), requests(ref, n, "one"))

    import ray

    start = time.perf_counter()
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    init_s = time.perf_counter() - start
    with RayEngine() as engine:
        provider = engine.model(ref, BATCH, None)
        start = time.perf_counter()
        engine.pool(ref, None)  # two workers started, each with its model loaded
        pool_s = time.perf_counter() - start
        two = timed(provider, requests(ref, n, "ray"))
        workers = len(engine.worker_pids)
    ray.shutdown()

    print(f"{n} requests, {delay * 1000:.0f} ms each (scripted sleep), batches/blocks of {BATCH}")
    print()
    print("| capture | workers | seconds | requests/s |")
    print("|---|---|---|---|")
    print(f"| one process | 1 | {one:.2f} | {n / one:.1f} |")
    print(f"| Ray, local | {workers} | {two:.2f} | {n / two:.1f} |")
    print()
    print(f"ratio (Ray / one process): {one / two:.2f}x")
    print(f"Ray start-up, not in the table: ray.init {init_s:.1f} s, workers up {pool_s:.1f} s")


if __name__ == "__main__":
    main()
