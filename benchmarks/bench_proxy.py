"""`still proxy` overhead: added latency, requests/s and streamed time to first chunk.

The upstream is `still.testing.FaultyServer` (no faults) in a process of its own, answering
every chat completion after a fixed latency (50 ms by default). The same requests go to it
directly (the baseline) and through `still proxy` (the real command, in its own process,
recording every exchange in a store), from 1 client and from 64 concurrent clients (asyncio
and one httpx2 connection pool in this process). Printed: latency percentiles of both, the
latency the proxy adds (p50 and p99 of proxied minus direct), requests/s and their ratio;
then streamed answers (one chunk per word, 5 ms apart): time to the first content chunk,
direct and through the proxy. Last, the store is checked to hold every proxied exchange.

    .venv/bin/python benchmarks/bench_proxy.py [N_REQUESTS] [LATENCY_S]
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import httpx2

from still.bench import percentile
from still.store import Store

KEY = "sk-bench-proxy"


def _upstream(latency_s: float, port: Any, stop: Event) -> None:
    from still.testing import FaultyServer

    with FaultyServer(faults=False, latency_s=latency_s, chunk_delay_s=0.005) as server:
        port.value = server.port
        stop.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _one(http: httpx2.AsyncClient, url: str, i: int, stream: bool) -> float:
    """Seconds to the whole answer, or to the first content chunk when streamed."""
    body = {"model": "m", "messages": [{"role": "user", "content": f"question {i} x y z"}]}
    start = time.perf_counter()
    if not stream:
        resp = await http.post(url, json=body)
        assert resp.status_code == 200, resp.text
        return time.perf_counter() - start
    async with http.stream("POST", url, json={**body, "stream": True}) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if '"content": "echo:' in line:
                return time.perf_counter() - start
    raise AssertionError("no content chunk")


async def _run(url: str, n: int, clients: int, stream: bool = False) -> tuple[list[float], float]:
    """Latencies of `n` requests from `clients` concurrent clients, and the seconds taken."""
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx2.AsyncClient(timeout=60, limits=limits, headers=headers) as http:
        await _one(http, url, -1, stream)  # warm the connection pool
        todo = iter(range(n))
        times: list[float] = []

        async def worker() -> None:
            for i in todo:
                times.append(await _one(http, url, i, stream))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return times, time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    latency = float(sys.argv[2]) if len(sys.argv) > 2 else 0.05
    ctx = multiprocessing.get_context("spawn")
    port, stop = ctx.Value("i", 0), ctx.Event()
    upstream = ctx.Process(target=_upstream, args=(latency, port, stop), daemon=True)
    upstream.start()
    while not port.value:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port.value}/v1"
    tmp = Path(tempfile.mkdtemp())
    proxy_port = _free_port()
    proxy = subprocess.Popen(
        [sys.executable, "-m", "still", "proxy", base, "--db", str(tmp / "p.db"),
         "--port", str(proxy_port), "--api-key", KEY],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ},
    )  # fmt: skip
    via = f"http://127.0.0.1:{proxy_port}/v1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx2.get(f"{via}/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=1)
            break
        except httpx2.HTTPError:
            time.sleep(0.1)
    sent = 0
    try:
        ms = latency * 1000
        print(f"{n} chat completions per row (x4 at 64 clients), upstream answers in {ms:.0f} ms")
        print(f"{'clients':>7} {'route':>7} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} "
              f"{'added p99':>10} {'req/s':>8} {'ratio':>6}")  # fmt: skip
        for clients in (1, 64):
            count = n if clients == 1 else n * 4
            direct, d_secs = asyncio.run(_run(f"{base}/chat/completions", count, clients))
            proxied, p_secs = asyncio.run(_run(f"{via}/chat/completions", count, clients))
            sent += count + 1
            d50, d99 = percentile(direct, 50), percentile(direct, 99)
            p50, p99 = percentile(proxied, 50), percentile(proxied, 99)
            print(f"{clients:>7} {'direct':>7} {d50 * 1e3:>8.1f} {d99 * 1e3:>8.1f} {'':>10} "
                  f"{'':>10} {count / d_secs:>8.1f} {1.0:>5.2f}x")  # fmt: skip
            print(f"{clients:>7} {'proxy':>7} {p50 * 1e3:>8.1f} {p99 * 1e3:>8.1f} "
                  f"{(p50 - d50) * 1e3:>+10.1f} {(p99 - d99) * 1e3:>+10.1f} "
                  f"{count / p_secs:>8.1f} {d_secs / p_secs:>5.2f}x", flush=True)  # fmt: skip

        print()
        print(f"streamed, {n} requests from 1 client: time to the first content chunk (ms)")
        print(f"{'route':>7} {'p50':>8} {'p99':>8} {'added p50':>10}")
        direct, _ = asyncio.run(_run(f"{base}/chat/completions", n, 1, stream=True))
        proxied, _ = asyncio.run(_run(f"{via}/chat/completions", n, 1, stream=True))
        sent += n + 1
        d50 = percentile(direct, 50)
        print(f"{'direct':>7} {d50 * 1e3:>8.1f} {percentile(direct, 99) * 1e3:>8.1f}")
        print(f"{'proxy':>7} {percentile(proxied, 50) * 1e3:>8.1f} "
              f"{percentile(proxied, 99) * 1e3:>8.1f} "
              f"{(percentile(proxied, 50) - d50) * 1e3:>+10.1f}")  # fmt: skip
    finally:
        proxy.send_signal(2)
        proxy.wait(60)
        stop.set()
        upstream.join(10)
    with Store(tmp / "p.db") as store:
        stored = store.count()
    print(f"\nstore: {stored} exchanges recorded of {sent} proxied")


if __name__ == "__main__":
    main()
