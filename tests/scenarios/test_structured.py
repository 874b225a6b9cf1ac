"""Structured outputs everywhere: a task's JSON schema goes to endpoints as a response
format, local models follow it by constrained decoding (through `still serve` too), and
answers that do not validate are counted as unparseable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from still.graders import StringCheck, answer_of, grade, output_json
from still.tasks import Example
from still.testing import FaultyServer
from still.types import Completion, Message, Request
from test_helpers import write_task

SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["human", "location", "number"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["label", "confidence"],
    "additionalProperties": False,
}


def _req(**kw: object) -> Request:
    return Request(model="m", messages=(Message(role="user", content="q"),), **kw)  # type: ignore[arg-type]


def test_schema_enters_the_hash_only_when_set() -> None:
    plain = _req()
    assert "json_schema" not in plain.canonical()  # old stores keep their keys
    assert _req(json_schema=SCHEMA).key() != plain.key()
    assert _req(json_schema=SCHEMA).key() == _req(json_schema=dict(SCHEMA)).key()


def test_invalid_answers_are_unparseable_and_valid_ones_reach_graders() -> None:
    req = _req(json_schema=SCHEMA)
    good = Completion(request=req, text='{"label": "human", "confidence": 80}')
    bad_json = Completion(request=req, text='{"label": "human", ')
    bad_schema = Completion(request=req, text='{"label": "planet", "confidence": 80}')
    assert answer_of(bad_json, None) == (None, "unparseable")
    assert answer_of(bad_schema, None) == (None, "unparseable")
    ex = Example(id="e1", fields={"text": "q"}, answer="human", source="t:1")
    check = StringCheck(input="{{sample.output_json.label}}")
    (g,) = grade([check], ex, good, None)
    assert g.passed and g.error is None
    (g,) = grade([check], ex, bad_schema, None)
    assert not g.passed and g.error == "unparseable"


def test_task_schema_is_checked_and_sent_to_endpoints(tmp_path: Path) -> None:
    from still.pipeline import capture_role, open_run
    from still.tasks import TaskError, load_task

    bad = write_task(
        tmp_path, student="scripted:echo", labels=None, output_schema={"type": "objekt"}
    )
    with pytest.raises(TaskError, match="output_schema is not a valid JSON Schema"):
        load_task(bad)
    scored = write_task(tmp_path, student="scripted:echo", output_schema=SCHEMA)
    with pytest.raises(TaskError, match="output_schema needs generated answers"):
        load_task(scored)

    with FaultyServer(faults=False) as server:
        task = write_task(
            tmp_path,
            student="scripted:echo",
            teacher=server.ref(),
            labels=None,
            output_schema=SCHEMA,
        )
        run = open_run(task, tmp_path / "run")
        stats = capture_role(run, "teacher", "train", limit=3)
        assert stats.called == 3
        for body in server.bodies:
            fmt = body["response_format"]
            assert fmt["type"] == "json_schema"
            assert fmt["json_schema"]["schema"] == SCHEMA
            assert fmt["json_schema"]["strict"] is True  # the schema meets strict mode's rules
        # the loopback server answers "echo: ...", which is not JSON: all unparseable
        assert all(answer_of(c, None)[1] == "unparseable" for c in stats.completions.values())


def test_local_model_follows_the_schema_by_constrained_decoding(tiny_model: Path) -> None:
    pytest.importorskip("llguidance")
    from still.models._local import LocalProvider
    from still.types import SamplingParams

    p = LocalProvider("tiny", tiny_model)
    prompts = ["where is the bank", "how many rivers", "who wrote it"]
    reqs = [
        Request(
            model="tiny",
            messages=(Message(role="user", content=t),),
            params=SamplingParams(max_tokens=40),
            json_schema=SCHEMA,
        )
        for t in prompts
    ]
    free = p.complete([r.model_copy(update={"json_schema": None}) for r in reqs])
    assert all(output_json(c.text, SCHEMA) is None for c in free)  # babble unconstrained
    outs = p.complete(reqs)
    for c in outs:
        assert c.ok, c.error
        value = json.loads(c.text)  # random weights, yet valid by construction
        assert value["label"] in SCHEMA["properties"]["label"]["enum"]  # type: ignore[index]
        assert 0 <= value["confidence"] <= 100
        assert answer_of(c, None)[1] is None
