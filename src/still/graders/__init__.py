"""Graders: score a completion against an example.

A grader error (a missing template field, a failed request, an unparseable answer) is a
failed grade with `error` set, never a pass.
"""

from __future__ import annotations

from collections.abc import Sequence

from still.graders._parse import parse_label
from still.graders._string_check import StringCheck, check, fill
from still.tasks import Example, GraderSpec
from still.types import Completion, Grade

__all__ = [
    "StringCheck",
    "check",
    "fill",
    "parse_label",
    "build_grader",
    "grade",
    "Answer",
    "answer_of",
]


def build_grader(spec: GraderSpec) -> StringCheck:
    """Turn a task's grader spec into a grader."""
    return StringCheck(
        name=spec.name, operation=spec.operation, input=spec.input, reference=spec.reference
    )


Answer = tuple[str | None, str | None]
"""(parsed answer or None, why it is missing or None)."""


def answer_of(completion: Completion | None, labels: Sequence[str] | None) -> Answer:
    """The answer a completion gives, mapped onto the label set when there is one."""
    if completion is None:
        return None, "missing"
    if completion.error:
        return None, "error"
    if not labels:
        return completion.text.strip(), None
    parsed = parse_label(completion.text, labels)
    return (parsed, None) if parsed is not None else (None, "unparseable")


def grade(
    graders: Sequence[StringCheck],
    example: Example,
    completion: Completion | None,
    labels: Sequence[str] | None,
) -> list[Grade]:
    """Grade one completion of one example with every grader.

    The sample's `output_text` is the parsed answer (the label it names); a missing, failed
    or unparseable completion yields failed grades that carry the reason.
    """
    answer, why = answer_of(completion, labels)
    cid = completion.id if completion else None
    if answer is None:
        return [
            Grade(
                grader=g.name,
                example_id=example.id,
                completion_id=cid,
                score=0.0,
                passed=False,
                error=why,
            )
            for g in graders
        ]
    raw = completion.text if completion else ""
    sample = {"output_text": answer, "raw_text": raw}
    item = {**example.fields, "answer": example.answer}
    return [g.grade(sample, item, example.id, cid) for g in graders]
