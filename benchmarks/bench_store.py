"""The store's write rate: completions/s through `Store.put` (a commit each) against
`Store.put_many` in blocks, as the capture loop and the Ray driver write them.

    .venv/bin/python benchmarks/bench_store.py [N]

Every completion is a realistic one: a 12-shot classification prompt of about 1,500
characters, a one-word answer, usage, latency and the run's tags; a second kind adds what
KD stores, 32 answer tokens with 20 top logprobs each. The baseline is `put`, one
transaction per completion, measured in the same process on the same file system. The
ratio says how much batching buys; the rate says how many answers a second one driver can
keep, the number that sizes a fleet (docs/benchmarks.md works it out).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from still.store import Store
from still.types import Completion, Message, Request, Usage

SHOTS = "\n".join(f"Question: what is example {i}?\nType: entity" for i in range(12))


def completion(i: int, topk: bool) -> Completion:
    """One stored answer, distinct per `i` (its own request hash)."""
    req = Request(
        model="vllm:/models/teacher-8b",
        messages=(
            Message(role="system", content="Classify the question's type."),
            Message(role="user", content=f"{SHOTS}\nQuestion: what is item {i}?\nType:"),
        ),
    )
    extra = {}
    if topk:
        tokens = tuple(f"tok{j}" for j in range(32))
        extra = {
            "tokens": tokens,
            "token_logprobs": tuple(-0.1 * j for j in range(32)),
            "top_logprobs": tuple({f"alt{k}": -0.2 * k for k in range(20)} for _ in tokens),
        }
    return Completion(
        request=req,
        text="entity",
        usage=Usage(prompt_tokens=420, completion_tokens=2),
        latency_s=0.05,
        metadata={"run": "bench", "task": "trec", "role": "teacher", "split": "train"},
        **extra,
    )


def rate(n: int, block: int, topk: bool) -> float:
    """Completions/s storing `n` completions `block` at a time (0: `put`, one commit each)."""
    items = [completion(i, topk) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "still.db") as store:
        start = time.perf_counter()
        if block == 0:
            for c in items:
                store.put(c)
        else:
            for k in range(0, n, block):
                store.put_many(items[k : k + block])
        seconds = time.perf_counter() - start
        assert store.count() == n
    return n / seconds


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    print(f"{n} completions per row; a new store file each; completions/s, ratio to put")
    print(f"{'answer':>22} {'writes':>16} {'completions/s':>14} {'ratio':>7}")
    for topk in (False, True):
        kind = "label + top-20 x 32" if topk else "one-word label"
        base = rate(n, 0, topk)
        print(f"{kind:>22} {'put (1 commit)':>16} {base:>14,.0f} {1.0:>6.2f}x")
        for block in (8, 64, 512):
            r = rate(n, block, topk)
            print(f"{kind:>22} {f'put_many({block})':>16} {r:>14,.0f} {r / base:>6.2f}x")


if __name__ == "__main__":
    main()
