"""`still tune`: a declared grid tried on validation within a time budget, the best point
chosen (ties to the cheaper), written down, and used by `still run` when the task says
so; the test split is never read (counted by the store's reads per split)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from still.cli import main
from still.pipeline import (
    StageError,
    TunePoint,
    bench_stage,
    capture_role,
    open_run,
    run_all,
    tune,
    tune_file,
    write_tune,
)
from still.pipeline._tune import pick_best
from test_helpers import write_task

SPLIT = {"seed": 1, "heldout": 10, "validation": 12}
TRAIN = {"epochs": 1, "batch_size": 4, "learning_rate": 0.001, "lora_r": 4}


def _task(tmp_path: Path, tiny_model: Path, **overrides: Any) -> Path:
    return write_task(tmp_path, student=f"local:{tiny_model}", n=46, split=SPLIT,
                      **{"train": TRAIN, **overrides})  # fmt: skip


def test_tune_scores_every_point_on_validation_and_never_reads_the_test_split(
    tmp_path: Path, tiny_model: Path
) -> None:
    task = _task(tmp_path, tiny_model, tune={"recipe": ["sft", "kd"], "epochs": [1]})
    run_dir = tmp_path / "run"
    # a finished run before it: the teacher's and the base student's test answers are stored
    before = open_run(task, run_dir)
    for role in ("teacher", "student"):
        capture_role(before, role, "heldout")
    held = before.store.count(metadata={"split": "heldout"})
    assert held == 20

    run = open_run(task, run_dir)  # a fresh Store: its read counter starts at zero
    tuning = tune(run)
    md = write_tune(run, tuning)

    assert run.store.reads["heldout"] == 0  # not one test answer read back
    assert run.store.count(metadata={"split": "heldout"}) == held  # nor asked for
    # validation answers were asked and stored; train ones read back to export them
    assert run.store.count(metadata={"split": "validation"}) > 0 and run.store.reads["train"] > 0
    data = json.loads(tune_file(run).read_text())
    assert data["split"] == "validation" and data["n"] == 12
    assert data["store_reads"] == dict(tuning.reads) and "heldout" not in data["store_reads"]
    assert data["grid"] == {"recipe": ["sft", "kd"], "method": ["lora"], "epochs": [1],
                            "learning_rate": [0.001], "keep": ["parsed"]}  # fmt: skip
    assert [(p["recipe"], p["status"]) for p in data["points"]] == [
        ("sft", "trained"), ("kd", "trained")
    ]  # fmt: skip
    for p in data["points"]:
        assert p["ci_low"] <= p["accuracy"] <= p["ci_high"] and p["train_seconds"] > 0
        assert p["kept"] == len(run.split.train) and Path(p["model"][6:], "config.json").is_file()
    assert data["best"] in data["points"]
    assert data["best"]["accuracy"] == max(p["accuracy"] for p in data["points"])
    text = md.read_text()
    assert "Recipe choice on validation" in text and "| kd | lora | 1 | 0.001 | parsed |" in text

    # the counter does see test reads: the final comparison's
    bench_stage(run, ("teacher", "student"), show=False)
    assert run.store.reads["heldout"] == 20


def test_the_budget_stops_new_points_and_a_rerun_goes_on(tmp_path: Path, tiny_model: Path) -> None:
    task = _task(tmp_path, tiny_model, tune={"recipe": ["sft"], "epochs": [2, 1]})

    def late() -> Iterator[float]:  # the tune starts at 0; every later look is an hour on
        yield 0.0
        while True:
            yield 3600.0

    ticks = late()
    run = open_run(task, tmp_path / "run")
    tuning = tune(run, budget_minutes=5, clock=lambda: next(ticks))
    # cheapest first: 1 epoch ran (a choice needs one point), 2 epochs was not started
    assert [(p.epochs, p.status) for p in tuning.points] == [(1, "trained"), (2, "budget spent")]
    assert tuning.best.epochs == 1
    write_tune(run, tuning)
    model = Path((tuning.points[0].model or "")[6:], "train.json")
    stamp = model.stat().st_mtime

    res = CliRunner().invoke(main, ["tune", str(task), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "Chosen:" in res.output and "budget spent" not in res.output
    data = json.loads(tune_file(run).read_text())
    assert [(p["epochs"], p["status"]) for p in data["points"]] == [(1, "reused"), (2, "trained")]
    assert model.stat().st_mtime == stamp  # reused, not trained again


def _point(accuracy: float, seconds: float, epochs: float) -> TunePoint:
    return TunePoint("sft", "lora", epochs, 1e-3, "parsed", "trained", accuracy=accuracy,
                     ci_low=0.0, ci_high=1.0, train_seconds=seconds)  # fmt: skip


def test_the_best_point_wins_and_a_tie_goes_to_the_cheaper() -> None:
    best = pick_best([_point(0.8, 10, 1), _point(0.9, 50, 3), _point(0.9, 20, 2)])
    assert (best.accuracy, best.epochs) == (0.9, 2)
    unscored = TunePoint("kd", "lora", 1, 1e-3, "parsed", "no data")
    assert pick_best([unscored, _point(0.1, 99, 4)]).epochs == 4
    with pytest.raises(StageError, match="no tune point was trained"):
        pick_best([unscored])


def test_run_trains_with_what_tune_chose_and_refuses_a_stale_choice(
    tmp_path: Path, tiny_model: Path
) -> None:
    """`train.from_tune`: `still run` tunes first (no tune.json yet), then its student is
    the chosen point's (copied, not trained again), whatever `train:` says itself."""
    task = _task(tmp_path, tiny_model, curate={"students": ["parsed"]},
                 train={**TRAIN, "epochs": 3, "from_tune": True},
                 tune={"recipe": ["sft"], "epochs": [1]})  # fmt: skip
    run_dir = tmp_path / "run"
    run, _ = run_all(task, run_dir)
    data = json.loads(tune_file(run).read_text())
    assert data["best"]["epochs"] == 1
    info = json.loads((run.distilled_dir() / "train.json").read_text())
    assert info["epochs"] == 1 and info["copied_from"] == data["best"]["model"][6:]
    assert run.train_spec().epochs == 1 and run.task.train.epochs == 3
    report = (run_dir / "report.md").read_text()
    assert "Recipe choice on validation (still tune)" in report and "still tune |" in report

    raw = yaml.safe_load(task.read_text())
    raw["tune"]["epochs"] = [1, 2]  # another grid: the choice no longer answers it
    task.write_text(yaml.safe_dump(raw))
    with pytest.raises(StageError, match=r"another grid .* run `still tune` again"):
        open_run(task, run_dir).train_spec()


def test_a_tune_needs_a_validation_split_and_known_recipes(
    tmp_path: Path, tiny_model: Path
) -> None:
    task = write_task(tmp_path, student=f"local:{tiny_model}", n=20,
                      split={"seed": 1, "heldout": 5, "validation": 0})  # fmt: skip
    res = CliRunner().invoke(main, ["tune", str(task), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 1 and "no validation split" in res.output
    bad = write_task(tmp_path, student=f"local:{tiny_model}", tune={"recipe": ["magic"]})
    res = CliRunner().invoke(main, ["tune", str(bad), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 1 and "tune.recipe" in res.output and "'magic'" in res.output
