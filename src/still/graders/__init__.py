"""Graders: score a completion against an example.

A grader error (a missing template field, a failed request, an unparseable answer) is a
failed grade with `error` set, never a pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol

from still.graders._formula import FormulaError, Multi, evaluate
from still.graders._parse import parse_label
from still.graders._python import PythonGrader
from still.graders._string_check import StringCheck, check, fill
from still.graders._text_similarity import METRICS, TextSimilarity
from still.tasks import (
    Example,
    GraderSpec,
    PythonSpec,
    StringCheckSpec,
    TextSimilaritySpec,
)
from still.types import Completion, Grade

__all__ = [
    "METRICS",
    "FormulaError",
    "Grader",
    "Multi",
    "PythonGrader",
    "StringCheck",
    "TextSimilarity",
    "evaluate",
    "check",
    "fill",
    "parse_label",
    "build_grader",
    "grade",
    "Answer",
    "answer_of",
    "output_json",
]


class Grader(Protocol):
    """What every grader is: a name, and a verdict on one completion of one example."""

    @property
    def name(self) -> str: ...

    def grade(
        self,
        sample: Mapping[str, Any],
        item: Mapping[str, Any],
        example_id: str,
        completion_id: str | None,
    ) -> Grade: ...


def build_grader(spec: GraderSpec, name: str | None = None) -> Grader:
    """Turn a task's grader spec (OpenAI grader JSON) into a grader.

    Args:
        spec: the spec.
        name: overrides the spec's name (a multi grader's sub-graders are named by their
            key, the variable its formula uses).

    Raises:
        ValueError: a configuration error (unknown metric, bad formula...), at build time.
    """
    name = name or spec.name
    if isinstance(spec, StringCheckSpec):
        return StringCheck(
            name=name, operation=spec.operation, input=spec.input, reference=spec.reference
        )
    if isinstance(spec, TextSimilaritySpec):
        return TextSimilarity(
            name=name,
            input=spec.input,
            reference=spec.reference,
            evaluation_metric=spec.evaluation_metric,
            pass_threshold=spec.pass_threshold,
        )
    if isinstance(spec, PythonSpec):
        return PythonGrader(
            name=name,
            source=spec.source,
            pass_threshold=spec.pass_threshold,
            timeout_s=spec.timeout_s,
            memory_mb=spec.memory_mb,
        )
    return Multi(
        name=name,
        graders=tuple(build_grader(sub, key) for key, sub in spec.graders.items()),
        calculate_output=spec.calculate_output,
        pass_threshold=spec.pass_threshold,
    )


def output_json(text: str, schema: dict[str, Any]) -> Any | None:
    """The answer parsed as JSON if it validates against `schema`, else None."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if _validator(json.dumps(schema, sort_keys=True)).is_valid(value) else None


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_json))


Answer = tuple[str | None, str | None]
"""(parsed answer or None, why it is missing or None)."""


def answer_of(completion: Completion | None, labels: Sequence[str] | None) -> Answer:
    """The answer a completion gives, mapped onto the label set when there is one.

    An answer to a request with a JSON schema must parse and validate against it, or it is
    unparseable: that is the invalid-output rate every report shows.
    """
    if completion is None:
        return None, "missing"
    if completion.error:
        return None, "error"
    schema = completion.request.json_schema
    if schema is not None and output_json(completion.text, schema) is None:
        return None, "unparseable"
    if not labels:
        return completion.text.strip(), None
    parsed = parse_label(completion.text, labels)
    return (parsed, None) if parsed is not None else (None, "unparseable")


def grade(
    graders: Sequence[Grader],
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
    sample: dict[str, Any] = {"output_text": answer, "raw_text": raw}
    if completion is not None and completion.request.json_schema is not None:
        sample["output_json"] = output_json(completion.text, completion.request.json_schema)
    item = {**example.fields, "answer": example.answer}
    return [g.grade(sample, item, example.id, cid) for g in graders]
