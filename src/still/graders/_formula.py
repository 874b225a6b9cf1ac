"""The `multi` grader and the arithmetic of its `calculate_output` formula.

OpenAI's multi grader combines named sub-graders with a formula over their scores, such as
`0.5 * exact + 0.5 * fuzzy` or `min(format, 1 - toxicity)`. It documents the operators
`+ - * / ^` and the functions `min max abs floor ceil exp sqrt log`; this module accepts
exactly those, plus numbers, parentheses, unary minus and variable names.

The formula comes from a task file, so it is parsed by a small recursive-descent parser
and evaluated by a loop over the instructions the parser emits: nothing reaches Python's
`eval`, `exec` or `compile`, there is no attribute access, subscript, call of anything
outside the table, string, comparison or lambda, and each is refused with a message
naming the offending part. Evaluation needs no recursion at all, and parsing is bounded by
`MAX_DEPTH`, so a hostile formula cannot exhaust the stack.

Precedence, loosest first: `+ -`, then `* /`, then unary `-`/`+`, then `^`. So `^` binds
tighter than unary minus, as in mathematics and Python: `-2^2` is -4, and `2^-1` is 0.5.
`^` is right-associative: `2^3^2` is 2^9 = 512. `**` is not accepted (use `^`).
`log` is the natural logarithm. Anything that is not a real, finite number (division by
zero, log of 0, sqrt of a negative number, overflow, a NaN variable) is a FormulaError.
"""

from __future__ import annotations

import keyword
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from still.errors import GraderError
from still.graders._registry import build_grader, register_grader
from still.tasks import MultiSpec
from still.types import Grade

MAX_DEPTH = 64
"""Deepest nesting of parentheses, unary signs and exponents a formula may have."""

MAX_LENGTH = 10_000
"""Longest formula accepted, in characters."""


class FormulaError(GraderError):
    """A formula that cannot be parsed or evaluated; the message names the offending part."""


def _fn_floor(x: float) -> float:
    return float(math.floor(x))


def _fn_ceil(x: float) -> float:
    return float(math.ceil(x))


def _fn_sqrt(x: float) -> float:
    if x < 0:
        raise FormulaError(f"sqrt of a negative number ({x:g})")
    return math.sqrt(x)


def _fn_log(x: float) -> float:
    if x <= 0:
        raise FormulaError(f"log of a number that is not positive ({x:g})")
    return math.log(x)


_UNARY: dict[str, Callable[[float], float]] = {
    "abs": abs,
    "ceil": _fn_ceil,
    "exp": math.exp,
    "floor": _fn_floor,
    "log": _fn_log,
    "sqrt": _fn_sqrt,
}
_NARY: dict[str, Callable[[Sequence[float]], float]] = {"max": max, "min": min}
FUNCTIONS: tuple[str, ...] = tuple(sorted([*_UNARY, *_NARY]))
"""The functions a formula may call."""

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|[-+*/^(),])"
    r"|(?P<bad>\S)"
    r")"
)

_HINTS = {
    ".": "attribute access is not allowed",
    "[": "subscripts are not allowed",
    "]": "subscripts are not allowed",
    "'": "strings are not allowed",
    '"': "strings are not allowed",
    "<": "comparisons are not allowed",
    ">": "comparisons are not allowed",
    "=": "comparisons and assignments are not allowed",
    "!": "comparisons are not allowed",
    "%": "only + - * / ^ are allowed",
    ":": "lambdas and slices are not allowed",
}


@dataclass(frozen=True)
class _Token:
    kind: str  # number, name, op, end, bad
    text: str
    pos: int
    error: str = ""  # for a bad token: raised when the parser reaches it


def _tokenize(formula: str) -> list[_Token]:
    """Split into tokens; a bad one carries its error, so the leftmost problem is reported."""
    tokens: list[_Token] = []
    pos = 0
    while True:
        m = _TOKEN.match(formula, pos)
        if m is None or m.end() == pos:  # only trailing whitespace is left
            break
        kind = m.lastgroup
        assert kind is not None
        text = m.group(kind)
        start = m.start(kind)
        error = ""
        if kind == "bad":
            hint = _HINTS.get(text, "not part of an arithmetic formula")
            error = f"unexpected {text!r} at position {start}: {hint}"
        elif kind == "op" and text == "**":
            error = f"'**' at position {start} is not allowed: write powers as a ^ b"
        elif kind == "name" and keyword.iskeyword(text):
            error = f"{text!r} at position {start} is not allowed: formulas are arithmetic only"
        tokens.append(_Token("bad" if error else kind, text, start, error))
        pos = m.end()
    tokens.append(_Token("end", "", len(formula)))
    return tokens


# Instructions of the stack machine the parser emits (reverse Polish order):
# ("num", value, span), ("var", name, span), ("neg", None, span), ("bin", op, span),
# ("call", (name, nargs), span). `span` is the source text, for error messages.
_Instr = tuple[str, Any, str]


class _Parser:
    """Recursive descent over the grammar, emitting instructions as it goes.

    expr  := term (('+' | '-') term)*
    term  := unary (('*' | '/') unary)*
    unary := ('-' | '+') unary | power
    power := atom ('^' unary)?
    atom  := NUMBER | NAME | NAME '(' expr (',' expr)* ')' | '(' expr ')'
    """

    def __init__(self, formula: str) -> None:
        self.src = formula
        self.tokens = _tokenize(formula)
        self.i = 0
        self.depth = 0
        self.code: list[_Instr] = []

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.error:
            raise FormulaError(tok.error)
        self.i += 1
        return tok

    def expect(self, text: str) -> _Token:
        tok = self.take()
        if tok.text != text or tok.kind != "op":
            raise FormulaError(f"expected {text!r} at position {tok.pos}, found {_show(tok)}")
        return tok

    def end_of(self) -> int:
        """Source position just after the last token taken."""
        tok = self.tokens[self.i - 1]
        return tok.pos + len(tok.text)

    def parse(self) -> tuple[_Instr, ...]:
        if not self.src.strip():
            raise FormulaError("the formula is empty")
        self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise FormulaError(tok.error or f"unexpected {_show(tok)} at position {tok.pos}")
        return tuple(self.code)

    def expr(self) -> int:
        start = self.term()
        while self.peek().kind == "op" and self.peek().text in "+-":
            op = self.take().text
            self.term()
            self.code.append(("bin", op, self.src[start : self.end_of()]))
        return start

    def term(self) -> int:
        start = self.unary()
        while self.peek().kind == "op" and self.peek().text in "*/":
            op = self.take().text
            self.unary()
            self.code.append(("bin", op, self.src[start : self.end_of()]))
        return start

    def unary(self) -> int:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FormulaError(f"the formula nests deeper than {MAX_DEPTH} levels")
        tok = self.peek()
        if tok.kind == "op" and tok.text in "+-":
            self.take()
            self.unary()
            if tok.text == "-":
                self.code.append(("neg", None, self.src[tok.pos : self.end_of()]))
            start = tok.pos
        else:
            start = self.power()
        self.depth -= 1
        return start

    def power(self) -> int:
        start = self.atom()
        if self.peek().kind == "op" and self.peek().text == "^":
            self.take()
            self.unary()  # right-associative, and the exponent may carry a sign
            self.code.append(("bin", "^", self.src[start : self.end_of()]))
        return start

    def atom(self) -> int:
        tok = self.take()
        if tok.kind == "number":
            value = float(tok.text)
            if not math.isfinite(value):
                raise FormulaError(f"number {tok.text!r} at position {tok.pos} is too large")
            self.code.append(("num", value, tok.text))
            return tok.pos
        if tok.kind == "name":
            if self.peek().kind == "op" and self.peek().text == "(":
                self.call(tok)
            else:
                self.code.append(("var", tok.text, tok.text))
            return tok.pos
        if tok.kind == "op" and tok.text == "(":
            self.expr()
            self.expect(")")
            return tok.pos
        raise FormulaError(
            f"expected a number, a name or '(' at position {tok.pos}, found {_show(tok)}"
        )

    def call(self, fn: _Token) -> None:
        name = fn.text
        if name not in _UNARY and name not in _NARY:
            raise FormulaError(
                f"function {name!r} at position {fn.pos} is not allowed; "
                f"use one of {', '.join(FUNCTIONS)}"
            )
        self.expect("(")
        if self.peek().kind == "op" and self.peek().text == ")":
            raise FormulaError(f"{name}() at position {fn.pos} needs an argument")
        nargs = 1
        self.expr()
        while self.peek().kind == "op" and self.peek().text == ",":
            self.take()
            self.expr()
            nargs += 1
        self.expect(")")
        if name in _UNARY and nargs != 1:
            raise FormulaError(
                f"{name}() at position {fn.pos} takes exactly 1 argument ({nargs} given)"
            )
        self.code.append(("call", (name, nargs), self.src[fn.pos : self.end_of()]))


def _show(tok: _Token) -> str:
    return "the end of the formula" if tok.kind == "end" else repr(tok.text)


def _power(a: float, b: float, span: str) -> float:
    if a == 0 and b < 0:
        raise FormulaError(f"division by zero in {span!r} (0 to a negative power)")
    try:
        return math.pow(a, b)
    except ValueError:
        raise FormulaError(f"{span!r} is not a real number ({a:g} ^ {b:g})") from None


def _binary(op: str, a: float, b: float, span: str) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0:
            raise FormulaError(f"division by zero in {span!r}")
        return a / b
    return _power(a, b, span)


def _number(name: str, value: Any) -> float:
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isfinite(x):
            return x
    raise FormulaError(f"variable {name!r} is not a finite number ({value!r})")


@dataclass(frozen=True)
class Formula:
    """A parsed formula: `names` are the variables it reads, `evaluate` runs it."""

    source: str
    code: tuple[_Instr, ...]
    names: frozenset[str]

    def evaluate(self, variables: Mapping[str, float]) -> float:
        """The formula's value; an unknown name or a non-finite result is a FormulaError."""
        stack: list[float] = []
        for kind, arg, span in self.code:
            if kind == "num":
                stack.append(arg)
                continue
            if kind == "var":
                if arg not in variables:
                    known = ", ".join(sorted(variables)) or "none"
                    raise FormulaError(f"unknown name {arg!r}; the variables are: {known}")
                stack.append(_number(arg, variables[arg]))
                continue
            try:
                if kind == "neg":
                    value = -stack.pop()
                elif kind == "bin":
                    b = stack.pop()
                    value = _binary(arg, stack.pop(), b, span)
                else:
                    name, nargs = arg
                    args = stack[len(stack) - nargs :]
                    del stack[len(stack) - nargs :]
                    value = _NARY[name](args) if name in _NARY else _UNARY[name](args[0])
            except OverflowError:
                raise FormulaError(f"{span!r} overflows") from None
            if not math.isfinite(value):
                raise FormulaError(f"{span!r} overflows")
            stack.append(float(value))
        (result,) = stack
        return result


@lru_cache(maxsize=256)
def parse(formula: str) -> Formula:
    """Parse a formula once (cached: the same formula grades every example)."""
    if len(formula) > MAX_LENGTH:
        raise FormulaError(f"the formula is longer than {MAX_LENGTH} characters")
    code = _Parser(formula).parse()
    names = frozenset(arg for kind, arg, _ in code if kind == "var")
    return Formula(source=formula, code=code, names=names)


def evaluate_formula(formula: str, variables: Mapping[str, float]) -> float:
    """Evaluate an arithmetic formula over named numbers.

    >>> evaluate_formula("2 + 3 * 4 ^ 2", {})
    50.0
    >>> evaluate_formula("min(a, b, 3) + floor(2.7)", {"a": 0.5, "b": 1})
    2.5
    """
    return parse(formula).evaluate(variables)


@dataclass(frozen=True)
class Multi:
    """A configured multi grader: sub-graders combined by a formula over their scores.

    Each sub-grader has a `name` (the formula's variable) and the usual `grade` method. The
    formula is checked when the grader is built: a syntax error or a name that is no
    sub-grader's raises FormulaError then, not once per example. The score is the formula's
    value as it is (not clipped: keep the formula in [0, 1] if reports should be).

    Args:
        name: the grade's name in reports and filters.
        graders: the sub-graders, with distinct names.
        calculate_output: the formula, e.g. `0.7 * exact + 0.3 * fuzzy`.
        pass_threshold: a score at or above it passes.
    """

    name: str
    graders: tuple[Any, ...]
    calculate_output: str
    pass_threshold: float

    def __post_init__(self) -> None:
        names = [g.name for g in self.graders]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise GraderError(f"multi grader {self.name!r}: sub-grader names repeat: {duplicates}")
        unknown = sorted(parse(self.calculate_output).names - set(names))
        if unknown:
            raise FormulaError(
                f"multi grader {self.name!r}: calculate_output uses {', '.join(unknown)}, "
                f"which name no sub-grader (they are: {', '.join(names) or 'none'})"
            )

    def _fail(self, example_id: str, completion_id: str | None, error: str) -> Grade:
        return Grade(
            grader=self.name,
            example_id=example_id,
            completion_id=completion_id,
            score=0.0,
            passed=False,
            error=error,
        )

    def grade(
        self,
        sample: Mapping[str, Any],
        item: Mapping[str, Any],
        example_id: str,
        completion_id: str | None,
    ) -> Grade:
        """Run every sub-grader, then the formula; a failed sub-grade fails the whole grade."""
        scores: dict[str, float] = {}
        for g in self.graders:
            try:
                sub: Grade = g.grade(sample, item, example_id, completion_id)
            except Exception as exc:  # noqa: BLE001 - a grader error is a failed grade, never a crash
                return self._fail(
                    example_id, completion_id, f"sub-grader {g.name!r} raised {exc!r}"
                )
            if sub.error is not None:
                return self._fail(
                    example_id, completion_id, f"sub-grader {g.name!r} failed: {sub.error}"
                )
            scores[g.name] = sub.score
        try:
            score = evaluate_formula(self.calculate_output, scores)
        except FormulaError as exc:
            return self._fail(example_id, completion_id, f"calculate_output: {exc}")
        return Grade(
            grader=self.name,
            example_id=example_id,
            completion_id=completion_id,
            score=score,
            passed=score >= self.pass_threshold,
        )


@register_grader(MultiSpec)
def multi(spec: MultiSpec, name: str) -> Multi:
    """`multi`: each sub-grader built under its key (the formula's variable), then combined."""
    return Multi(
        name=name,
        graders=tuple(build_grader(sub, key) for key, sub in spec.graders.items()),
        calculate_output=spec.calculate_output,
        pass_threshold=spec.pass_threshold,
    )
