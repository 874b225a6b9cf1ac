"""`still run` with `train.recipe: grpo`: the student learns from its own graded answers,
so the run asks the teacher nothing before the bench (no check, no answers on train, no
export), trains one student, and benches it beside the teacher and the base student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from still.pipeline import estimate_run, open_run, run_all
from still.report import role_names
from still.train.grpo import EVAL_FILE
from test_helpers import write_task

GRPO = {
    "recipe": "grpo",
    "method": "lora",
    "epochs": 1,
    "batch_size": 4,
    "lora_r": 4,
    "grpo": {"group_size": 2, "max_completion_length": 4, "eval_every": 0, "eval_examples": 2},
}


def test_a_grpo_run_asks_the_teacher_only_on_the_test_split(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("STILL_SCRIPTED_LOG", str(calls))  # the scripted teacher's calls
    task = write_task(
        tmp_path, student=f"local:{tiny_model}", n=20,
        split={"seed": 1, "heldout": 4, "validation": 4}, train=GRPO,
    )  # fmt: skip
    estimated = estimate_run(open_run(task, tmp_path / "run"))
    assert {(s.role, s.split) for s in estimated} == {
        (r, "heldout") for r in ("teacher", "student", "distilled", "control")
    }
    run, cmp = run_all(task, tmp_path / "run")

    asked = calls.read_text().splitlines()
    heldout = {r.key() for r in run.requests("teacher", "heldout").values()}
    assert len(asked) == len(heldout) == 4 and set(asked) == heldout
    assert [r.role for r in cmp.results] == ["teacher", "student", "distilled", "control"]
    assert not run.teacher_check_file.exists()
    assert not run.train_file("parsed").exists() and not run.train_file("correct").exists()
    model = run.distilled_dir()
    assert (model / EVAL_FILE).is_file()
    assert json.loads((model / "train.json").read_text())["recipe"] == "grpo"
    # the report reads the rewards written beside the model: validation before and after
    report = json.loads((run.dir / "report.json").read_text())
    [written] = report["grpo"]
    steps = [r["step"] for r in written["records"] if r["split"] == "validation"]
    assert written["role"] == "distilled" and steps[0] == 0 and len(steps) == 2
    md = (run.dir / "report.md").read_text()
    assert "reward by step" in md
    # named for what it learned from: its own answers, not the teacher's (still.report)
    assert report["role_names"]["distilled"] == role_names("grpo")["distilled"]
    assert "teacher answers" not in md and role_names("grpo")["distilled"] in md

    # the model's address reads no teacher answer: a train.jsonl appearing moves nothing,
    # and a rerun calls no model and trains nothing
    run.train_file("parsed").parent.mkdir(parents=True, exist_ok=True)
    run.train_file("parsed").write_text('{"messages": []}\n')
    assert run.distilled_dir("parsed") == run.distilled_dir("correct") == model
    mtime = (model / "train.json").stat().st_mtime
    run_all(task, tmp_path / "run")
    assert len(calls.read_text().splitlines()) == 4
    assert (model / "train.json").stat().st_mtime == mtime
