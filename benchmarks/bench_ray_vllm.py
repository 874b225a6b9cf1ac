"""Capture with `vllm:` workers: two Ray actors (`--ray`), each one vLLM engine, against one
process with one engine, on real TREC questions.

The work is what a `still run` asks its models: `score`, the teacher's 12-shot prompt with
every label's log-likelihood (label scoring), and `generate`, the student's prompt answered
greedily in free text (at most `--tokens` tokens). Both paths run `still.capture.capture`
into a fresh SQLite store with the same requests; the Ray one through
`still.capture_ray.RayEngine` on a Ray instance started here with `--cpus` CPUs and
`--workers` actors (on CPUs each actor gets its share of them and its engine as many
unpinned threads; see capture_ray's docstring). The engines' start-up is timed apart (a
warm-up capture of other questions first: a run's pool stays up for its next capture).
The one-process engine runs as `still capture` runs it, with vLLM's own thread pinning.

The answers of both are compared (label choices, greedy text): greedy, they should agree.
Run it under .venv-vllm (vLLM and Ray), on a quiet machine:

    nice .venv-vllm/bin/python benchmarks/bench_ray_vllm.py [--questions 200] \
        [--work score,generate] [--model smollm2-135m-instruct] [--workers 2] [--cpus 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from still.capture import CaptureStats, build_request, capture
from still.capture_ray import RayEngine
from still.models import Provider, bundled_path, get_model, shutdown_engine, use_engine_options
from still.store import Store
from still.tasks import load_examples, load_task, split_examples
from still.types import Request, SamplingParams

ROOT = Path(__file__).resolve().parents[1]
ENGINE = {
    "dtype": "float32",
    "max_model_len": 2048,
    "enforce_eager": True,
    "kv_cache_memory_bytes": 1 << 30,
}
"""Engine options of every engine here (a task's `vllm:` block)."""


def workload(work: list[str], n: int, tokens: int) -> tuple[dict[str, Request], dict[str, Request]]:
    """(timed requests, warm-up requests): n TREC questions per kind of work, and others."""
    task = load_task(ROOT / "examples" / "trec" / "task.yaml")
    examples, _ = load_examples(task)
    split = split_examples(examples, task.split, 12)
    questions = split.train + split.validation + split.heldout
    params = SamplingParams(max_tokens=tokens)

    def ask(kind: str, e: Any) -> Request:
        if kind == "score":
            return build_request(task, "teacher", "m", e, split.fewshot)
        req = build_request(task, "student", "m", e, split.fewshot)
        return req.model_copy(update={"labels": None, "params": params})

    timed = {f"{k}-{e.id}": ask(k, e) for k in work for e in questions[:n]}
    warm = {f"{k}-{e.id}": ask(k, e) for k in work for e in questions[-4:]}
    return timed, warm


def timed(provider: Provider, reqs: dict[str, Request], store: Store) -> tuple[float, CaptureStats]:
    """Seconds to answer and store every request (none stored before)."""
    start = time.perf_counter()
    stats = capture(provider, reqs, store, batch_size=8, desc="bench")
    seconds = time.perf_counter() - start
    assert stats.called == len(reqs) and stats.failed == 0, stats.summary()
    return seconds, stats


def answers(stats: CaptureStats) -> dict[str, str | None]:
    return {k: c.text for k, c in stats.completions.items()}


def tokens(stats: CaptureStats) -> int:
    """Generated tokens (free-text answers only; a scored label is no generation)."""
    return sum(
        c.usage.completion_tokens for c in stats.completions.values() if not c.label_logprobs
    )


def run(
    make: Callable[[], Provider], reqs: dict[str, Request], warm: dict[str, Request], d: Path
) -> tuple[float, float, CaptureStats]:
    """(start-up seconds, capture seconds, stats) of one path, each in its own store."""
    start = time.perf_counter()
    provider = make()
    with Store(d / "warm.db") as store:
        capture(provider, warm, store, batch_size=8, desc="warm-up")  # the engines start
    up = time.perf_counter() - start
    with Store(d / "timed.db") as store:
        seconds, stats = timed(provider, reqs, store)
    return up, seconds, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=200, help="TREC questions per work")
    ap.add_argument("--work", default="score,generate", help="score, generate or both")
    ap.add_argument("--tokens", type=int, default=32, help="max tokens per generated answer")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="a bundled name or folder")
    ap.add_argument("--workers", type=int, default=2, help="Ray actors (vLLM engines)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    args = ap.parse_args()
    work = args.work.split(",")
    reqs, warm = workload(work, args.questions, args.tokens)
    folder = Path(args.model)
    ref = f"vllm:{folder if folder.is_dir() else bundled_path(args.model)}"

    use_engine_options(ENGINE)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "one").mkdir()
        one = run(lambda: get_model(ref), reqs, warm, Path(d) / "one")
    shutdown_engine()  # its processes leave the CPUs to the workers

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    start = time.perf_counter()
    ray.init(
        num_cpus=args.cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    init_s = time.perf_counter() - start
    setup = partial(use_engine_options, ENGINE)
    with RayEngine(workers=args.workers) as engine, tempfile.TemporaryDirectory() as d:
        two = run(lambda: engine.model(ref, 8, setup), reqs, warm, Path(d))
        workers = len(engine.worker_pids)
    ray.shutdown()

    same = sum(answers(one[2])[k] == t for k, t in answers(two[2]).items())
    print(f"\n{ref}: {len(reqs)} requests ({args.questions} TREC questions x {args.work})")
    print(f"fp32, greedy, <= {args.tokens} tokens per answer; {args.cpus} CPUs for Ray")
    print()
    print("| capture | engines | start-up s | seconds | requests/s | generated tok/s |")
    print("|---|---|---|---|---|---|")
    for name, n, (up, secs, stats) in (("one process", 1, one), ("Ray, local", workers, two)):
        rate = f"{tokens(stats) / secs:.1f}" if "generate" in work else "-"
        print(f"| {name} | {n} | {up:.1f} | {secs:.2f} | {len(reqs) / secs:.2f} | {rate} |")
    print()
    print(f"ratio (Ray / one process, requests/s): {one[1] / two[1]:.2f}x")
    print(f"same answer from both: {same}/{len(reqs)}; ray.init {init_s:.1f} s, not in the table")


if __name__ == "__main__":
    main()
