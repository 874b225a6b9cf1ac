"""Prices: task overrides, the dated built-in table, and cost per 1,000 examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from still.cost import Price, price_for
from still.pipeline import bench_stage, open_run
from test_helpers import write_task


def test_price_lookup_order() -> None:
    mine = {"openai:gpt-4o": Price(input=1.0, output=1.0)}
    assert price_for("openai:gpt-4o", mine) == Price(input=1.0, output=1.0)
    assert price_for("openai:gpt-4o") == Price(input=2.5, output=10.0)
    assert price_for("azure:gpt-4o-mini") == Price(input=0.15, output=0.6)
    assert price_for("openai:unknown-model") is None
    assert price_for("local:gemma3-270m") is None
    assert Price(input=2.0, output=8.0).cost(1_000_000, 500_000) == pytest.approx(6.0)


def test_bench_reports_cost_per_1k_only_for_priced_models(tmp_path: Path) -> None:
    task = write_task(
        tmp_path,
        student="scripted:first-label",
        prices={"scripted:echo": {"input": 1.0, "output": 2.0}},
    )
    run = open_run(task, tmp_path / "run")
    cmp = bench_stage(run, roles=("teacher", "student"), show=False)
    teacher, student = cmp.by_role("teacher"), cmp.by_role("student")
    assert teacher is not None and student is not None and student.cost_per_1k is None
    rows = [json.loads(x) for x in (run.dir / "results.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["role"] == "teacher"]
    expected = (
        1000
        * sum((r["prompt_tokens"] * 1.0 + r["completion_tokens"] * 2.0) / 1e6 for r in mine)
        / len(mine)
    )
    assert teacher.cost_per_1k == pytest.approx(expected) and expected > 0
    report = (run.dir / "report.md").read_text()
    assert f"{expected:.4f}" in report and "| n/a |" in report


def test_a_negative_price_is_rejected(tmp_path: Path) -> None:
    from still.tasks import TaskError, load_task

    task = write_task(tmp_path, student="x", prices={"m": {"input": -1, "output": 0}})
    with pytest.raises(TaskError, match="prices.m.input"):
        load_task(task)
