"""Variants of one task compared on its held-out test split with paired intervals: one
command for a measurement such as "SFT against cross-tokenizer KD" or "50 labelled
examples against 50 plus teacher-written ones".

    .venv/bin/python benchmarks/bench_variants.py --run-dir runs/sarcasm-xtok \\
        examples/sarcasm/xtok-sft.yaml examples/sarcasm/xtok-uld.yaml \\
        examples/sarcasm/xtok-align.yaml

Each task file is a variant: it `extends:` a common task and changes what is compared
(the recipe, `synthesize.use`), never `split:` or the models. Each is run by `still run`
(`run_all`), in turn, in ONE run folder: one store, so the teacher's, the base student's
and the judges' answers are asked once, and every variant is compared on the same held-out
examples. After each run its distilled students' per-example rows are kept under the
variant's name (the file's stem; with two students, `stem:role`). Then, on the held-out
examples every model answered: each model's pass rate (Wilson interval) and mean grader
score (bootstrap interval), and each variant's paired differences (bootstrap interval of
pass rate and score, McNemar's exact p for the pass rate) against the base student and
against the first variant, with its training time and rows from train.json. Writes
variants.md and variants.json in the run folder and prints the table. A rerun asks no
stored answer again and retrains no student (the run folder's content addressing).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from still.bench import compare_scores, mcnemar_exact, paired_bootstrap, wilson
from still.pipeline import run_all

BASE = ("teacher", "student")
"""The run's own roles shown beside the variants (the control is left out)."""


@dataclass
class Model:
    """One compared model: a variant's student, or the teacher or base student."""

    name: str
    model: str
    rows: dict[str, dict[str, Any]]  # example id -> its per-example row
    train: dict[str, Any] = field(default_factory=dict)  # train.json, for a student
    seconds: float | None = None  # the variant's whole `still run` (first run only)


def _train_info(model: str) -> dict[str, Any]:
    """A trained student's train.json (its folder is the model reference's path)."""
    path = Path(model.split(":", 1)[-1]) / "train.json"
    if not path.is_file():
        return {}
    info: dict[str, Any] = json.loads(path.read_text())
    return {k: info.get(k) for k in ("recipe", "method", "examples", "steps", "seconds")}


def run_variants(
    task_files: Sequence[Path], run_dir: Path, force: bool = False
) -> tuple[list[Model], str]:
    """Run every variant in `run_dir` and collect the models compared: the teacher and the
    base student (from the first variant), then each variant's distilled students. Returns
    them with the task's name."""
    models: list[Model] = []
    name = ""
    for path in task_files:
        start = time.perf_counter()
        run, cmp = run_all(path, run_dir, force=force)
        seconds = time.perf_counter() - start
        name = run.task.name
        rows: dict[str, dict[str, dict[str, Any]]] = {}
        for line in (run.dir / "results.jsonl").read_text().splitlines():
            row = json.loads(line)
            rows.setdefault(str(row["role"]), {})[str(row["example_id"])] = row
        if not models:
            models += [
                Model(r.role, r.model, rows.get(r.role, {})) for r in cmp.results if r.role in BASE
            ]
        students = [r for r in cmp.results if r.role.startswith("distilled")]
        for r in students:
            label = path.stem if len(students) == 1 else f"{path.stem}:{r.role}"
            models.append(Model(label, r.model, rows.get(r.role, {}), _train_info(r.model),
                                seconds))  # fmt: skip
    return models, name


def compare_models(models: Sequence[Model], n_resamples: int = 10_000) -> dict[str, Any]:
    """Each model's pass rate and mean score on the examples all answered, and each
    variant's paired differences against the base student and the first variant."""
    shared = sorted(set.intersection(*(set(m.rows) for m in models))) if models else []
    variants = [m for m in models if m.name not in BASE]

    def passes(m: Model) -> list[bool]:
        return [bool(m.rows[i]["correct"]) for i in shared]

    def scores(m: Model) -> list[float]:
        return [float(m.rows[i].get("score") or 0.0) for i in shared]

    score_rows = [{"role": m.name, "example_id": i, "score": s}
                  for m in models for i, s in zip(shared, scores(m), strict=True)]  # fmt: skip
    score_ci = {r["role"]: r for r in compare_scores(score_rows, n_resamples=n_resamples)["roles"]}
    table = []
    for m in models:
        k = sum(passes(m))
        low, high = wilson(k, len(shared))
        sc = score_ci.get(m.name, {})
        entry: dict[str, Any] = {
            "name": m.name, "model": m.model, "n": len(shared), "pass_rate": k / len(shared)
            if shared else 0.0, "pass_low": low, "pass_high": high,
            "score": sc.get("mean"), "score_low": sc.get("ci_low"), "score_high": sc.get("ci_high"),
            "train": m.train, "run_seconds": m.seconds, "against": {},
        }  # fmt: skip
        if m.name not in BASE:
            others = [o for o in models if o.name == "student"] + variants[:1]
            for o in others:
                if o is m:
                    continue
                d, dlo, dhi = paired_bootstrap(passes(m), passes(o), n_resamples=n_resamples)
                s, slo, shi = paired_bootstrap(scores(m), scores(o), n_resamples=n_resamples)
                entry["against"][o.name] = {
                    "pass_diff": d, "pass_low": dlo, "pass_high": dhi,
                    "mcnemar_p": mcnemar_exact(passes(m), passes(o)).p_value,
                    "score_diff": s, "score_low": slo, "score_high": shi,
                }  # fmt: skip
        table.append(entry)
    return {"examples": len(shared), "models": table}


def markdown(name: str, result: dict[str, Any]) -> str:
    """The comparison as a markdown table, variants against the base student and the first."""
    table = result["models"]
    first = next((m["name"] for m in table if m["name"] not in BASE), None)
    head = ["model", "recipe, method", "rows", "train s", "pass rate [95% CI]",
            "mean score [95% CI]", "pass - base student (paired)", "score - base student"]
    if first is not None and sum(m["name"] not in BASE for m in table) > 1:
        head += [f"pass - {first}", f"McNemar p vs {first}", f"score - {first}"]
    lines = [f"## {name}: {len(table) - len(BASE)} variants on {result['examples']} held-out "
             "examples", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]  # fmt: skip

    def ci(x: float | None, lo: float | None, hi: float | None, pct: bool) -> str:
        if x is None or lo is None or hi is None:
            return "-"
        return f"{x:.1%} [{lo:.1%}, {hi:.1%}]" if pct else f"{x:.3f} [{lo:.3f}, {hi:.3f}]"

    def diff(a: dict[str, Any] | None, what: str, pct: bool) -> str:
        if a is None:
            return "-"
        x, lo, hi = a[f"{what}_diff"], a[f"{what}_low"], a[f"{what}_high"]
        if pct:
            return f"{100 * x:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] points"
        return f"{x:+.3f} [{lo:+.3f}, {hi:+.3f}]"

    for m in table:
        t = m["train"]
        cells = [
            m["name"],
            f"{t.get('recipe')}, {t.get('method')}" if t else "-",
            str(t.get("examples", "-")) if t else "-",
            f"{t['seconds']:.0f}" if t.get("seconds") else "-",
            ci(m["pass_rate"], m["pass_low"], m["pass_high"], True),
            ci(m["score"], m["score_low"], m["score_high"], False),
            diff(m["against"].get("student"), "pass", True),
            diff(m["against"].get("student"), "score", False),
        ]
        if len(head) > 8:
            vs = m["against"].get(first) if first else None
            cells += [diff(vs, "pass", True), f"{vs['mcnemar_p']:.2g}" if vs else "-",
                      diff(vs, "score", False)]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Pass rate: every grader passes (Wilson interval). Score: the mean of the "
              "graders' scores (bootstrap interval). Differences are paired over the same "
              "examples (bootstrap interval); McNemar's exact test on the pass rate."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task_files", nargs="+", type=Path,
                        help="The variants, the reference first.")
    parser.add_argument("--run-dir", type=Path, required=True, help="The one run folder.")
    parser.add_argument("--force", action="store_true",
                        help="Train even when the teacher check says not to (still run --force).")
    args = parser.parse_args(argv)  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()
    models, name = run_variants(args.task_files, args.run_dir, args.force)
    result = compare_models(models)
    result["seconds"] = time.perf_counter() - started
    result["task_files"] = [str(p) for p in args.task_files]
    text = markdown(name, result) + f"\nWhole command: {result['seconds']:.0f} s.\n"
    (args.run_dir / "variants.md").write_text(text)
    (args.run_dir / "variants.json").write_text(json.dumps(result, indent=1, default=str))
    print(text)
    return result


if __name__ == "__main__":
    main()
