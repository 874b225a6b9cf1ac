"""Know when not to distil: `still run` checks the teacher against the base student and
the baselines on validation before training, and stops (unless forced) when it is not
worth distilling from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from still.cli import main
from still.pipeline import NotWorthDistilling, check_teacher, open_run, run_all
from test_helpers import write_task

SPLIT = {"seed": 1, "heldout": 10, "validation": 20}


def test_a_chance_level_teacher_stops_the_run_before_training(tmp_path: Path) -> None:
    """A teacher answering one label whatever the question (a third right, as chance and
    the majority label) stops `still run` before the teacher answers the training split."""
    task = write_task(tmp_path, student="scripted:first-label", teacher="scripted:first-label",
                      n=60, split=SPLIT)  # fmt: skip
    with pytest.raises(NotWorthDistilling) as info:
        run_all(task, tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message and message.startswith("not worth distilling: on the 20 valid")
    assert "does not beat the base student beyond noise" in message
    assert "within its interval of the chance baseline (33.3%)" in message
    for tip in ("prompts.teacher.calibrate: true", "ensemble", "stronger teacher", "--force"):
        assert tip in message
    run = open_run(task, tmp_path / "run")
    assert run.store.count(metadata={"role": "teacher", "split": "train"}) == 0
    assert not list(run.dir.glob("distilled-*")) and not run.train_file().exists()
    check = json.loads(run.teacher_check_file.read_text())
    human = [e.answer for e in run.split.validation].count("human") / 20
    assert check["problems"] and not check["forced"] and check["teacher"] == human


def test_the_cli_says_so_in_one_line_and_force_trains_anyway(
    tmp_path: Path, tiny_model: Path
) -> None:
    task = write_task(tmp_path, student=f"local:{tiny_model}", teacher="scripted:first-label",
                      n=60, split=SPLIT, curate={"students": ["parsed"]})  # fmt: skip
    run_dir = tmp_path / "run"
    stopped = CliRunner().invoke(main, ["run", str(task), "--run-dir", str(run_dir)])
    assert stopped.exit_code == 1 and "Traceback" not in stopped.output
    errors = [line for line in stopped.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "not worth distilling" in errors[0] and "--force" in errors[0]
    assert not list(run_dir.glob("distilled-*"))

    forced = CliRunner().invoke(main, ["run", str(task), "--run-dir", str(run_dir), "--force"])
    assert forced.exit_code == 0, forced.output
    run = open_run(task, run_dir)
    assert (run.distilled_dir() / "config.json").is_file()
    assert json.loads(run.teacher_check_file.read_text())["forced"] is True
    report = (run_dir / "report.md").read_text()
    assert "Is the teacher worth distilling?" in report and "trained anyway (--force)" in report


def test_a_good_teacher_passes(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label", n=60, split=SPLIT)
    run = open_run(task, tmp_path / "run")
    check = check_teacher(run)
    assert check is not None and check.passed and check.n == 20
    human = [e.answer for e in run.split.validation].count("human") / 20
    assert check.teacher == 1.0 and check.student == human < 1.0
    # the check reads validation only: the test split is left to the final comparison
    assert run.store.count(metadata={"split": "heldout"}) == 0
    assert run.store.count(metadata={"split": "validation"}) == 40


def test_without_a_validation_split_nothing_is_checked(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label", teacher="scripted:first-label",
                      split={"seed": 1, "heldout": 10, "validation": 0})  # fmt: skip
    run = open_run(task, tmp_path / "run")
    assert check_teacher(run) is None and not run.teacher_check_file.exists()
    assert run.store.count() == 0
