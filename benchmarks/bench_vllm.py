"""vLLM (`vllm:`) against the transformers loop (`local:`) on the same model and prompts.

Generation: TREC questions asked free text with the student's prompt (greedy, at most
`--tokens` tokens: both engines give the same answers, so the same tokens), handed over
`c` at a time for c in `--levels`: one provider call of c requests is c concurrent
requests for vLLM (one continuous batch) and one padded generate() for local. Rate:
completion tokens over wall seconds. Label scoring: the teacher's 12-shot prompt, every
label's log-likelihood, questions per second (8 a call, the demo's batch size).

The engine start and the model load are not timed (one warm-up call each first). Run it
under .venv-vllm, where both providers are installed:

    nice -n 10 .venv-vllm/bin/python benchmarks/bench_vllm.py [--levels 1,16,64]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from still.capture import build_request
from still.models import bundled_path, get_model, shutdown_engine, use_engine_options
from still.tasks import load_examples, load_task
from still.tasks import split_examples as split
from still.types import Request, SamplingParams

ROOT = Path(__file__).resolve().parents[1]


def generation(provider: object, reqs: list[Request], level: int) -> tuple[float, int]:
    """Tokens/s answering `reqs` in calls of `level` requests, and the tokens made."""
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(reqs), level):
        outs = provider.complete(reqs[i : i + level])  # type: ignore[attr-defined]
        assert all(c.ok for c in outs), [c.error for c in outs if not c.ok]
        tokens += sum(c.usage.completion_tokens for c in outs)
    return tokens / (time.perf_counter() - start), tokens


def scoring(provider: object, reqs: list[Request], batch: int = 8) -> float:
    """Questions/s scoring every label of `reqs`."""
    start = time.perf_counter()
    for i in range(0, len(reqs), batch):
        outs = provider.complete(reqs[i : i + batch])  # type: ignore[attr-defined]
        assert all(c.ok for c in outs), [c.error for c in outs if not c.ok]
    return len(reqs) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="1,16,64", help="concurrent requests per call")
    ap.add_argument("--tokens", type=int, default=32, help="max tokens per answer")
    ap.add_argument("--scored", type=int, default=32, help="questions scored (0: skip)")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    task = load_task(ROOT / "examples" / "trec" / "task.yaml")
    examples, _ = load_examples(task)
    s = split(examples, task.split, 12)
    questions = s.train + s.validation
    model = bundled_path("smollm2-135m-instruct")
    use_engine_options({"dtype": "float32", "max_model_len": 2048, "enforce_eager": True})
    providers = {"vllm": get_model(f"vllm:{model}"), "local": get_model(f"local:{model}")}
    params = SamplingParams(max_tokens=args.tokens)

    def ask(n: int, offset: int = 0) -> list[Request]:
        return [
            build_request(task, "student", "m", e, s.fewshot).model_copy(
                update={"labels": None, "params": params}
            )
            for e in questions[offset : offset + n]
        ]

    for p in providers.values():  # start the engine, load the model: not timed
        p.complete(ask(2, len(questions) - 2))

    print(f"SmolLM2-135M-Instruct fp32, greedy, <= {args.tokens} tokens per answer")
    print(f"{'concurrent':>10} {'requests':>8} {'vllm tok/s':>11} {'local tok/s':>12} {'ratio':>6}")
    for level in levels:
        reqs = ask(max(level, 4) if level > 1 else 4)
        rate = {}
        for name, p in providers.items():
            rate[name], tokens = generation(p, reqs, level)
        print(
            f"{level:>10} {len(reqs):>8} {rate['vllm']:>11.1f} {rate['local']:>12.1f} "
            f"{rate['vllm'] / rate['local']:>6.2f}"
        )
    if args.scored:
        scored = [
            build_request(task, "teacher", "m", e, s.fewshot) for e in questions[: args.scored]
        ]
        qps = {name: scoring(p, scored) for name, p in providers.items()}
        print(f"\nlabel scoring, 12-shot teacher prompt, {args.scored} questions, 8 a call")
        print(f"{'vllm q/s':>9} {'local q/s':>10} {'ratio':>6}")
        print(f"{qps['vllm']:>9.2f} {qps['local']:>10.2f} {qps['vllm'] / qps['local']:>6.2f}")
    shutdown_engine()


if __name__ == "__main__":
    main()
