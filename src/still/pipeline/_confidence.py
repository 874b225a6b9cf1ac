"""Gold-free filtering: train the teacher-only student on the answers the teacher is sure of.

Production data has no gold labels, so the grader-verified student (`--keep correct`) is
out of reach there, and a teacher-only student learns every teacher mistake. But a
teacher's mistakes are not spread evenly: they gather where its label margin is small,
its top label's probability low, or an ensemble's members disagree. `curate.confidence`
(`still.tasks.ConfidenceSpec`) keeps the teacher-only student's rows whose confidence
reaches a threshold, and the threshold is chosen where gold exists: on the validation
split, by how many right answers it keeps net of wrong ones. Only then is it applied to
the training rows, whose gold is never read. The choice and every rule's validation table
go to `confidence.json` in the run folder, and from there to the report.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from still.bench import evaluate
from still.cost import Budget
from still.graders import answer_of
from still.pipeline._calibrate import label_logprobs
from still.pipeline._ensemble import agreement
from still.pipeline._run import Run, StageError, capture_role
from still.types import Completion

log = logging.getLogger("still.pipeline")

Rule = Literal["margin", "probability", "agreement"]
RULES: tuple[Rule, ...] = get_args(Rule)

CONFIDENCE_FILE = "confidence.json"
"""In the run folder: the gold-free filter's choice and its validation table."""


def confidence(
    completion: Completion | None, labels: Sequence[str] | None, rule: Rule
) -> float | None:
    """How sure the teacher is of its answer, in [0, 1] (None: no answer, or no scores).

    `margin`: the answer's label probability minus the best other label's; `probability`:
    the answer's label probability; `agreement`: the share of ensemble members voting for it.

    >>> from still.types import Request
    >>> c = Completion(request=Request(model="m", messages=()), text="a",
    ...                label_logprobs={"a": math.log(0.7), "b": math.log(0.3)})
    >>> round(confidence(c, ["a", "b"], "margin") or 0, 3)
    0.4
    """
    if completion is None or completion.error:
        return None
    if rule == "agreement":
        return agreement(completion)
    scores = completion.label_logprobs
    answer = answer_of(completion, labels).answer
    if not scores or not labels or answer not in scores:
        return None
    p = {y: math.exp(v) for y, v in label_logprobs(scores).items()}
    if rule == "probability":
        return p[answer]
    # below 0 only when an ensemble's vote and its mean probabilities disagree: least sure
    return max(0.0, p[answer] - max((v for y, v in p.items() if y != answer), default=0.0))


def choose_threshold(points: Sequence[tuple[float, bool]], min_keep: float) -> float:
    """The confidence threshold that keeps the most right answers net of wrong ones.

    Candidates sit halfway between neighbouring confidences seen (and 0: keep all); a
    candidate must keep at least `min_keep` of the points; ties go to the lower one.

    Args:
        points: (confidence, whether the answer is right) of each answered row.
        min_keep: the least share of points kept.

    >>> choose_threshold([(0.1, False), (0.2, False), (0.8, True), (0.9, True)], 0.5)
    0.5
    """
    ordered = sorted(points)
    least = math.ceil(min_keep * len(ordered))
    net = sum(1 if right else -1 for _, right in ordered)  # every row kept
    best, best_net = 0.0, net
    for j in range(1, len(ordered)):
        net -= 1 if ordered[j - 1][1] else -1  # row j - 1 dropped
        lo, hi = ordered[j - 1][0], ordered[j][0]
        if lo == hi:
            continue  # no threshold separates equal confidences
        if len(ordered) - j < least:
            break
        if net > best_net:
            best, best_net = (lo + hi) / 2, net
    return best


@dataclass
class RuleResult:
    """One rule's threshold, and what it keeps on validation (gold) and on train (counts)."""

    rule: str
    threshold: float | None  # None: no row has this kind of confidence
    validation_rows: int = 0  # answered validation rows with a confidence
    validation_right: int = 0
    validation_kept: int = 0
    validation_kept_right: int = 0
    train_rows: int = 0
    train_kept: int = 0
    chosen: bool = False

    @property
    def accuracy(self) -> float | None:
        """Accuracy of every answered validation row (what `--keep parsed` learns)."""
        return self.validation_right / self.validation_rows if self.validation_rows else None

    @property
    def kept_accuracy(self) -> float | None:
        """Accuracy of the validation rows the threshold keeps."""
        return self.validation_kept_right / self.validation_kept if self.validation_kept else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": self.accuracy, "kept_accuracy": self.kept_accuracy}


@dataclass
class ConfidenceChoice:
    """The gold-free filter of one export: the chosen rule's threshold, every rule's
    validation table, and the training rows it drops (id -> reason)."""

    rule: str
    threshold: float
    chosen_on: str  # "validation", or "task" for a threshold the task fixes
    min_keep: float
    rules: list[RuleResult]
    drops: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "threshold": self.threshold,
            "chosen_on": self.chosen_on,
            "min_keep": self.min_keep,
            "train_dropped": len(self.drops),
            "rules": [r.as_dict() for r in self.rules],
        }


def confidence_stage(
    run: Run, teacher_train: Mapping[str, Completion], budget: Budget | None = None
) -> ConfidenceChoice:
    """Stage (`still export` of the teacher-only student, with `curate.confidence`): the
    teacher's validation answers (stored; asked within `budget` if missing) graded against
    gold, each rule's threshold chosen on them, the task's rule applied to the training
    answers `teacher_train` (their gold never read). Writes `confidence.json`.

    Raises:
        StageError: no validation split to choose on (and no fixed threshold), or the
            task's rule has no confidences (the teacher gave no label scores).
    """
    spec = run.task.curate.confidence
    if spec is None:
        raise StageError("curate.confidence is not set: nothing to filter by")
    validation = run.split.validation
    if not validation and spec.threshold is None:
        raise StageError(
            "curate.confidence chooses its threshold on the validation split, and this task "
            "has none: set split.validation (e.g. 0.1) or curate.confidence.threshold"
        )
    labels = run.task.labels
    answers = capture_role(run, "teacher", "validation", budget=budget).completions
    model = run.model_for("teacher")
    judge = run.judge(budget)
    _, rows, _ = evaluate("teacher", model, validation, answers, run.graders, labels, capture=judge)
    right = {str(r["example_id"]): bool(r["correct"]) for r in rows}
    results = []
    rules = [r for r in RULES if r != "agreement" or run.task.ensemble is not None]
    for rule in rules:
        val = {e.id: confidence(answers.get(e.id), labels, rule) for e in validation}
        points = [(c, right[i]) for i, c in val.items() if c is not None]
        train = _confidences(run, teacher_train, rule)
        if not points and (spec.threshold is None or not train):
            results.append(RuleResult(rule, None, chosen=rule == spec.by))
            continue
        t = spec.threshold
        if t is None:
            t = choose_threshold(points, spec.min_keep)
        kept = [ok for c, ok in points if c >= t]
        results.append(
            RuleResult(
                rule,
                t,
                validation_rows=len(points),
                validation_right=sum(ok for _, ok in points),
                validation_kept=len(kept),
                validation_kept_right=sum(kept),
                train_rows=len(train),
                train_kept=sum(c >= t for c in train.values()),
                chosen=rule == spec.by,
            )
        )
    chosen = next(r for r in results if r.chosen)
    if chosen.threshold is None:
        raise StageError(
            f"curate.confidence.by: {spec.by}: no teacher answer carries one (label scores "
            "come from scored label tasks or generation.top_logprobs); use another rule"
        )
    t = chosen.threshold
    drops = {
        i: f"low confidence: {spec.by} {c:.3f} < {t:.3f}"
        for i, c in _confidences(run, teacher_train, spec.by).items()
        if c < t
    }
    on = "task" if spec.threshold is not None else "validation"
    choice = ConfidenceChoice(spec.by, t, on, spec.min_keep, results, drops)
    (run.dir / CONFIDENCE_FILE).write_text(json.dumps(choice.as_dict(), indent=2))
    log.info(
        "gold-free filter: %s >= %.3f (chosen on %s) keeps %d of %d training answers",
        spec.by,
        t,
        choice.chosen_on,
        chosen.train_kept,
        chosen.train_rows,
    )
    return choice


def _confidences(run: Run, teacher: Mapping[str, Completion], rule: Rule) -> dict[str, float]:
    """The confidence of each training answer that has one: answers alone, no gold."""
    out = {}
    for e in run.split.train:
        c = confidence(teacher.get(e.id), run.task.labels, rule)
        if c is not None:
            out[e.id] = c
    return out
