"""Seeded sampling on the local provider: one batch against one request at a time.

    .venv/bin/python benchmarks/bench_seeded.py [--model local:gemma3-270m] [--n 32]
        [--batch-size 8] [--max-tokens 40]

Teacher-written inputs (`still synthesize`) sample every request with its own seed, so the
same request writes the same input on a rerun. Before `still.models._seeded`, the local
provider decoded such requests one at a time (a row's sample drew from torch's one global
generator, so it would have depended on its batch); now a batch of them decodes in one
generate() call, each row sampling from its own generator. This script times both ways in
one process, on the same requests (TREC-like question-writing prompts at temperature 0.9),
and checks that both give the same answers: the batched way is only faster, not another
sampler.

Prints a table of requests/s and tokens/s, the ratio, and how many answers are equal.
"""

from __future__ import annotations

import argparse
import time

from still.models import get_model
from still.types import Message, Request, SamplingParams

PROMPT = (
    'Questions whose answer is of the type "{label}":\n'
    "1. What is the capital of France?\n2. Who wrote Hamlet?\n3. How far is the moon?\n4."
)
LABELS = ["location", "human", "number", "entity", "description", "abbreviation"]


def requests(model: str, n: int, max_tokens: int) -> list[Request]:
    """`n` seeded question-writing requests, as synthesis sends them."""
    return [
        Request(
            model=model,
            messages=(Message(role="user", content=PROMPT.format(label=LABELS[i % 6])),),
            params=SamplingParams(
                max_tokens=max_tokens, temperature=0.9, seed=1000 + i, stop=("\n",)
            ),
        )
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="local:gemma3-270m")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=40)
    args = ap.parse_args()
    provider = get_model(args.model)
    reqs = requests(provider.name, args.n, args.max_tokens)
    provider.complete(reqs[:2])  # warm-up: weights loaded, kernels compiled

    rows = []
    outs = {}
    for name, size in (
        ("one at a time (before)", 1),
        (f"batches of {args.batch_size}", args.batch_size),
    ):
        start = time.perf_counter()
        done = []
        for i in range(0, len(reqs), size):
            done += provider.complete(reqs[i : i + size])
        seconds = time.perf_counter() - start
        tokens = sum(c.usage.completion_tokens for c in done if c.usage)
        outs[name] = [c.text for c in done]
        rows.append((name, seconds, len(done) / seconds, tokens / seconds))
    print(f"{args.model}, {args.n} seeded requests, max_tokens {args.max_tokens}, T 0.9\n")
    print("| decoding | seconds | requests/s | tokens/s |")
    print("|---|---|---|---|")
    for name, seconds, rps, tps in rows:
        print(f"| {name} | {seconds:.1f} | {rps:.2f} | {tps:.1f} |")
    print(f"\nbatched / one at a time: {rows[1][2] / rows[0][2]:.2f}x requests/s")
    a, b = outs.values()
    print(f"equal answers: {sum(x == y for x, y in zip(a, b, strict=True))} of {len(a)}")


if __name__ == "__main__":
    main()
