"""How far two runs of one task on two engines agree, answer by answer.

    .venv/bin/python benchmarks/compare_runs.py runs/trec runs/trec-vllm

Issue 13 asks that `vllm:` give the answers `local:` gives. Two runs of the same task (the
demo on `local:` and `examples/trec/vllm.yaml` on `vllm:`) send the same prompts, so each
stored answer of one has a twin in the other: the same role, split, messages and labels.
This pairs them and prints, per role and split, how many answers are equal and, for label
answers, the largest and mean difference of the label log-likelihoods (nats). The
distilled students are compared too, by role: they are trained from each engine's teacher
answers, so they are different models, and their agreement says how much the engines'
differences carried through training.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

from still.store import Store

ROLES = ("teacher", "student", "distilled", "distilled-verified", "control")


def answers(run_dir: Path) -> dict[tuple[str, str, str], Any]:
    """The run's stored answers (ok ones), keyed by role, split and the request's content
    (messages and labels: what both engines were asked, without the model's name)."""
    out: dict[tuple[str, str, str], Any] = {}
    with Store(run_dir / "still.db") as store:
        for c in store.list():
            tags = c.metadata or c.request.metadata or {}
            if not c.ok or "role" not in tags:
                continue
            content = json.dumps(
                [[m.role, m.content] for m in c.request.messages] + [c.request.labels or []]
            )
            out[tags["role"], tags.get("split", ""), content] = c
    return out


def compare(a_dir: Path, b_dir: Path) -> list[dict[str, Any]]:
    """One row per (role, split) present in both runs."""
    a, b = answers(a_dir), answers(b_dir)
    groups: dict[tuple[str, str], list[tuple[Any, Any]]] = defaultdict(list)
    for key, ca in a.items():
        cb = b.get(key)
        if cb is not None:
            groups[key[0], key[1]].append((ca, cb))
    rows = []
    for (role, split), pairs in sorted(
        groups.items(), key=lambda g: (ROLES.index(g[0][0]) if g[0][0] in ROLES else 99, g[0][1])
    ):
        equal = sum(ca.text == cb.text for ca, cb in pairs)
        diffs = [
            abs(ca.label_logprobs[lab] - cb.label_logprobs[lab])
            for ca, cb in pairs
            if ca.label_logprobs and cb.label_logprobs
            for lab in ca.label_logprobs
            if lab in cb.label_logprobs
        ]
        rows.append(
            {
                "role": role,
                "split": split,
                "pairs": len(pairs),
                "equal": equal,
                "max_abs_diff": max(diffs) if diffs else None,
                "mean_abs_diff": mean(diffs) if diffs else None,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="a run folder (e.g. runs/trec, on local:)")
    ap.add_argument("b", type=Path, help="the same task's run on another engine")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args()
    rows = compare(args.a, args.b)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| role | split | answers paired | equal | label score max / mean abs diff (nats) |")
    print("|---|---|---|---|---|")
    for r in rows:
        scores = (
            f"{r['max_abs_diff']:.2e} / {r['mean_abs_diff']:.2e}"
            if r["max_abs_diff"] is not None
            else "—"
        )
        share = f"{r['equal']} ({r['equal'] / r['pairs']:.1%})"
        print(f"| {r['role']} | {r['split']} | {r['pairs']} | {share} | {scores} |")


if __name__ == "__main__":
    main()
