"""`data.source: store:`: imported completions as a task's examples, and the task file
mistakes a store source makes possible, each refused with the field to fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from still.store import Store, read_traffic
from still.tasks import DataError, TaskError, load_examples, load_task, split_examples
from test_helpers.traffic import LABELS, SYSTEM, TICKETS, traffic_rows, write_request_log


def _store(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    log = write_request_log(path.with_suffix(".jsonl"), rows)
    with Store(path) as s:
        s.put_new(read_traffic(log).completions)
    return path


def _task(tmp_path: Path, **overrides: object) -> Path:
    task: dict[str, object] = {
        "name": "triage",
        "data": {"source": "store:prod.db"},
        "answer": "recorded",
        "labels": LABELS,
        "models": {"teacher": "openai:gpt-4o-mini", "student": "scripted:first-label"},
        **overrides,
    }
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task, sort_keys=False))
    return path


def test_each_imported_completion_is_an_example_of_its_conversation(tmp_path: Path) -> None:
    _store(tmp_path / "prod.db", traffic_rows())
    examples, report = load_examples(load_task(_task(tmp_path)))
    assert report.kept == report.rows == 24 and report.source == str(tmp_path / "prod.db")
    route = {t: r for r, texts in TICKETS.items() for t in texts}
    for ex in examples:
        assert ex.messages is not None and ex.messages[0].content == SYSTEM
        assert ex.answer == route[ex.messages[1].content]  # answer: recorded
        # the tags are its fields; the recorded answer is not one of them
        assert ex.fields == {"app": "support-triage", "route": ex.answer, "source": "import",
                             "response_model": "gpt-4o-mini-2024-07-18"}  # fmt: skip
        recorded = report.recorded[ex.id]
        assert recorded.text == ex.answer and recorded.request.messages == ex.messages
        assert ex.source == f"{tmp_path / 'prod.db'}#{recorded.id}"


def test_ids_and_split_are_stable_whatever_store_and_order(tmp_path: Path) -> None:
    _store(tmp_path / "prod.db", traffic_rows())
    task = load_task(_task(tmp_path))
    first, _ = load_examples(task)
    # the same traffic imported elsewhere, in reverse order, under other tags and ids
    other = traffic_rows(app="again")[::-1]
    _store(tmp_path / "b" / "prod.db", other)
    again, _ = load_examples(load_task(_task(tmp_path / "b")))
    assert sorted(e.id for e in first) == sorted(e.id for e in again)
    a, b = split_examples(first, task.split), split_examples(again, task.split)
    assert {e.id for e in a.heldout} == {e.id for e in b.heldout}
    assert {e.id for e in a.train} == {e.id for e in b.train}


def test_one_conversation_asked_twice_is_one_example(tmp_path: Path) -> None:
    rows = traffic_rows()
    twice = traffic_rows(app="support-triage")[0]
    twice["response"]["id"] = "chatcmpl-again"
    twice["response"]["choices"][0]["message"]["content"] = "shipping"  # sampled otherwise
    _store(tmp_path / "prod.db", [*rows, twice])
    examples, report = load_examples(load_task(_task(tmp_path)))
    assert report.rows == 25 and report.kept == 24 and report.duplicates == 1
    # the first one recorded is kept, so it can never sit in train and test at once
    first = next(e for e in examples if e.messages and e.messages[1].content == TICKETS[
        "billing"][0])  # fmt: skip
    assert first.answer == "billing" and report.recorded[first.id].id != "chatcmpl-again"


def test_filters_and_a_reference_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = traffic_rows() + traffic_rows(app="search")[:3]
    for row in rows[:4]:  # four calls logged without the reference tag
        del row["request"]["metadata"]["route"]
    db = _store(tmp_path / "prod.db", rows)
    monkeypatch.setenv("STILL_DB", str(db))  # `store:` alone: the import's default store
    task = _task(tmp_path, data={"source": "store:", "store": {"metadata": {"app": "search"}}})
    examples, report = load_examples(load_task(task))
    assert report.rows == 3 and {e.fields["app"] for e in examples} == {"search"}

    tagged = _task(tmp_path, data={"source": "store:", "store": {
        "model": "openai:gpt-4o-mini", "metadata": {"app": "support-triage"}}}, answer="route",
        curate={"students": ["parsed", "correct"]})  # fmt: skip
    examples, report = load_examples(load_task(tagged))
    assert report.rows == 24 and report.empty_answer == 4 and report.kept == 20
    assert all("recorded" not in e.fields and "route" not in e.fields for e in examples)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompts": {"teacher": {"template": "{{ x }}"}}},
         r"prompts \(line {prompts:}\): a `store:` source sends each recorded conversation"),
        ({"curate": {"students": ["parsed", "correct"]}},
         r"curate \(line {curate:}\): students: `correct` keeps .* use students: \[parsed\]"),
        ({"data": {"source": "store:prod.db", "format": "csv"}},
         r"data \(line 2\): format: a `store:` source holds completions"),
        ({"data": {"source": "store:prod.db", "reader": "r.py:rows"}},
         r"data \(line 2\): reader: a `store:` source"),
        ({"data": {"source": "data.csv", "store": {"model": "openai:gpt-4o"}}},
         r"data \(line 2\): store: filters a `store:` source"),
        ({"data": {"source": "store:prod.db", "store": {"metdata": {"a": "b"}}}},
         r"data.store.metdata \(line {    metdata:}\): unknown field, did you mean `metadata`\?"),
        # matched against the block's own keys: `mode` (a `generation:` key) is closer
        ({"data": {"source": "store:prod.db", "store": {"modle": "m"}}},
         r"data.store.modle \(line {    modle:}\): unknown field, did you mean `model`\?"),
        ({"data": {"source": "data.csv"}},
         r"prompts: required, add `prompts:` with `teacher` and `student`"),
    ],
)  # fmt: skip
def test_task_file_mistakes_name_the_field(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    path = _task(tmp_path, **overrides)
    lines = path.read_text().splitlines()
    # "{key:}" in a message stands for the line the key starts on in the file
    for key in re.findall(r"\{( *\w+:)\}", message):
        at = next(i for i, line in enumerate(lines, 1) if line.startswith(key))
        message = message.replace("{" + key + "}", str(at))
    with pytest.raises(TaskError, match=message):
        load_task(path)


def test_an_answer_tag_no_completion_has_is_refused(tmp_path: Path) -> None:
    _store(tmp_path / "prod.db", traffic_rows())
    with pytest.raises(DataError, match=r"answer 'label' is a tag of none of the 24 .*"
                       r"`answer: recorded`.*: app, response_model, route, source"):  # fmt: skip
        load_examples(load_task(_task(tmp_path, answer="label")))
