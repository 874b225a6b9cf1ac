"""The `string_check` grader, as OpenAI defines it: eq, ne, like, ilike.

`input` and `reference` are templates over `sample` (the completion) and `item` (the
example), in the OpenAI grader syntax (`{{sample.output_text}}`, `{{item.answer}}`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from still.errors import GraderError
from still.graders._registry import register_grader
from still.tasks import StringCheckSpec
from still.types import Grade

_VAR = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def fill(template: str, context: Mapping[str, Any]) -> str:
    """Substitute `{{a.b}}` paths from `context`; an unknown path raises KeyError naming it."""

    def sub(m: re.Match[str]) -> str:
        node: Any = context
        for part in m.group(1).split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(f"grader template variable {m.group(1)!r} is not defined")
            node = node[part]
        return str(node)

    return _VAR.sub(sub, template)


def check(operation: str, value: str, reference: str) -> bool:
    """Apply a string_check operation.

    >>> check("eq", "spam", "spam"), check("ne", "spam", "ham")
    (True, True)
    >>> check("like", "it is spam", "spam"), check("ilike", "SPAM!", "spam")
    (True, True)
    """
    if operation == "eq":
        return value == reference
    if operation == "ne":
        return value != reference
    if operation == "like":
        return reference in value
    if operation == "ilike":
        return reference.lower() in value.lower()
    raise GraderError(f"unknown string_check operation {operation!r}: use eq, ne, like, ilike")


@dataclass(frozen=True)
class StringCheck:
    """A configured string_check grader.

    Args:
        name: the grade's name in reports and filters.
        operation: eq, ne, like or ilike.
        input: template of the graded value, usually `{{sample.output_text}}`.
        reference: template of the expected value, usually `{{item.answer}}`.
    """

    name: str = "correct"
    operation: str = "eq"
    input: str = "{{sample.output_text}}"
    reference: str = "{{item.answer}}"

    def grade(
        self,
        sample: Mapping[str, Any],
        item: Mapping[str, Any],
        example_id: str,
        completion_id: str | None,
    ) -> Grade:
        """Score 1.0 on a match, 0.0 otherwise; a template error is a failed grade."""
        try:
            passed = check(
                self.operation,
                fill(self.input, {"sample": sample, "item": item}),
                fill(self.reference, {"sample": sample, "item": item}),
            )
        except (KeyError, GraderError) as exc:
            return Grade(
                grader=self.name,
                example_id=example_id,
                completion_id=completion_id,
                score=0.0,
                passed=False,
                error=str(exc),
            )
        return Grade(
            grader=self.name,
            example_id=example_id,
            completion_id=completion_id,
            score=1.0 if passed else 0.0,
            passed=passed,
        )


@register_grader(StringCheckSpec)
def string_check(spec: StringCheckSpec, name: str) -> StringCheck:
    """`string_check`: the spec's operation between its two templates."""
    return StringCheck(
        name=name, operation=spec.operation, input=spec.input, reference=spec.reference
    )
