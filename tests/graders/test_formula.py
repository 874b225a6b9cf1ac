"""The multi grader's formula: arithmetic only, never Python, and the multi grader itself."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from still.errors import GraderError, StillError
from still.graders import StringCheck
from still.graders._formula import FUNCTIONS, FormulaError, Multi, evaluate_formula, parse
from still.graders._text_similarity import TextSimilarity
from still.types import Grade


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("2+3*4^2", 50.0),  # ^ before *, * before +
        ("(2+3)*4", 20.0),
        ("2^3^2", 512.0),  # right-associative
        ("-2^2", -4.0),  # unary minus binds looser than ^, as in maths and Python
        ("(-2)^2", 4.0),
        ("2^-1", 0.5),  # a signed exponent
        ("--3", 3.0),
        ("+3 - -3", 6.0),
        ("10/4", 2.5),
        ("8 - 3 - 2", 3.0),  # left-associative
        ("16 / 4 / 2", 2.0),
        ("min(a, b, 3)", 0.25),
        ("max(a, b, 3)", 3.0),
        ("max(a)", 0.25),
        ("floor(2.7)", 2.0),
        ("ceil(2.1)", 3.0),
        ("floor(-2.5)", -3.0),
        ("abs(-1.5)", 1.5),
        ("sqrt(16)", 4.0),
        ("exp(0)", 1.0),
        ("log(exp(2))", 2.0),
        ("1e-2 * 100", 1.0),
        (".5 + 0.5", 1.0),
        ("0.7 * a + 0.3 * b_2", 0.7 * 0.25 + 0.3 * 1.0),
        ("  a  ", 0.25),
    ],
)
def test_evaluates(formula: str, expected: float) -> None:
    assert evaluate_formula(formula, {"a": 0.25, "b": 0.5, "b_2": 1.0}) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("open('/etc/passwd')", "function 'open' at position 0 is not allowed; use one of abs"),
        ("open(a)", "function 'open'"),
        ("__import__('os')", "function '__import__' at position 0 is not allowed"),
        ("a.__class__", "unexpected '.' at position 1: attribute access is not allowed"),
        ("a[0]", "subscripts are not allowed"),
        ("'spam'", "strings are not allowed"),
        ("a < b", "comparisons are not allowed"),
        ("a == b", "not allowed"),
        ("lambda: 1", "'lambda' at position 0 is not allowed"),
        ("1 if a else 2", "'if' at position 2 is not allowed"),
        ("2 ** 3", "write powers as a ^ b"),
        ("a % 2", "only + - * / ^ are allowed"),
        ("abs(1, 2)", "abs() at position 0 takes exactly 1 argument (2 given)"),
        ("max()", "needs an argument"),
        ("(1 + 2", "expected ')'"),
        ("1 +", "found the end of the formula"),
        ("a b", "unexpected 'b' at position 2"),
        ("", "empty"),
        ("c + 1", "unknown name 'c'; the variables are: a, b"),
        ("1e999", "too large"),
    ],
)
def test_rejects(formula: str, message: str) -> None:
    with pytest.raises(FormulaError, match=_literal(message)):
        evaluate_formula(formula, {"a": 1.0, "b": 2.0})


def _literal(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("1 / 0", "division by zero in '1 / 0'"),
        ("a / (b - b)", "division by zero in 'a / (b - b)'"),
        ("0 ^ -1", "division by zero"),
        ("log(0)", "log of a number that is not positive"),
        ("sqrt(-1)", "sqrt of a negative number"),
        ("(-8) ^ (1/3)", "is not a real number"),
        ("exp(1000)", "overflows"),
        ("10 ^ 400", "overflows"),
        ("1e308 * 10", "overflows"),
    ],
)
def test_arithmetic_errors(formula: str, message: str) -> None:
    with pytest.raises(FormulaError, match=_literal(message)):
        evaluate_formula(formula, {"a": 1.0, "b": 2.0})


def test_formula_error_is_a_grader_error_the_cli_shows_as_one_line() -> None:
    assert issubclass(FormulaError, GraderError) and issubclass(GraderError, StillError)


def test_non_finite_variable_is_refused() -> None:
    with pytest.raises(FormulaError, match="variable 'a' is not a finite number"):
        evaluate_formula("a + 1", {"a": math.nan})


def test_deep_nesting_is_bounded_not_a_crash() -> None:
    with pytest.raises(FormulaError, match="nests deeper"):
        evaluate_formula("(" * 1000 + "1" + ")" * 1000, {})
    with pytest.raises(FormulaError, match="nests deeper"):
        evaluate_formula("-" * 1000 + "1", {})
    # A long flat chain needs no recursion at all.
    assert evaluate_formula("+".join(["a"] * 3000), {"a": 1.0}) == 3000.0


def test_names_and_functions() -> None:
    assert parse("min(a, b) + 2 * c").names == {"a", "b", "c"}
    assert set(FUNCTIONS) == {"min", "max", "abs", "floor", "ceil", "exp", "sqrt", "log"}


@dataclass(frozen=True)
class _Fixed:
    """A sub-grader with a fixed score, or a fixed error."""

    name: str
    score: float = 1.0
    error: str | None = None

    def grade(
        self, sample: Mapping[str, Any], item: Mapping[str, Any], example_id: str,
        completion_id: str | None,
    ) -> Grade:  # fmt: skip
        return Grade(
            grader=self.name, example_id=example_id, completion_id=completion_id,
            score=0.0 if self.error else self.score, passed=self.error is None, error=self.error,
        )  # fmt: skip


def test_multi_combines_real_graders() -> None:
    multi = Multi(
        name="combined",
        graders=(
            StringCheck(name="exact", operation="eq"),
            TextSimilarity(
                name="fuzzy",
                input="{{sample.output_text}}",
                reference="{{item.answer}}",
                evaluation_metric="fuzzy_match",
                pass_threshold=0.0,
            ),
        ),
        calculate_output="0.5 * exact + 0.5 * fuzzy",
        pass_threshold=0.5,
    )
    right = multi.grade({"output_text": "Paris"}, {"answer": "Paris"}, "e1", "c1")
    assert right.score == pytest.approx(1.0) and right.passed and right.grader == "combined"
    close = multi.grade({"output_text": "paris"}, {"answer": "Paris"}, "e1", "c1")
    assert close.score == pytest.approx(0.5 * 0.0 + 0.5 * 0.8) and not close.passed


def test_multi_formula_over_scores() -> None:
    multi = Multi("m", (_Fixed("a", 0.2), _Fixed("b", 0.9)), "max(a, b) - min(a, b)", 0.5)
    g = multi.grade({}, {}, "e1", None)
    assert g.score == pytest.approx(0.7) and g.passed and g.error is None


def test_multi_fails_when_a_sub_grade_fails() -> None:
    multi = Multi("m", (_Fixed("a", 1.0), _Fixed("b", error="timed out after 5s")), "a", 0.0)
    g = multi.grade({}, {}, "e1", None)
    assert not g.passed and g.score == 0.0
    assert g.error == "sub-grader 'b' failed: timed out after 5s"


def test_multi_arithmetic_error_is_a_failed_grade() -> None:
    multi = Multi("m", (_Fixed("a", 1.0), _Fixed("b", 0.0)), "a / b", 0.0)
    g = multi.grade({}, {}, "e1", None)
    assert not g.passed and g.error == "calculate_output: division by zero in 'a / b'"


def test_multi_checks_its_formula_when_built() -> None:
    with pytest.raises(FormulaError, match="uses c, which name no sub-grader"):
        Multi("m", (_Fixed("a"), _Fixed("b")), "a + c", 0.5)
    with pytest.raises(FormulaError, match="function 'eval'"):
        Multi("m", (_Fixed("a"),), "eval(a)", 0.5)
    with pytest.raises(GraderError, match="names repeat"):
        Multi("m", (_Fixed("a"), _Fixed("a")), "a", 0.5)


def test_overlong_formula_is_refused() -> None:
    with pytest.raises(FormulaError, match="longer than"):
        evaluate_formula("1+" * 6000 + "1", {})
