"""Two-stage distillation (`teacher_training:`): the teacher is fine-tuned on the gold
answers of its own part of the train split, once, and the students learn from its answers
on the other part, where no gold is used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from still.cli import main
from still.pipeline import StageError, capture_role, open_run, run_all
from still.tasks import TaskError, load_task
from test_helpers import write_task

SPLIT = {"seed": 1, "heldout": 8, "validation": 8}
TRAIN = {"epochs": 1, "batch_size": 4, "learning_rate": 0.001, "lora_r": 4}


def _task(tmp_path: Path, tiny_model: Path, **overrides: Any) -> Path:
    teaching = {"rows": 0.5, "train": TRAIN}
    return write_task(tmp_path, student=f"local:{tiny_model}", teacher=f"local:{tiny_model}",
                      n=40, split=SPLIT, train=TRAIN,
                      **{"teacher_training": teaching, **overrides})  # fmt: skip


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_teacher_is_trained_once_and_teaches_only_inputs_it_never_saw(
    tmp_path: Path, tiny_model: Path
) -> None:
    task = _task(tmp_path, tiny_model)
    run_dir = tmp_path / "run"
    # a tiny random teacher is no better than the student: trained anyway
    run, _ = run_all(task, run_dir, force=True)

    split = run.split
    taught = {e.id for e in split.teacher}
    others = [split.train, split.validation, split.heldout, split.fewshot]
    assert taught and not taught & {e.id for part in others for e in part}
    assert len(taught) + len(split.train) == 40 - 8 - 8 - len(split.fewshot)
    # the teacher: the base model fine-tuned on its part's gold answers, in the run folder
    teacher = Path(run.task.models.teacher.removeprefix("local:"))
    assert (
        teacher.parent == run_dir.resolve() / "teacher"
        and run.teacher_base == f"local:{tiny_model}"
    )
    assert json.loads((teacher / "train.json").read_text())["examples"] == len(taught)
    gold = {e.answer for e in split.teacher}
    rows = _jsonl(teacher.parent / "train.jsonl")
    assert [r["messages"][-1]["content"] for r in rows] == [e.answer for e in split.teacher]
    assert gold and rows[0]["messages"][0]["content"].startswith(split.fewshot[0].fields["text"])
    # the student: the teacher's answers on the other part only (teacher-only: no gold)
    assert run.task.curate.students == ["parsed"] and not (run_dir / "verified").exists()
    curation = _jsonl(run_dir / "curation.jsonl")
    assert {c["example_id"] for c in curation} == {e.id for e in split.train}
    answers = run.stored("teacher", "train")
    kept = [c["example_id"] for c in curation if c["kept"]]
    student_rows = _jsonl(run.train_file())
    assert len(student_rows) == len(kept) > 0
    for ex_id, row in zip(kept, student_rows, strict=True):
        assert row["messages"][-1]["content"] == answers[ex_id].text
    assert answers[kept[0]].model == run.task.models.teacher
    # the report is of the task file as declared (bench_quality), not of the run's copy,
    # whose teacher now names the trained folder
    digest = json.loads((run_dir / "report.json").read_text())["task_digest"]
    assert digest == load_task(task).digest() != run.task.digest()

    # a rerun trains no teacher and asks no model anything new
    stamp = (teacher / "train.json").stat().st_mtime
    stored = run.store.count()
    again, _ = run_all(task, run_dir, force=True)
    assert again.task.models.teacher == run.task.models.teacher
    assert (teacher / "train.json").stat().st_mtime == stamp
    assert again.store.count() == stored
    assert [p.name for p in (run_dir / "teacher").iterdir() if p.is_dir()] == [teacher.name]


def test_the_teacher_must_be_trained_before_it_answers(tmp_path: Path, tiny_model: Path) -> None:
    task = _task(tmp_path, tiny_model)
    run_dir = tmp_path / "run"
    with pytest.raises(StageError, match=r"fine-tuned on gold first .*`still train --teacher`"):
        capture_role(open_run(task, run_dir), "teacher", "validation")
    trained = CliRunner().invoke(main, ["train", str(task), "--run-dir", str(run_dir), "--teacher"])
    assert trained.exit_code == 0, trained.output
    again = CliRunner().invoke(main, ["train", str(task), "--run-dir", str(run_dir), "--teacher"])
    assert again.exit_code == 0 and "already trained" in again.output
    stats = capture_role(open_run(task, run_dir), "teacher", "validation")
    assert stats.called == 8 and stats.failed == 0
    # another teacher configuration is another teacher, trained anew
    raw = yaml.safe_load(task.read_text())
    raw["teacher_training"]["train"]["epochs"] = 2
    task.write_text(yaml.safe_dump(raw))
    with pytest.raises(StageError, match="still train --teacher"):
        capture_role(open_run(task, run_dir), "teacher", "validation")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"rows": 1.5}, "teacher_training.rows"),
        ({"rows": 0}, "teacher_training.rows"),
        ({"train": {"recipe": "kd"}}, "teacher learns the gold answers: recipe sft"),
    ],
)
def test_a_bad_teacher_training_block_fails_on_load(
    tmp_path: Path, block: dict[str, Any], message: str
) -> None:
    task = write_task(tmp_path, student="scripted:echo", teacher_training=block)
    with pytest.raises(TaskError, match=message):
        load_task(task)


def test_a_trained_teacher_student_uses_no_gold_unless_asked(tmp_path: Path) -> None:
    plain = load_task(write_task(tmp_path, student="scripted:echo", teacher_training={}))
    assert plain.curate.students == ["parsed"]
    asked = write_task(tmp_path, student="scripted:echo", teacher_training={},
                       curate={"students": ["parsed", "correct"]})  # fmt: skip
    assert load_task(asked).curate.students == ["parsed", "correct"]


def test_estimate_counts_a_teacher_not_trained_yet(tmp_path: Path, tiny_model: Path) -> None:
    from still.pipeline import estimate_run

    run = open_run(_task(tmp_path, tiny_model), tmp_path / "run")
    teacher = [s for s in estimate_run(run) if s.role == "teacher"]
    assert {s.split for s in teacher} == {"train", "validation", "heldout"}
    assert all("fine-tuned on gold first" in s.model and s.to_send == s.requests > 0
               for s in teacher)  # fmt: skip
