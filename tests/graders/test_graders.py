"""string_check, the answer parser, and grading failures as failures."""

from __future__ import annotations

import pytest

from still.errors import GraderError
from still.graders import StringCheck, answer_of, check, grade, parse_label
from still.tasks import Example
from still.types import Completion, Message, Request

EX = Example(id="e1", fields={"question": "Who?", "label": "human"}, answer="human", source="f:1")
LABELS = ["human", "location", "number"]


def _c(text: str = "", error: str | None = None) -> Completion:
    req = Request(model="m", messages=(Message(role="user", content="Who?"),))
    return Completion(request=req, text=text, error=error)


@pytest.mark.parametrize(
    ("op", "value", "ref", "expected"),
    [
        ("eq", "human", "human", True),
        ("eq", "Human", "human", False),
        ("ne", "human", "location", True),
        ("ne", "human", "human", False),
        ("like", "a human being", "human", True),
        ("like", "A HUMAN", "human", False),
        ("ilike", "A HUMAN", "human", True),
        ("ilike", "location", "human", False),
    ],
)
def test_string_check_operations(op: str, value: str, ref: str, expected: bool) -> None:
    assert check(op, value, ref) is expected


def test_unknown_operation_is_an_error() -> None:
    with pytest.raises(GraderError, match="unknown string_check operation"):
        check("regex", "a", "a")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("human", "human"),
        ("Human.", "human"),
        (" LOCATION ", "location"),
        ("I think it's a number", "number"),
        ("human or location", None),
        ("no idea", None),
        ("humanity", None),
    ],
)
def test_parse_label(text: str, expected: str | None) -> None:
    assert parse_label(text, LABELS) == expected


def test_grade_passes_and_fails_on_the_parsed_answer() -> None:
    g = [StringCheck()]
    assert grade(g, EX, _c("Human."), LABELS)[0].passed
    wrong = grade(g, EX, _c("location"), LABELS)[0]
    assert not wrong.passed and wrong.error is None and wrong.score == 0.0


@pytest.mark.parametrize(
    ("comp", "reason"),
    [(None, "missing"), (_c(error="TimeoutError: slow"), "error"), (_c("banana"), "unparseable")],
)
def test_failures_are_failed_grades_with_a_reason(comp: Completion | None, reason: str) -> None:
    out = grade([StringCheck()], EX, comp, LABELS)[0]
    assert not out.passed and out.score == 0.0 and out.error == reason
    assert answer_of(comp, LABELS) == (None, reason)


def test_template_errors_fail_the_grade() -> None:
    bad = StringCheck(reference="{{item.nonexistent}}")
    out = bad.grade({"output_text": "human"}, {"answer": "human"}, "e1", None)
    assert not out.passed and "item.nonexistent" in (out.error or "")


def test_reference_can_come_from_any_item_field() -> None:
    g = StringCheck(reference="{{item.label}}")
    assert grade([g], EX, _c("human"), LABELS)[0].passed
