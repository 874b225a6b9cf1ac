"""`still report RUN`: the reports rebuilt from the store, no model called."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from still.cli import main
from still.pipeline import bench_stage, open_run
from test_helpers import write_task


def test_report_rebuilds_from_the_store_without_any_model_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("STILL_SCRIPTED_LOG", str(calls))
    task = write_task(tmp_path, student="scripted:first-label")
    run = open_run(task, tmp_path / "run")
    bench_stage(run, roles=("teacher", "student", "control"), show=False)
    before = json.loads((run.dir / "report.json").read_text())
    n_calls = len(calls.read_text().splitlines())
    (run.dir / "report.json").unlink()
    (run.dir / "results.parquet").unlink()

    res = CliRunner().invoke(main, ["report", str(run.dir)])
    assert res.exit_code == 0, res.output
    assert len(calls.read_text().splitlines()) == n_calls  # not one model call
    after = json.loads((run.dir / "report.json").read_text())
    acc = {r["role"]: r["accuracy"] for r in after["results"]}
    assert acc == {r["role"]: r["accuracy"] for r in before["results"]}
    assert (run.dir / "results.parquet").is_file()


def test_report_of_a_folder_that_is_no_run(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 1 and "no task.yaml" in res.output
