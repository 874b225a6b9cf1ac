"""Distillation quality across the example tasks (issue 15): one table, and the goal.

For every example task (`examples/*/task.yaml`, the few-shot teacher) and each trained-teacher
variant beside it (`examples/*/trained-teacher.yaml`, `teacher_training:`), one row from its
run's report.json, all numbers on the held-out test split: teacher, base student, the
teacher-only (`distilled`) and grader-verified (`distilled-verified`) students, the
majority-label and chance baselines, the share of the teacher-base gap the teacher-only
student closes with its paired 95% interval, and whether the teacher beats the majority
baseline beyond its interval (its Wilson interval lies above it). Where the report's verdict
withholds the gap figure (`still.report.gap_problems`: a base student below a baseline, a
teacher not beating it), the cell is "—" and the note says why.

Then the goal of issue 15, per teacher variant: the teacher-only student closes at least 90%
of the gap on average over the tasks whose teacher beats the majority baseline beyond its
interval. The mean takes each such task's gap figure from its report, withheld or not (the
goal's condition is the teacher's alone), and names the ones the verdict withholds.

A task whose recipe learns from the student's own graded answers (grpo: countdown) asks no
teacher for training answers and is left out.

    .venv/bin/python benchmarks/bench_quality.py [--runs DIR] [TASK_FILE ...]
    .venv/bin/python benchmarks/bench_quality.py --run [--force] [TASK_FILE ...]

Reads $STILL_RUNS/<task name>/report.json (or DIR/<task name>; default ./runs). `--run`
first runs `still run TASK_FILE` for each task whose report is missing or older than its
task file (or a file it extends); `still run` reuses every stored answer and trained model
still current, so it pays only for what changed. `--force` passes `--force` on (train even
when the teacher fails the check before training, as examples/sms-spam/task.yaml says).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from still.bench import Baselines, Comparison, ModelResult
from still.report import gap_problems
from still.settings import runs_root
from still.tasks import load_task

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
VARIANTS = ("task.yaml", "trained-teacher.yaml")
"""Task files of an example folder benchmarked here: the task, and its trained teacher."""
GOAL = 0.9
"""Issue 15: the share of the gap the teacher-only student closes on average."""


@dataclass(frozen=True)
class Entry:
    """One task run to table: its task file, its run folder's name and its teacher."""

    task_file: Path
    name: str
    variant: str


def entry(task_file: Path) -> Entry:
    """A task file's entry: "trained" when it trains its teacher (`teacher_training`)."""
    task = load_task(task_file)
    return Entry(task_file, task.name, "trained" if task.teacher_training else "few-shot")


def entries(examples: Path = EXAMPLES) -> list[Entry]:
    """Every example task file of `VARIANTS`, except tasks that distil no teacher (grpo)."""
    out = []
    for folder in sorted(p for p in examples.iterdir() if p.is_dir()):
        for file in VARIANTS:
            path = folder / file
            if path.is_file() and load_task(path).train.recipe != "grpo":
                out.append(entry(path))
    return out


def comparison(report: dict[str, Any]) -> Comparison:
    """The comparison a report.json was written from (`Comparison.as_dict` and more)."""
    known = {f.name for f in fields(ModelResult)}
    results = [ModelResult(**{k: v for k, v in r.items() if k in known}) for r in report["results"]]
    base = report.get("baselines")
    baselines = None
    if base is not None:
        ci = base.get("majority_ci")
        baselines = Baselines(
            base.get("majority_label"), base.get("majority"),
            None if ci is None else (ci[0], ci[1]),
            base.get("chance"), base.get("n", 0),
        )  # fmt: skip
    return Comparison(
        results, report.get("paired", []), report.get("gaps", {}), baselines,
        report.get("split", "heldout"),
    )  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One line of the table, and what the goal line needs of it.

    Attributes:
        cells: the table's cells, in `HEADER`'s order.
        notes: what the cells cannot say (why no gap figure, a forced run), under the table.
        variant: the teacher variant (the goal is measured per variant).
        task: the task's run name.
        beats_majority: the teacher's interval lies above the majority baseline (None: no
            report, or no teacher or majority baseline in it).
        gap: the teacher-only student's gap closed with its interval, from the report
            (None: not measured); `gap_shown` whether the report's verdict shows it.
        reported: whether the run has a report at all.
    """

    cells: tuple[str, ...]
    notes: tuple[str, ...]
    variant: str
    task: str
    beats_majority: bool | None = None
    gap: tuple[float, float | None, float | None] | None = None
    gap_shown: bool = False
    reported: bool = True


HEADER = (
    "task", "teacher", "test n", "teacher acc.", "base student", "distilled (teacher-only)",
    "distilled (grader-verified)", "majority", "chance", "gap closed (teacher-only)",
    "teacher > majority beyond its interval",
)  # fmt: skip


def _acc(r: ModelResult | None) -> str:
    return "—" if r is None else f"{r.accuracy:.1%} [{r.ci_low:.1%}, {r.ci_high:.1%}]"


def _gap(g: tuple[float, float | None, float | None]) -> str:
    point, low, high = g
    return f"{point:.0%}" + ("" if low is None or high is None else f" [{low:.0%}, {high:.0%}]")


def row(entry: Entry, report: dict[str, Any] | None, missing: str = "") -> Row:
    """The table row of one task run from its report.json (None: not run; `missing` says
    what to do)."""
    if report is None:
        blank = ("—",) * (len(HEADER) - 2)
        said = (missing,) if missing else ()
        return Row((entry.name, entry.variant, *blank), said, entry.variant, entry.name,
                   reported=False)  # fmt: skip
    cmp = comparison(report)
    teacher, base = cmp.by_role("teacher"), cmp.by_role("student")
    b = cmp.baselines
    majority = None if b is None else b.majority
    beats = None if teacher is None or majority is None else teacher.ci_low > majority
    notes: list[str] = []
    raw = cmp.gaps.get("distilled")
    gap = None if raw is None else (raw["gap_closed"], raw.get("ci_low"), raw.get("ci_high"))
    shown = bool(report.get("gap_meaningful", not gap_problems(cmp)))
    if gap is None:
        gap_cell = "—"
        notes.append("no teacher-only student in this run")
    elif shown:
        gap_cell = _gap(gap)
        vs_base = cmp.pair("distilled", "student")
        if vs_base is not None and not cmp.beats("distilled", "student"):
            notes.append(
                "the teacher-only student does not beat the base student beyond noise "
                f"({100 * vs_base['diff']:+.1f} points [{100 * vs_base['diff_low']:+.1f}, "
                f"{100 * vs_base['diff_high']:+.1f}], paired), so its report prints no figure"
            )
    else:
        gap_cell = f"— (raw {_gap(gap)})"
        why = "; ".join(gap_problems(cmp)) or "the report's verdict withholds it"
        notes.append(f"no gap figure: {why}")
    check = report.get("teacher_check") or {}
    if check.get("forced") and check.get("problems"):
        notes.append("trained past a failed teacher check on validation (--force)")
    if b is None:
        maj_cell = chance_cell = "—"
    else:
        maj_cell = "—" if b.majority is None else f"{b.majority:.1%} ({b.majority_label})"
        chance_cell = "—" if b.chance is None else f"{b.chance:.1%}"
    if beats is None or teacher is None or majority is None:
        beats_cell = "—"
    else:
        beats_cell = f"{'yes' if beats else 'no'} ({teacher.ci_low:.1%} vs {majority:.1%})"
    n = max((r.n for r in cmp.results), default=0)
    cells = (
        entry.name, entry.variant, str(n), _acc(teacher), _acc(base),
        _acc(cmp.by_role("distilled")), _acc(cmp.by_role("distilled-verified")),
        maj_cell, chance_cell, gap_cell, beats_cell,
    )  # fmt: skip
    return Row(cells, tuple(notes), entry.variant, entry.name, beats, gap, shown)


def table(rows: list[Row]) -> str:
    """The rows as one markdown table, then each row's notes."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r.cells) + " |" for r in rows]
    notes = [f"- {r.task} ({r.variant} teacher): {'; '.join(r.notes)}." for r in rows if r.notes]
    return "\n".join(lines + ([""] + notes if notes else []))


def goal_lines(rows: list[Row]) -> list[str]:
    """Issue 15's goal, one line per teacher variant: the mean teacher-only gap closed over
    the tasks whose teacher beats the majority baseline beyond its interval, against 90%."""
    out = []
    for variant in dict.fromkeys(r.variant for r in rows):
        mine = [r for r in rows if r.variant == variant]
        counted = [r for r in mine if r.beats_majority and r.gap]
        unrun = [r.task for r in mine if not r.reported]
        head = f"Goal ({variant} teacher; ≥ {GOAL:.0%} of the gap closed, teacher-only, on average"
        head += " over the tasks whose teacher beats the majority baseline beyond its interval): "
        if unrun:
            head += f"(not run yet: {', '.join(unrun)}) "
        if not counted:
            out.append(head + "no task with a report qualifies, so it is not measured.")
            continue
        gaps = [r.gap[0] for r in counted if r.gap]
        mean = sum(gaps) / len(gaps)
        each = ", ".join(
            f"{r.task} {_gap(r.gap)}" + ("" if r.gap_shown else " (withheld by its report)")
            for r in counted
            if r.gap
        )
        verdict = "met" if mean >= GOAL else "not met"
        out.append(head + f"{mean:.0%} over {len(gaps)} task(s) ({each}): {verdict}.")
    return out


def _chain(task_file: Path) -> list[Path]:
    """The task file and every file it `extends:`, nearest first."""
    out = [task_file]
    while True:
        raw = yaml.safe_load(out[-1].read_text())
        ref = raw.get("extends") if isinstance(raw, dict) else None
        if not isinstance(ref, str):
            return out
        nxt = (out[-1].parent / ref).resolve()
        if nxt in out or not nxt.is_file():
            return out
        out.append(nxt)


def stale(task_file: Path, report_file: Path) -> bool:
    """Whether a report is missing or not of the task file as it now declares: its
    `task_digest` differs (an edit of comments alone keeps it), or, for a report older than
    digests, it is older than the task file or a file that it extends."""
    if not report_file.is_file():
        return True
    recorded = json.loads(report_file.read_text()).get("task_digest")
    if recorded is not None:
        return bool(recorded != load_task(task_file).digest())
    made = report_file.stat().st_mtime
    return any(p.stat().st_mtime > made for p in _chain(task_file))


def run_task(task_file: Path, runs: Path, force: bool) -> int:
    """`still run TASK_FILE` in its own process (each run frees its models), under `runs`."""
    cmd = [sys.executable, "-m", "still", "run", str(task_file), *(["--force"] if force else [])]
    print(f"$ STILL_RUNS={runs} {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    code = subprocess.run(cmd, env={**os.environ, "STILL_RUNS": str(runs)}, check=False).returncode
    took = time.perf_counter() - start
    print(f"{task_file}: exit {code} in {took / 60:.1f} min", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task_files", nargs="*", type=Path, help="default: every example")
    parser.add_argument("--runs", type=Path, help="run folders' root (default: $STILL_RUNS)")
    parser.add_argument("--run", action="store_true", help="run missing or stale tasks first")
    parser.add_argument("--force", action="store_true", help="with --run: still run --force")
    args = parser.parse_args(argv)
    runs = (args.runs or runs_root()).resolve()
    found = [entry(p) for p in args.task_files] if args.task_files else entries()
    failed = 0
    rows = []
    for e in found:
        report_file = runs / e.name / "report.json"
        if args.run and stale(e.task_file, report_file):
            failed += run_task(e.task_file, runs, args.force) != 0
        if not report_file.is_file():
            rows.append(row(e, None, f"no {report_file}: `--run` runs it"))
            continue
        r = row(e, json.loads(report_file.read_text()))
        if stale(e.task_file, report_file):
            r = replace(r, notes=(*r.notes, "the report is not of the task file as it now is"))
        rows.append(r)
    print(table(rows))
    print()
    for line in goal_lines(rows):
        print(f"- {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
