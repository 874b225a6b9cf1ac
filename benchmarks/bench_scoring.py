"""Label scoring speed: still's two-pass prefix-cached scoring against the naive baseline.

The baseline is what most scripts do: one full forward pass of prompt + label for every
label. Both run in this process on the same TREC questions, with the demo's teacher prompt
(Gemma 3 270M, 12-shot) and student prompt (SmolLM2-135M, one line). Run on a quiet machine:

    .venv/bin/python benchmarks/bench_scoring.py [N_QUESTIONS] [student|teacher]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from still.capture import build_request
from still.models import LocalProvider, get_model
from still.tasks import load_examples, load_task, split_examples
from still.types import Request

ROOT = Path(__file__).resolve().parents[1]


def naive(p: LocalProvider, reqs: list[Request]) -> list[str]:
    """One forward pass per (question, label), full logits: the common baseline."""
    out = []
    for r in reqs:
        prompt = p.render(r.messages)
        ids = p.prompt_ids(r.messages)
        best, best_lp = "", -float("inf")
        for lab in r.labels or ():
            lab_ids = p.label_ids(prompt, lab)
            with torch.inference_mode():
                logits = p.model(torch.tensor([ids + lab_ids])).logits[0].float()
            logp = torch.log_softmax(logits, -1)
            lp = sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(lab_ids))
            if lp > best_lp:
                best, best_lp = lab, lp
        out.append(best)
    return out


def still_scoring(p: LocalProvider, reqs: list[Request], batch: int = 8) -> list[str]:
    p._prefix = None  # start cold, as a new run does
    out = []
    for i in range(0, len(reqs), batch):
        out += [c.text for c in p.complete(reqs[i : i + batch])]
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    task = load_task(ROOT / "examples" / "trec" / "task.yaml")
    examples, _ = load_examples(task)
    split = split_examples(examples, task.split, 12)
    questions = split.heldout[:n]
    print(f"{n} TREC questions, 6 labels, torch threads={torch.get_num_threads()}")
    print(f"{'model / prompt':40} {'method':22} {'s/question':>10} {'speed-up':>9}")
    only = sys.argv[2] if len(sys.argv) > 2 else None
    for role, ref in (("student", task.models.student), ("teacher", task.models.teacher)):
        if only and role != only:
            continue
        p = get_model(ref)
        assert isinstance(p, LocalProvider)
        reqs = [build_request(task, role, ref, e, split.fewshot) for e in questions]
        still_scoring(p, reqs[:8])  # warm-up
        times: dict[str, list[float]] = {"naive (1 pass/label)": [], "still (2-pass, cached)": []}
        answers: dict[str, list[str]] = {}
        for _ in range(3):
            for name, fn in (
                ("naive (1 pass/label)", naive),
                ("still (2-pass, cached)", still_scoring),
            ):
                t = time.perf_counter()
                answers[name] = fn(p, reqs)
                times[name].append((time.perf_counter() - t) / n)
        base = statistics.median(times["naive (1 pass/label)"])
        label = f"{ref.removeprefix('local:')} ({role} prompt)"
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"{label:40} {name:22} {med:10.3f} {base / med:8.1f}x", flush=True)
        same = sum(a == b for a, b in zip(*answers.values(), strict=True))
        print(f"{'':40} same answers: {same}/{n}", flush=True)


if __name__ == "__main__":
    main()
