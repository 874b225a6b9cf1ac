"""Know when not to distil: the teacher against the base student on validation, before
any training (`still run`).

A student learns the teacher's answers, mistakes included: a teacher that does not beat
the base student, or is no better than always answering the majority label or guessing,
can only teach it to be worse, and an hour of training later the report would say what
these few hundred validation calls say now. So `still run` asks the teacher and the base
student on the validation split first (stored like every answer; the test split is not
read) and stops with one line saying why and what to try, unless forced. The rules are
the verdict's (`still.report.teacher_problems`), on the validation split; the outcome is
written to the run folder (`teacher-check.json`) so the report says it too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from still.bench import Comparison, evaluate
from still.cost import Budget
from still.pipeline._bench import analyse
from still.pipeline._run import Run, StageError, capture_role
from still.report import teacher_problems

log = logging.getLogger("still.pipeline")


class NotWorthDistilling(StageError):
    """The teacher does not beat the base student or the baselines on validation."""


@dataclass
class TeacherCheck:
    """The teacher and the base student on the validation split, and what speaks against
    distilling (empty `problems`: the teacher is worth distilling from)."""

    split: str
    n: int
    teacher: float
    student: float
    teacher_ci: tuple[float, float]
    student_ci: tuple[float, float]
    problems: list[str] = field(default_factory=list)
    forced: bool = False
    calibrated: list[str] = field(default_factory=list)  # roles read calibrated

    @property
    def passed(self) -> bool:
        return not self.problems

    def message(self) -> str:
        """One line: why not to distil, what to try instead, and how to train anyway."""
        tips = []
        if "teacher" not in self.calibrated:
            tips.append("contextual calibration (prompts.teacher.calibrate: true)")
        tips += ["an ensemble of teacher prompts", "a trained or stronger teacher"]
        return (
            f"not worth distilling: on the {self.n} {self.split} examples "
            + "; ".join(self.problems)
            + f". Try {', '.join(tips[:-1])} or {tips[-1]}; or `still run --force` to train "
            "anyway"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_teacher(
    run: Run, budget: Budget | None = None, force: bool = False
) -> TeacherCheck | None:
    """Stage (`still run`, before training): the teacher and the base student answer the
    validation split (stored, within `budget`), graded and compared as the final
    comparison is (paired test, baselines: `still.report.teacher_problems`). Writes the
    outcome to `teacher-check.json`. None when the task has no validation split (nothing
    to check on: said in the log).

    Raises:
        NotWorthDistilling: the teacher does not beat the base student beyond the paired
            interval, or its interval reaches the majority-label or chance baseline;
            unless `force`, which logs it and goes on.
    """
    examples = run.split.validation
    path = run.teacher_check_file
    if not examples:
        log.warning(
            "no validation split: the teacher is not checked against the base student "
            "before training (set split.validation)"
        )
        path.unlink(missing_ok=True)
        return None
    results, rows = [], []
    for role in ("teacher", "student"):
        stats = capture_role(run, role, "validation", budget=budget)
        if role == "teacher" and stats.failed == stats.total:
            raise StageError("every teacher request failed; see `still store ls --errors`")
        summary, per_example, grades = evaluate(
            role,
            run.model_for(role),
            examples,
            stats.completions,
            run.graders,
            run.task.labels,
            capture=run.judge(budget),
        )
        run.store.put_grades(grades)
        results.append(summary)
        rows += per_example
    cmp = Comparison(results, split="validation")
    analyse(run, cmp, rows)
    t, s = results
    check = TeacherCheck(
        split="validation",
        n=len(examples),
        teacher=t.accuracy,
        student=s.accuracy,
        teacher_ci=(t.ci_low, t.ci_high),
        student_ci=(s.ci_low, s.ci_high),
        problems=teacher_problems(cmp),
        forced=force,
        calibrated=[r for r in ("teacher", "student") if run.task.prompt_for(r).content_free],
    )
    path.write_text(json.dumps(check.as_dict(), indent=2))
    if check.passed:
        log.info(
            "teacher check on %d validation examples: teacher %.1f%%, base student %.1f%%: "
            "worth distilling", check.n, 100 * check.teacher, 100 * check.student,
        )  # fmt: skip
    elif force:
        log.warning("%s; training anyway (--force)", check.message().split(". Try")[0])
    else:
        raise NotWorthDistilling(check.message())
    return check
