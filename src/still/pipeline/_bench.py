"""Grading and comparing: `still grade`, `still bench` (models called) and `still report`
(the same comparison rebuilt from the store alone), with what reports add to it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from still.bench import (
    Answer,
    Comparison,
    ModelResult,
    PositionBias,
    accuracy_by_length,
    baselines,
    compare_scores,
    economics,
    evaluate,
    label_distribution,
    rotate_example,
    summarise,
)
from still.capture import build_request
from still.cost import Budget, price_for
from still.graders import answer_of
from still.pipeline._confidence import CONFIDENCE_FILE
from still.pipeline._ensemble import ensemble_report
from still.pipeline._grpo import grpo_report
from still.pipeline._run import Run, StageError, capture_role
from still.pipeline._synthesize import synthesis_report
from still.report import print_table, role_names, verdict, write_reports
from still.types import Request

log = logging.getLogger("still.pipeline")

def grade_stage(run: Run, role: str, split: str, budget: Budget | None = None) -> ModelResult:
    """Stage: grade a role's stored completions on a split and store the grades. The
    role's model is not called (an example without a stored answer counts as failed,
    never skipped); judge graders are, through the store (cached, resumable) and within
    `budget`, which refuses an unpriced paid judge before any call."""
    run.require_prices(budget)
    examples = run.examples(split)
    comps = run.stored(role, split, include_failed=True)
    summary, _, grades = evaluate(
        role,
        run.model_for(role),
        examples,
        comps,
        run.graders,
        run.task.labels,
        capture=run.judge(budget),
    )
    run.store.put_grades(grades)
    return summary


def compare(
    run: Run,
    roles: tuple[str, ...] | None = None,
    limit: int | None = None,
    show: bool = True,
    budget: Budget | None = None,
    call: bool = True,
) -> Comparison:
    """Every role's model on the held-out split, graded, compared and written as reports.

    With `call` (`still bench`) missing answers are asked for (judges included) within
    `budget`, and grades are stored; without it (`still report`) only the store is read:
    an answer never captured counts as missing (a failure), never as a fresh call, and a
    role without a model yet (no distilled student) is left out.

    Raises:
        StageError: nothing to compare (no role has a model).
    """
    if call:
        run.require_prices(budget)
    results: list[ModelResult] = []
    rows: list[dict[str, Any]] = []
    heldout = run.split.heldout[:limit]
    for role in roles or run.roles():
        try:
            model = run.model_for(role)
        except StageError:
            if call:
                raise
            continue  # no distilled student yet: nothing of it to report
        if call:
            comps = capture_role(run, role, "heldout", limit, budget).completions
        else:
            comps = run.stored(role, "heldout", include_failed=True)
        summary, per_example, grades = evaluate(
            role,
            model,
            heldout,
            comps,
            run.graders,
            run.task.labels,
            price_for(model, run.task.prices),
            capture=run.judge(budget, call=call),
        )
        if call:
            run.store.put_grades(grades)
            position_bias_stage(run, role, budget)
        summary.prompt = run.task.prompt_role(role)
        results.append(summary)
        rows += per_example
    if not results:
        raise StageError("nothing stored to report on")
    cmp = Comparison(results)
    analyse(run, cmp, rows)
    title = f"{run.task.name}: held-out test comparison ({len(heldout)} examples)"
    write_reports(cmp, rows, run.dir, title=title, extra=report_extra(run, cmp, rows))
    if show:
        print_table(
            cmp,
            title=f"{run.task.name} — {len(heldout)} held-out test examples",
            names=role_names(run.task.train.recipe),
        )
    return cmp


def analyse(run: Run, cmp: Comparison, rows: list[dict[str, Any]]) -> None:
    """What the comparison's claims rest on (`Comparison.analyse`), with the run's
    baselines: the majority label chosen on train, scored on the compared examples (of
    the comparison's split: the test split, or validation before training)."""
    compared = {str(r["example_id"]) for r in rows}
    cmp.analyse(rows, baselines(
        [e.answer for e in run.split.train],
        [e.answer for e in run.examples(cmp.split) if e.id in compared],
        run.task.labels,
    ))  # fmt: skip


def bench_stage(
    run: Run,
    roles: tuple[str, ...] | None = None,
    limit: int | None = None,
    show: bool = True,
    budget: Budget | None = None,
) -> Comparison:
    """Stage (`still bench`): every role's model on the held-out split; writes reports."""
    return compare(run, roles, limit, show, budget, call=True)


def report_stage(run: Run, roles: tuple[str, ...] | None = None, show: bool = True) -> Comparison:
    """Stage (`still report`): the held-out comparison and every report file rebuilt from
    the store alone; no model is called, judges included."""
    return compare(run, roles, show=show, call=False)


def report_extra(run: Run, cmp: Comparison, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What reports add to the comparison: where each number comes from and what was
    chosen on validation, the paired tests and gaps (see `analyse`), prompt compression
    and break-even, accuracy by input length, label and position bias, the selection,
    a grpo student's rewards by step, the teacher-written inputs' diversity, and what
    each role is called in this run (a grpo student learned from no teacher answer)."""
    seconds = None
    try:
        info = run.distilled_dir() / "train.json"
        if info.is_file():
            seconds = float(json.loads(info.read_text()).get("seconds") or 0) or None
    except (OSError, ValueError):
        seconds = None
    teacher_price = price_for(run.task.models.teacher, run.task.prices)
    return {
        "splits": {
            "train": len(run.split.train),
            "validation": len(run.split.validation),
            "heldout": len(run.split.heldout),
            "fewshot": len(run.split.fewshot),
        },
        "choices": choices(run),
        "paired": cmp.paired,
        # the gaps a reader may be shown: a real gap, and a real gain (still.report.verdict)
        "gap_closed_interval": {d: g for d, g in cmp.gaps.items() if cmp.beats(d, "student")},
        "gap_meaningful": verdict(cmp).gap_meaningful,
        "economics": economics(cmp, teacher_price, seconds, run.task.train.cost_per_hour),
        "accuracy_by_length": accuracy_by_length(rows),
        "label_distribution": label_distribution(rows, run.task.labels) if run.task.labels else [],
        "position_bias": [
            {"role": r.role, **b.as_dict()}
            for r in cmp.results
            if (b := position_bias_stage(run, r.role, call=False)) is not None
        ],
        "selection": _selection(run),
        "teacher_check": _read_json(run.teacher_check_file),
        "tune": _read_json(run.dir / "tune" / "tune.json"),
        "ensemble": ensemble_report(run),
        "confidence": _read_json(run.dir / CONFIDENCE_FILE),
        # partial credit (a reward, a judge's scale): the mean score, paired, beside pass rates
        "scores": compare_scores(rows) if partial_credit(rows) else None,
        "grpo": grpo_report(run),
        "synthesis": synthesis_report(run),
        "role_names": role_names(run.task.train.recipe),
        # which task file this report is of (bench_quality): as declared, not as run
        "task_digest": run.declared_digest or run.task.digest(),
    }


def partial_credit(rows: list[dict[str, Any]]) -> bool:
    """Whether the graders gave any answer a score other than 0 or 1: then the mean score
    says what pass rates cannot (how close the answers came), and the report shows it."""
    return any(r.get("score") not in (None, 0.0, 1.0) for r in rows)


def choices(run: Run) -> list[dict[str, str]]:
    """The choices behind this run's configuration and the split each was made on, from
    the files the choosing commands leave: `still select` (selection.json), `still curve`
    (curve/curve.json) and `still tune` (tune/tune.json)."""
    out = []
    sel = _selection(run)
    if sel:
        for role in ("teacher", "student"):
            if sel.get(role):
                split = str(sel.get("split", "train"))
                out.append({"what": role, "chosen": str(sel[role]), "split": split,
                            "how": "still select"})  # fmt: skip
    curve = run.dir / "curve" / "curve.json"
    if curve.is_file():
        try:
            data = json.loads(curve.read_text())
        except ValueError:
            data = {}
        best = data.get("best")
        if best:
            out.append({
                "what": "train.recipe, train.method",
                "chosen": f"{best['recipe']}, {best['method']} ({best['accuracy']:.1%})",
                "split": str(data.get("split", "heldout")),
                "how": "still curve",
            })  # fmt: skip
    tuned = _read_json(run.dir / "tune" / "tune.json")
    if tuned and tuned.get("best"):
        b = tuned["best"]
        out.append({"what": "train.recipe, method, epochs, learning_rate; keep",
                    "chosen": f"{b['recipe']}, {b['method']}, {b['epochs']:g}, "
                              f"{b['learning_rate']:g}; {b['keep']} ({b['accuracy']:.1%})",
                    "split": str(tuned.get("split")), "how": "still tune"})  # fmt: skip
    conf = _read_json(run.dir / CONFIDENCE_FILE)
    if conf:
        out.append({"what": "gold-free filter (curate.confidence)",
                    "chosen": f"{conf['rule']} >= {conf['threshold']:.3f}",
                    "split": str(conf["chosen_on"]), "how": "still export"})  # fmt: skip
    return out


def _selection(run: Run) -> dict[str, Any] | None:
    """What `still select` decided for this run (selection.json), for the report."""
    return _read_json(run.dir / "selection.json")


def _read_json(path: Path) -> dict[str, Any] | None:
    """A file a choosing or checking command left in the run folder, for the report."""
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError:
        log.warning("%s is not valid JSON: left out of the report", path)
        return None
    return data


@dataclass(frozen=True)
class RotatedQuestion:
    """One rotation of a multiple-choice question as a role is asked it."""

    question: str  # the held-out example's id
    correct_at: int  # where the correct option landed
    request: Request
    options: tuple[str, ...]  # option text by position: what each letter stood for


def rotated_requests(run: Run, role: str) -> list[RotatedQuestion]:
    """For a multiple-choice task: every rotation of the first `multiple_choice.questions`
    held-out questions as `role` would be asked it (none for other tasks)."""
    spec = run.task.multiple_choice
    if spec is None:
        return []
    model = run.model_for(role)
    labels = run.task.labels or []
    out = []
    for ex in run.split.heldout[: spec.questions]:
        for rex, ans in rotate_example(ex, spec.options, labels):
            req = build_request(run.task, role, model, rex, run.split.fewshot)
            out.append(RotatedQuestion(ex.id, ans, req, tuple(rex.fields[f] for f in spec.options)))
    return out


def position_bias_stage(
    run: Run, role: str, budget: Budget | None = None, call: bool = True
) -> PositionBias | None:
    """Stage (multiple-choice tasks): a role's position bias over rotated held-out
    questions, or None for other tasks. The rotations are captured through the store
    (resumable, priced) when `call`; otherwise only stored answers are used and a missing
    one counts as failed (`still report`)."""
    jobs = rotated_requests(run, role)
    if not jobs:
        return None
    ref = run.model_for(role)
    reqs = {f"{j.question}#{i}": j.request for i, j in enumerate(jobs)}
    if call:
        tags = {"role": role, "split": "heldout-rotated"}
        run.capture(ref, reqs, tags, f"{role} position bias", budget)
    hits = run.calibrated(role, run.lookup(reqs, include_failed=True))
    labels = run.task.labels or []
    answers = []
    for key, j in zip(reqs, jobs, strict=True):
        picked, _ = answer_of(hits.get(key), labels)
        pos = labels.index(picked) if picked in labels else None
        option = None if pos is None else j.options[pos]
        answers.append(Answer(j.question, j.correct_at, pos, option))
    bias = summarise(role, answers, labels)
    bias.model = ref
    return bias
