"""`still curve`: a student per (teacher examples, recipe) on a tiny real model, benchmarked
against teacher and base student through the store; a rerun retrains and asks nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from still.cli import main
from still.store import Store
from test_helpers import write_task


def test_curve_trains_each_size_and_recipe_once(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("STILL_SCRIPTED_LOG", str(calls))
    task = write_task(tmp_path, student=f"local:{tiny_model}", n=46,
                      split={"seed": 1, "heldout": 10, "validation": 8})  # fmt: skip
    args = ["curve", str(task), "--run-dir", str(tmp_path / "run"), "--sizes", "10,25",
            "--recipes", "sft,kd:jsd"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    curve = json.loads((tmp_path / "run/curve/curve.json").read_text())
    points = curve["points"]
    assert [(p["n"], p["recipe"]) for p in points] == [
        (10, "sft"), (10, "kd:jsd"), (25, "sft"), (25, "kd:jsd")
    ]  # fmt: skip
    assert curve["teacher"]["accuracy"] == 1.0  # scripted:echo names the label
    # a curve chooses: it is measured on validation and never asks anything of the test split
    assert curve["split"] == "validation" and curve["teacher"]["n"] == 8
    assert curve["best"] in points
    store = Store(tmp_path / "run/still.db")
    assert store.count(metadata={"split": "heldout"}) == 0
    assert store.count(metadata={"split": "validation"}) > 0
    for p in points:
        assert 0 < p["kept"] <= p["n"] and p["steps"] > 0 and p["tokens_per_s"] > 0
        assert 0.0 <= p["accuracy"] <= 1.0 and p["ci_low"] <= p["accuracy"] <= p["ci_high"]
        info = json.loads((Path(p["model"].removeprefix("local:")) / "train.json").read_text())
        assert info["recipe"] == ("sft" if p["recipe"] == "sft" else "kd-jsd")
    md = (tmp_path / "run/curve/curve.md").read_text()
    assert "| kd:jsd | lora | 25 |" in md and "gap closed" in md
    assert (tmp_path / "run/curve/curve.png").stat().st_size > 5000
    # the teacher answered each of the first 25 training questions once, and nothing again
    n_calls = len(calls.read_text().splitlines())
    stamps = {p["model"]: Path(p["model"][6:], "train.json").stat().st_mtime for p in points}
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert len(calls.read_text().splitlines()) == n_calls
    assert stamps == {m: Path(m[6:], "train.json").stat().st_mtime for m in stamps}


def test_curve_refuses_sizes_beyond_the_train_split_and_unknown_recipes(
    tmp_path: Path, tiny_model: Path
) -> None:
    task = write_task(tmp_path, student=f"local:{tiny_model}", n=20, heldout=5)
    run = ["--run-dir", str(tmp_path / "run")]
    res = CliRunner().invoke(main, ["curve", str(task), *run, "--sizes", "500"])
    assert res.exit_code == 1 and re.search(r"exceeds the \d+ training examples", res.output)
    res = CliRunner().invoke(main, ["curve", str(task), *run, "--recipes", "sft,magic"])
    assert res.exit_code == 1 and "unknown recipe 'magic'" in res.output
    res = CliRunner().invoke(main, ["curve", str(task), *run, "--sizes", "ten"])
    assert res.exit_code == 2 and "comma-separated whole numbers" in res.output


def test_a_curve_without_a_validation_split_refuses_to_choose(
    tmp_path: Path, tiny_model: Path
) -> None:
    task = write_task(tmp_path, student=f"local:{tiny_model}", n=20,
                      split={"seed": 1, "heldout": 5, "validation": 0})  # fmt: skip
    res = CliRunner().invoke(main, ["curve", str(task), "--run-dir", str(tmp_path / "run"),
                                    "--sizes", "5"])  # fmt: skip
    assert res.exit_code == 1 and "no validation split" in res.output


def test_a_curve_with_nothing_to_train_on_fails(tmp_path: Path, tiny_model: Path) -> None:
    """A teacher that is always wrong leaves no training row: no point, and an error,
    never an empty table reported as a success."""
    task = write_task(tmp_path, student=f"local:{tiny_model}", teacher="scripted:const=x",
                      n=20, heldout=5)  # fmt: skip
    res = CliRunner().invoke(main, ["curve", str(task), "--run-dir", str(tmp_path / "run"),
                                    "--sizes", "10", "--recipes", "sft"])  # fmt: skip
    assert res.exit_code == 1 and "no student was trained" in res.output
