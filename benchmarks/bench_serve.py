"""`still serve` generated tokens/s with 1 client against 16 concurrent clients.

Starts `still serve` on the bundled student (SmolLM2-135M-Instruct) in this process, on
loopback, and sends the same 32 chat requests (32 new tokens each, greedy) through the
official openai SDK: first one at a time from one client (the baseline), then from 16
concurrent clients, whose requests the server batches into shared forward passes.

Then the same questions streamed (stream=true): time to first token and to the whole
answer, from 1 client and from 4 concurrent clients (streams are decoded one per request,
not batched).

    .venv/bin/python benchmarks/bench_serve.py [N_REQUESTS] [MAX_TOKENS]
"""

from __future__ import annotations

import math
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import uvicorn

from still.bench import percentile
from still.models import get_model
from still.serve import create_app

QUESTIONS = [
    "What is the capital of France?",
    "Who wrote Hamlet?",
    "How many legs does a spider have?",
    "Why is the sky blue?",
    "What does NASA stand for?",
    "Where is Mount Everest?",
    "When did the Second World War end?",
    "What is photosynthesis?",
]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    max_tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    provider = get_model("local:smollm2-135m-instruct")
    app = create_app(provider, "student")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=600)

    def ask(i: int) -> int:
        resp = client.chat.completions.create(
            model="student",
            max_tokens=max_tokens,
            temperature=0,
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        )
        assert resp.usage is not None
        return resp.usage.completion_tokens

    ask(0)  # warm-up
    print(f"{n} requests x up to {max_tokens} new tokens, SmolLM2-135M-Instruct, CPU")
    print(
        f"{'clients':>8} {'seconds':>9} {'tokens':>7} {'tok/s':>7} {'ratio':>6} {'mean batch':>11}"
    )
    base = None
    for clients in (1, 16):
        app.state.batcher.batches.clear()
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            tokens = sum(pool.map(ask, range(n)))
        secs = time.perf_counter() - start
        rate = tokens / secs
        base = base or rate
        sizes = app.state.batcher.batches
        print(
            f"{clients:>8} {secs:>9.1f} {tokens:>7} {rate:>7.1f} {rate / base:>5.1f}x "
            f"{sum(sizes) / len(sizes):>11.1f}",
            flush=True,
        )

    # Streamed: time to first token (the latency a chat user feels), 1 client vs 4.
    def first_token(i: int) -> tuple[float, float]:
        start = time.perf_counter()
        ttft = None
        for event in client.chat.completions.create(
            model="student",
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
        ):
            if ttft is None and event.choices and event.choices[0].delta.content:
                ttft = time.perf_counter() - start
        return ttft or math.nan, time.perf_counter() - start

    print()
    print(f"streamed, {n} requests: time to first token and to the whole answer (seconds)")
    print(f"{'clients':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'total p50':>10}")
    for clients in (1, 4):
        with ThreadPoolExecutor(clients) as pool:
            times = list(pool.map(first_token, range(n)))
        ttfts = [t for t, _ in times]
        totals = [t for _, t in times]
        print(
            f"{clients:>8} {percentile(ttfts, 50):>9.3f} {percentile(ttfts, 95):>9.3f} "
            f"{percentile(totals, 50):>10.3f}",
            flush=True,
        )
    server.should_exit = True


if __name__ == "__main__":
    main()
