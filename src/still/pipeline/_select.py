"""Selection: pick teacher, student and control from evidence (`still select`).

Every candidate answers the same gold examples from the train split (with reference
answers; the held-out split is kept for the final comparison, so choosing on it would
leak). The policy then picks:

- the teacher: the most accurate candidate;
- the student: the cheapest candidate whose accuracy reaches `selection.student.floor`
  (cheapest by $ per 1,000 examples when priced, else by mean latency, the compute a
  local model costs), or the weakest candidate when no floor is set or none reaches it
  (the distillation then has the most to gain);
- the control: a named model, or the second-best candidate.

Every decision is written down with its reason (`selection.json`, and the table).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from still.bench import ModelResult, evaluate
from still.capture import build_request
from still.pipeline._run import Run, StageError
from still.prices import price_for


@dataclass
class Selection:
    """The candidates' results on the gold examples and the roles picked, with reasons."""

    results: list[ModelResult]
    teacher: str
    student: str
    control: str | None
    reasons: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "teacher": self.teacher,
            "student": self.student,
            "control": self.control,
            "reasons": self.reasons,
            "results": [r.as_dict() for r in self.results],
        }


def _cost_key(r: ModelResult) -> tuple[int, float]:
    """Sort key for 'cheapest': priced models by $/1k, before unpriced ones by latency."""
    if r.cost_per_1k is not None:
        return (0, r.cost_per_1k)
    lat = r.mean_latency_s
    return (1, lat if not math.isnan(lat) else math.inf)


def _cost_text(r: ModelResult) -> str:
    if r.cost_per_1k is not None:
        return f"${r.cost_per_1k:.4f} per 1k examples"
    return f"{r.mean_latency_s:.3f} s/example (no price: latency stands for cost)"


def select_models(run: Run) -> Selection:
    """Benchmark `selection.candidates` on gold train examples and apply the policy.

    Raises:
        StageError: fewer than two candidates, or no gold examples.
    """
    spec = run.task.selection
    if len(spec.candidates) < 2:
        raise StageError("selection.candidates needs two or more model references")
    examples = run.split.train[: spec.examples]
    if not examples:
        raise StageError("no train examples to select on")
    results = []
    for ref in spec.candidates:
        reqs = {
            e.id: build_request(run.task, spec.prompt, ref, e, run.split.fewshot) for e in examples
        }
        tags = {"role": "candidate", "split": "train"}
        stats = run.capture(ref, reqs, tags, f"candidate {ref}")
        summary, _, _ = evaluate(
            "candidate",
            ref,
            examples,
            stats.completions,
            run.graders,
            run.task.labels,
            price_for(ref, run.task.prices),
            capture=run.judge(),
        )
        results.append(summary)
    return apply_policy(results, run.task.selection.student.floor, spec.control)


def apply_policy(results: list[ModelResult], floor: float | None, control: str | None) -> Selection:
    """The roles the policy picks from candidate results, each with its reason."""
    ranked = sorted(results, key=lambda r: -r.accuracy)
    best = ranked[0]
    reasons = {
        "teacher": f"most accurate: {best.accuracy:.1%} [{best.ci_low:.1%}, {best.ci_high:.1%}]"
        f" on {best.n} gold examples"
    }
    others = [r for r in results if r.model != best.model]
    meeting = [r for r in others if floor is not None and r.accuracy >= floor]
    if meeting:
        student = min(meeting, key=_cost_key)
        reasons["student"] = (
            f"cheapest reaching the floor {floor:.0%}: {student.accuracy:.1%}, "
            f"{_cost_text(student)}"
        )
    else:
        student = min(others, key=lambda r: r.accuracy)
        why = "no floor set" if floor is None else f"none of the others reaches {floor:.0%}"
        reasons["student"] = (
            f"weakest ({why}): {student.accuracy:.1%}, the most to gain from distillation"
        )
    picked_control: str | None = None
    if control == "second":
        second = next((r for r in ranked[1:] if r.model != student.model), None)
        if second is not None:
            picked_control = second.model
            reasons["control"] = f"second-best candidate: {second.accuracy:.1%}"
    elif control:
        picked_control = control
        reasons["control"] = "named in selection.control"
    gap = best.accuracy - student.accuracy
    if gap <= 0:
        reasons["warning"] = "the teacher is no better than the student: nothing to distil"
    elif best.ci_low <= student.ci_high:
        reasons["warning"] = (
            f"the teacher-student gap ({gap:.1%}) is within the 95% intervals: compare on "
            "more examples before trusting the choice"
        )
    return Selection(results, best.model, student.model, picked_control, reasons)


def write_selection(run: Run, sel: Selection) -> None:
    """selection.json in the run folder."""
    (run.dir / "selection.json").write_text(json.dumps(sel.as_dict(), indent=2))
