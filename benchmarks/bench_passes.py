"""A batch with one very long input: padded to it whole, against padded passes.

    .venv/bin/python benchmarks/bench_passes.py [--task examples/sms-spam/task.yaml]
        [--model local:smollm2-135m-instruct] [--field text] [--long-chars 9000] [--repeats 2]

The local provider pads a batch to its longest prompt, and capture batches by length, so
the longest inputs of a data set share the last batch. In the SMS Spam Collection five CSV
records are merged by stray quotes (the reader warns of them); one is an 8,996-token
"message", and the validation batch that held it took 14 minutes for the base student:
eight rows padded to its length. A local provider now splits a batch into passes of at
most `pass_tokens` (default `still.models.PASS_TOKENS`) padded tokens, so the outlier
runs alone.

This script takes the task's real data: seven messages of median length and the longest
record (cut to `--long-chars` characters, so the whole-batch way finishes in a minute),
and scores the eight as one batch both ways in one process: PASS_TOKENS unbounded (the
whole batch, as before) and as it is now. Prints each way's seconds, the ratio, the
prompt tokens of the rows and the largest difference between the two ways' label scores.
"""

from __future__ import annotations

import argparse
import statistics
import time

from still.capture import build_request
from still.models import PASS_TOKENS, LocalProvider, get_model, padded_passes
from still.tasks import load_examples, load_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="examples/sms-spam/task.yaml")
    ap.add_argument("--model", default="local:smollm2-135m-instruct")
    ap.add_argument("--field", default="text", help="the input field whose length counts")
    ap.add_argument("--long-chars", type=int, default=9000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    task = load_task(args.task)
    examples, _ = load_examples(task)
    by_length = sorted(examples, key=lambda e: len(e.fields[args.field]))
    middle = len(by_length) // 2
    longest = by_length[-1]
    cut = {**longest.fields, args.field: longest.fields[args.field][: args.long_chars]}
    rows = [*by_length[middle - 3 : middle + 4], longest.model_copy(update={"fields": cut})]
    provider = get_model(args.model)
    assert isinstance(provider, LocalProvider)
    reqs = [build_request(task, "student", provider.name, e, []) for e in rows]
    tokens = [len(provider.prompt_ids(r.messages)) for r in reqs]
    provider.complete(reqs[:2])  # warm-up: weights loaded

    seconds: dict[str, float] = {}
    scores = {}
    default = PASS_TOKENS
    for name, budget in (("one padded batch (before)", 10**9), (f"passes of {default}", default)):
        provider.pass_tokens = budget
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            outs = provider.complete(reqs)
            times.append(time.perf_counter() - start)
        seconds[name] = min(times)
        scores[name] = [c.label_logprobs or {} for c in outs]
    provider.pass_tokens = default
    print(f"{args.model} on {args.task}: 8 rows, prompt tokens {tokens} "
          f"(median {statistics.median(tokens):.0f}); best of {args.repeats}\n")  # fmt: skip
    print("| scoring | seconds | padded tokens |")
    print("|---|---|---|")
    passes = padded_passes(tokens, default)
    padded = {
        "one padded batch (before)": len(tokens) * max(tokens),
        f"passes of {default}": sum(len(p) * max(tokens[i] for i in p) for p in passes),
    }
    for name, s in seconds.items():
        print(f"| {name} | {s:.2f} | {padded[name]:,} |")
    before, now = seconds.values()
    print(f"\nspeed-up: {before / now:.2f}x ({len(passes)} passes: "
          f"{[len(p) for p in passes]} rows)")  # fmt: skip
    a, b = scores.values()
    diff = max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) for k in x)
    print(f"largest label-score difference between the two ways: {diff:.2e}")


if __name__ == "__main__":
    main()
