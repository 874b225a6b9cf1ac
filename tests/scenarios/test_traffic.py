"""Production traffic as a task's data: `still store import` a log, then grade, export,
train and bench on it through a `store:` data source, with no export file in between and
no call to the teacher, whose recorded answers stand for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from still.cli import main
from still.store import Store
from test_helpers.traffic import LABELS, SYSTEM, TICKETS, traffic_rows, write_request_log


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _task(tmp_path: Path, student: str, **overrides: object) -> Path:
    task: dict[str, object] = {
        "name": "triage",
        "data": {"source": "store:prod.db", "store": {"metadata": {"app": "support-triage"}}},
        "answer": "recorded",
        "labels": LABELS,
        "split": {"seed": 0, "heldout": 6, "validation": 0},
        "models": {"teacher": "openai:gpt-4o-mini", "student": student},
        "generation": {"batch_size": 8},
        "train": {"epochs": 1, "batch_size": 4, "learning_rate": 0.001, "lora_r": 4},
        **overrides,
    }
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    return path


def _import(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    log = write_request_log(tmp_path / "prod.jsonl", rows)
    res = _cli("store", "import", "--db", str(tmp_path / "prod.db"), str(log))
    assert res.exit_code == 0, res.output
    return tmp_path / "prod.db"


def test_imported_traffic_is_graded_exported_and_trained_on_without_an_export_step(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the teacher can never be asked: no key, so a call would fail (and be stored as failed)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    other_app = traffic_rows(app="search")[:5]  # traffic of another app in the same store
    for row in other_app:
        row["response"]["choices"][0]["message"]["content"] = "search"
    _import(tmp_path, traffic_rows() + other_app)
    task = _task(tmp_path, f"local:{tiny_model}")

    graded = _cli("grade", str(task), "--role", "teacher")
    assert graded.exit_code == 0, graded.output
    # 24 tickets, 6 held out: the recorded answers are graded as the teacher's, against
    # themselves (answer: recorded): agreement with the production model
    assert "teacher on train: 18/18 correct" in graded.output

    exported = _cli("export", str(task))
    assert exported.exit_code == 0, exported.output
    run_dir = tmp_path / "triage"
    rows = [json.loads(x) for x in (run_dir / "train.jsonl").read_text().splitlines()]
    route = {t: r for r, texts in TICKETS.items() for t in texts}
    assert len(rows) == 18
    for r in rows:  # the conversation as it was sent, and the answer it got
        system, user, answer = r["messages"]
        assert system == {"role": "system", "content": SYSTEM}
        assert answer["content"] == route[user["content"]]
    split = json.loads((run_dir / "split.json").read_text())
    heldout = {e for e in split["heldout"]}
    assert len(heldout) == 6 and not heldout & set(split["train"])

    ran = _cli("run", str(task))  # capture (stored) -> export -> train -> bench
    assert ran.exit_code == 0, ran.output
    report = json.loads((run_dir / "report.json").read_text())
    results = {r["role"]: r for r in report["results"]}
    # answer: recorded has no reference to verify by: the teacher-only student alone
    assert set(results) == {"teacher", "student", "distilled", "control"}
    assert results["teacher"]["accuracy"] == 1.0 and results["teacher"]["n"] == 6
    assert any(p.name.startswith("distilled-") for p in run_dir.iterdir())

    with Store(run_dir / "still.db") as s:
        teacher = s.list(metadata={"role": "teacher"})
        assert len(teacher) == 24 and s.count(errors=True) == 0
        # every teacher answer is a recorded one, none was asked of the teacher
        assert all(c.metadata["imported"].startswith("chatcmpl-support") for c in teacher)
        assert {c.model for c in teacher} == {"openai:gpt-4o-mini"}
        assert all(c.cost and c.usage.prompt_tokens == 30 for c in teacher)
    # the split is stable: the same ids when the task is opened again
    assert json.loads((run_dir / "split.json").read_text()) == split


def test_a_reference_tag_grades_the_recorded_answers_and_verifies_them(tmp_path: Path) -> None:
    wrong = {"Can you ship to Canada?": "other", "How do I reset my password?": "billing"}
    _import(tmp_path, traffic_rows(answers=wrong))
    task = _task(
        tmp_path,
        "scripted:first-label",
        answer="route",  # a tag the log carries: the reference, human-checked
        split={"seed": 0, "heldout": 2, "validation": 0},
        graders=[
            {"type": "string_check", "name": "correct"},
            # the other tags stay item fields for graders
            {
                "type": "string_check",
                "name": "app",
                "input": "{{item.app}}",
                "reference": "support-triage",
            },
        ],
    )
    res = _cli("export", str(task), "--keep", "correct")
    assert res.exit_code == 0, res.output
    curation = [
        json.loads(x)
        for x in (tmp_path / "triage" / "verified" / "curation.jsonl").read_text().splitlines()
    ]
    texts = [t for texts in TICKETS.values() for t in texts]
    wrong_ids = {f"chatcmpl-support-triage-{texts.index(t) + 1:04d}" for t in wrong}
    source = {c["source"].rpartition("#")[2]: c for c in curation}
    assert len(curation) == 22 and wrong_ids <= set(source)  # both in train (seed 0)
    # the recorded answers that disagree with the reference are dropped, and only they
    assert {cid for cid, c in source.items() if not c["kept"]} == wrong_ids
    assert all(c["scores"]["app"] == 1.0 for c in curation if c["kept"])


def test_a_store_source_matching_nothing_is_one_clear_error(tmp_path: Path) -> None:
    db = _import(tmp_path, traffic_rows())
    with Store(db) as s:
        before = s.count()
    sales = {"source": "store:prod.db", "store": {"metadata": {"app": "sales"}}}
    task = _task(tmp_path, "scripted:first-label", data=sales)
    res = _cli("export", str(task))
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: data.source 'store:prod.db'")
    assert "none of the 24 imported completions" in lines[0] and "(app=sales)" in lines[0]
    assert "app=support-triage ×24" in lines[0] and "fix data.store" in lines[0]
    assert "Traceback" not in res.output
    with Store(db) as s:
        assert s.count() == before
    assert not (tmp_path / "triage").exists()

    missing = _task(tmp_path, "scripted:first-label", data={"source": "store:missing.db"})
    res = _cli("export", str(missing))
    assert res.exit_code == 1 and "no store at" in res.output
    assert "still store import --db" in res.output and not (tmp_path / "missing.db").exists()
