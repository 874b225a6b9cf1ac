"""`still serve` against `vllm serve` (`still serve --engine vllm`) on the same student.

Both servers are started here, one after the other on a free loopback port, with the
commands a user runs: `still serve MODEL` (still's server: the transformers loop, with
concurrent requests gathered into shared batches) and `still serve --engine vllm MODEL --
...` (vLLM's own OpenAI-compatible server, float32 like still's, eager, a 1 GiB KV cache).
Each gets the same TREC questions with the student's prompt, greedy, `--max-tokens` new
tokens at most, through the openai SDK: `--requests` of them from 1 client (one at a
time), then from 16 concurrent clients. Rate: completion tokens over wall seconds;
latency: per request, as the client saw it. Start-up (model load, engine start) and one
warm-up request are not timed.

The model is the bundled SmolLM2-135M-Instruct, or a run's distilled student folder
(`--model runs/trec/distilled-...`; a LoRA adapter folder is served on its base). Run it
under .venv-vllm (vLLM, and fastapi/uvicorn for still's server), on a quiet machine: on a
busy one torch's threads wait for each other (a 2-thread generate ran 3.4x slower than a
1-thread one on a loaded 2-core machine here), so compare `--threads 1` too.

    nice .venv-vllm/bin/python benchmarks/bench_serve_engines.py [--requests 64] \
        [--clients 1,16] [--max-tokens 32] [--threads N] [--model FOLDER]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from still.bench import percentile
from still.capture import build_request
from still.models import bundled_path
from still.tasks import load_examples, load_task, split_examples

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VLLM_ARGS = ["--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
             "--kv-cache-memory-bytes", str(1 << 30)]  # fmt: skip
"""vLLM's options: float32 as the local provider computes, eager (starts sooner)."""
NAME = "student"
START_S = 900.0
"""Longest wait for a server to answer (vLLM's start takes minutes on a busy CPU)."""


@dataclass
class Level:
    """One engine at one concurrency."""

    engine: str
    clients: int
    requests: int
    seconds: float
    tokens: int
    latencies: list[float]
    texts: list[str]

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def questions(n: int) -> list[list[dict[str, str]]]:
    """The student's chat messages for n TREC questions (train then validation)."""
    task = load_task(ROOT / "examples" / "trec" / "task.yaml")
    examples, _ = load_examples(task)
    split = split_examples(examples, task.split, 12)
    pool = split.train + split.validation
    reqs = [build_request(task, "student", NAME, e, split.fewshot) for e in pool[:n]]
    return [[{"role": m.role, "content": m.content} for m in r.messages] for r in reqs]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(argv: list[str], port: int, log: Path, env: dict[str, str]) -> Iterator[None]:
    """Run a server (its own process group) until the block ends; wait until it answers."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env},
        )
    try:
        deadline = time.monotonic() + START_S
        while True:
            if proc.poll() is not None:
                sys.exit(f"{argv[:4]} exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                url = f"http://127.0.0.1:{port}/v1/models"
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit(f"{argv[:4]} did not answer in {START_S:.0f} s; see {log}")
                time.sleep(1)
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def measure(
    engine: str,
    port: int,
    prompts: list[list[dict[str, str]]],
    warm_up: list[dict[str, str]],
    levels: list[int],
    tokens: int,
) -> list[Level]:
    """Send the prompts at each concurrency level, after one warm-up request."""
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=900)

    def ask(messages: list[dict[str, str]]) -> tuple[float, int, str]:
        start = time.perf_counter()
        resp: Any = client.chat.completions.create(
            model=NAME,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=tokens,
            temperature=0,
        )
        assert resp.usage is not None
        text = resp.choices[0].message.content or ""
        return time.perf_counter() - start, int(resp.usage.completion_tokens), text.strip()

    ask(warm_up)
    out = []
    for clients in levels:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            done = list(pool.map(ask, prompts))
        seconds = time.perf_counter() - start
        out.append(
            Level(
                engine,
                clients,
                len(prompts),
                seconds,
                sum(t for _, t, _ in done),
                [lat for lat, _, _ in done],
                [text for _, _, text in done],
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64, help="requests per level")
    ap.add_argument("--clients", default="1,16", help="concurrent clients, per level")
    ap.add_argument("--max-tokens", type=int, default=32, help="max new tokens per answer")
    ap.add_argument("--model", help="a student folder (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument(
        "--threads",
        type=int,
        help="compute threads of both servers (default: each its own: torch one per core, "
        "vLLM's CPU build pins one per core but one it keeps for its scheduler)",
    )
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    model = (
        str(Path(args.model).resolve())
        if args.model
        else str(bundled_path("smollm2-135m-instruct"))
    )
    prompts = questions(args.requests + 1)  # the last one is the warm-up
    common = ["--port", "{port}", "--name", NAME]
    commands = {
        "still": [str(BIN / "still"), "serve", f"local:{model}", *common],
        "vllm": [
            str(BIN / "still"),
            "serve",
            "--engine",
            "vllm",
            "--vllm-bin",
            str(BIN / "vllm"),
            model,
            *common,
            "--",
            *VLLM_ARGS,
        ],
    }
    threads: dict[str, str] = {}
    if args.threads:  # torch reads OMP_NUM_THREADS; vLLM then leaves its threads unpinned
        threads = {"OMP_NUM_THREADS": str(args.threads), "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    results: list[Level] = []
    with tempfile.TemporaryDirectory() as logs:
        for engine, argv in commands.items():
            port = free_port()
            argv = [a.replace("{port}", str(port)) for a in argv]
            start = time.perf_counter()
            with server(argv, port, Path(logs) / f"{engine}.log", threads):
                up = time.perf_counter() - start
                print(f"{engine}: serving after {up:.0f} s (not timed)", file=sys.stderr)
                timed, warm_up = prompts[:-1], prompts[-1]
                results += measure(engine, port, timed, warm_up, levels, args.max_tokens)

    how = f"{args.threads} thread(s) each" if args.threads else "each engine's own threads"
    print(f"\n{model}: fp32, greedy, <= {args.max_tokens} tokens, CPU, {how}")
    print()
    print("| engine | clients | requests | seconds | tok/s | p50 latency s | p99 latency s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        p50, p99 = percentile(r.latencies, 50), percentile(r.latencies, 99)
        print(
            f"| {r.engine} | {r.clients} | {r.requests} | {r.seconds:.2f} | {r.rate:.1f} "
            f"| {p50:.3f} | {p99:.3f} |"
        )
    print()
    by = {(r.engine, r.clients): r for r in results}
    for clients in levels:
        still, vllm = by[("still", clients)], by[("vllm", clients)]
        same = sum(a == b for a, b in zip(still.texts, vllm.texts, strict=True))
        print(
            f"{clients} client(s): vllm/still tok/s {vllm.rate / still.rate:.2f}x; "
            f"same answer {same}/{still.requests}"
        )


if __name__ == "__main__":
    main()
