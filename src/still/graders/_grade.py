"""Grading one completion: the parsed answer every grader sees, every grader's verdict on
it, and the batched preparation judges and python graders need first.

A grader error (a missing template field, a failed request, an unparseable answer) is a
failed grade with `error` set, never a pass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from still.graders._formula import Multi
from still.graders._model import Capture, ModelGrader
from still.graders._parse import parse_label
from still.graders._python import PythonGrader
from still.graders._registry import Grader
from still.tasks import Example
from still.types import Completion, Grade


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


class ParsedAnswer(NamedTuple):
    """The answer a completion gives, or why there is none."""

    answer: str | None
    """The parsed answer (the label it names, for a label task); None when there is none."""
    why: str | None
    """Why the answer is missing ("missing", "error", "unparseable"); None when there is one."""


def answer_of(completion: Completion | None, labels: Sequence[str] | None) -> ParsedAnswer:
    """The answer a completion gives, mapped onto the label set when there is one.

    An answer to a request with a JSON schema must parse and validate against it, or it is
    unparseable: that is the invalid-output rate every report shows.
    """
    if completion is None:
        return ParsedAnswer(None, "missing")
    if completion.error:
        return ParsedAnswer(None, "error")
    schema = completion.request.json_schema
    if schema is not None and output_json(completion.text, schema) is None:
        return ParsedAnswer(None, "unparseable")
    if not labels:
        return ParsedAnswer(completion.text.strip(), None)
    parsed = parse_label(completion.text, labels)
    return ParsedAnswer(parsed, None) if parsed is not None else ParsedAnswer(None, "unparseable")


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
    assert completion is not None  # an answer implies a completion
    sample, item = sample_item(example, completion, answer)
    return [g.grade(sample, item, example.id, cid) for g in graders]


def sample_item(
    example: Example, completion: Completion, answer: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What graders see: `sample` (output_text: the parsed answer; raw_text; output_json
    when the request had a schema) and `item` (the example's fields and its answer)."""
    sample: dict[str, Any] = {"output_text": answer, "raw_text": completion.text}
    if completion.request.json_schema is not None:
        sample["output_json"] = output_json(completion.text, completion.request.json_schema)
    return sample, {**example.fields, "answer": example.answer}


def walk(graders: Sequence[Grader]) -> list[Grader]:
    """Every grader, those inside multi graders included (depth first)."""
    out: list[Grader] = []
    for g in graders:
        out.append(g)
        if isinstance(g, Multi):
            out += walk(g.graders)
    return out


def judges(graders: Sequence[Grader]) -> list[ModelGrader]:
    """The model graders among `graders`, those inside multi graders included."""
    return [g for g in walk(graders) if isinstance(g, ModelGrader)]


def prepare_graders(
    graders: Sequence[Grader],
    pairs: Sequence[tuple[Example, Completion | None]],
    labels: Sequence[str] | None,
    capture: Capture | None,
) -> None:
    """Ask every judge about every gradable completion, one batch per judge, and run the
    python graders in batched child processes, before `grade` reads the verdicts back.
    Needs `capture` (requests -> completions through a store) when there are judges.

    Raises:
        ValueError: there are judges but no way to call them.
    """
    found = judges(graders)
    scripts = [g for g in walk(graders) if isinstance(g, PythonGrader)]
    if not found and not scripts:
        return
    if found and capture is None:
        raise ValueError(
            f"graders {[j.name for j in found]} call a judge model: pass a capture function"
        )
    jobs = []
    for ex, comp in pairs:
        answer, _ = answer_of(comp, labels)
        if answer is not None and comp is not None:
            jobs.append(sample_item(ex, comp, answer))
    for j in found:
        assert capture is not None
        j.prepare(jobs, capture)
    for p in scripts:
        p.prepare(jobs)
