"""Curation filters: which graded rows become training data, e.g. `correct == 1 and sarcasm >= 6`.

A filter is comparisons between arithmetic formulas over grade scores (the `multi`
grader's formula language: + - * / ^, min, max, abs, floor, ceil, exp, sqrt, log),
joined by `and` / `or` (`and` binds tighter), with `not` before a comparison. Like the
formulas, it is parsed, never `eval`ed; a grader name the filter uses that no grader has
is an error when the filter is built.

Grammar:  filter := conj ('or' conj)* ; conj := clause ('and' clause)* ;
          clause := 'not' clause | formula CMP formula ;  CMP := < <= > >= == !=
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from still.graders._formula import FormulaError, parse

_CMP: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_SPLIT_CMP = re.compile(r"(<=|>=|==|!=|<|>)")
_OR = re.compile(r"\s+or\s+")
_AND = re.compile(r"\s+and\s+")
_NOT = re.compile(r"^not\s+")


@dataclass(frozen=True)
class _Clause:
    left: str
    op: str
    right: str
    negated: bool

    def test(self, scores: Mapping[str, float]) -> bool:
        a = parse(self.left).evaluate(scores)
        b = parse(self.right).evaluate(scores)
        return _CMP[self.op](a, b) != self.negated


@dataclass(frozen=True)
class Filter:
    """A parsed curation filter."""

    source: str
    any_of: tuple[tuple[_Clause, ...], ...]  # OR of ANDs

    @property
    def names(self) -> frozenset[str]:
        """The grader names the filter reads."""
        out: set[str] = set()
        for conj in self.any_of:
            for c in conj:
                out |= parse(c.left).names | parse(c.right).names
        return frozenset(out)

    def test(self, scores: Mapping[str, float]) -> bool:
        """Whether a row with these grade scores is kept (FormulaError if one is missing)."""
        return any(all(c.test(scores) for c in conj) for conj in self.any_of)


def parse_filter(source: str, known: set[str] | None = None) -> Filter:
    """Parse a filter; with `known` grader names, refuse names outside them.

    >>> parse_filter("correct == 1 and sarcasm >= 6").test({"correct": 1, "sarcasm": 7})
    True
    >>> parse_filter("not correct == 1 or 2 * quality > 9").test({"correct": 1, "quality": 4})
    False

    Raises:
        FormulaError: a clause without exactly one comparison, a bad formula, or an unknown
            grader name (the message names it and the known ones).
    """
    if not source.strip():
        raise FormulaError("the filter is empty")
    conjs = []
    for part in _OR.split(source.strip()):
        clauses = []
        for raw in _AND.split(part.strip()):
            text = raw.strip()
            negated = False
            while _NOT.match(text):
                negated = not negated
                text = _NOT.sub("", text, count=1)
            pieces = _SPLIT_CMP.split(text)
            if len(pieces) != 3:
                raise FormulaError(
                    f"filter clause {raw.strip()!r} needs exactly one comparison "
                    f"({', '.join(_CMP)}), e.g. `correct == 1`"
                )
            left, op, right = (p.strip() for p in pieces)
            parse(left), parse(right)  # syntax errors surface now, naming the clause
            clauses.append(_Clause(left, op, right, negated))
        conjs.append(tuple(clauses))
    flt = Filter(source, tuple(conjs))
    if known is not None:
        unknown = sorted(flt.names - known)
        if unknown:
            raise FormulaError(
                f"filter {source!r} uses {', '.join(unknown)}, which name no grader "
                f"(the task's graders: {', '.join(sorted(known)) or 'none'})"
            )
    return flt
