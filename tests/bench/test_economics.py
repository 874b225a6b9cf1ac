"""Prompt compression, break-even volume, accuracy by input length, latency percentiles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from still.bench import Comparison, ModelResult, accuracy_by_length, economics
from still.cost import Price
from still.pipeline import bench_stage, open_run
from test_helpers import write_task


def _r(role: str, prompt_tokens: float, cost: float | None) -> ModelResult:
    return ModelResult(
        role=role, model=role, n=10, correct=5, accuracy=0.5, ci_low=0.2, ci_high=0.8,
        unparseable=0, errors=0, mean_latency_s=0.1, p95_latency_s=0.1, tokens_per_s=1.0,
        prompt_tokens_mean=prompt_tokens, cost_per_1k=cost,
    )  # fmt: skip


def test_break_even_and_prompt_compression() -> None:
    cmp = Comparison([_r("teacher", 250, 0.70), _r("distilled", 50, 0.02)])
    eco = economics(cmp, Price(input=2.5, output=10), train_seconds=1800, cost_per_hour=2.0)
    assert eco["prompt_compression"] == pytest.approx(5.0)
    assert eco["prompt_tokens_saved_per_1k"] == pytest.approx(200_000)
    assert eco["input_dollars_saved_per_1k"] == pytest.approx(0.5)  # 200k tokens at $2.5/M
    assert eco["training_cost"] == pytest.approx(1.0)
    # $1 of training, $0.68 saved per 1,000 requests -> paid for after 1,471 requests
    assert eco["break_even_requests"] == math.ceil(1000 * 1.0 / 0.68)
    free = economics(cmp, None)
    assert free["training_cost"] is None and free["break_even_requests"] is None


def test_accuracy_by_length_buckets() -> None:
    rows = [{"role": "student", "input_chars": n, "correct": n < 50} for n in range(10, 110, 10)]
    buckets = accuracy_by_length(rows, buckets=2)
    assert [b["n"] for b in buckets] == [5, 5]
    assert [b["accuracy"] for b in buckets] == [0.8, 0.0]  # it fails the long inputs


def test_reports_carry_economics_and_length_buckets(tmp_path: Path) -> None:
    task = write_task(
        tmp_path,
        student="scripted:first-label",
        prices={"scripted:echo": {"input": 1.0, "output": 2.0}},
    )
    run = open_run(task, tmp_path / "run")
    cmp = bench_stage(run, roles=("teacher", "student"), show=False)
    report = json.loads((run.dir / "report.json").read_text())
    assert report["economics"]["prompt_compression"] > 1  # few-shot teacher, short student
    assert {b["role"] for b in report["accuracy_by_length"]} == {"teacher", "student"}
    md = (run.dir / "report.md").read_text()
    assert "What distillation buys" in md and "Accuracy by input length" in md
    t = cmp.by_role("teacher")
    assert t is not None and t.p50_latency_s <= t.p95_latency_s <= t.p99_latency_s


def test_reports_carry_paired_comparisons(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label")
    run = open_run(task, tmp_path / "run")
    bench_stage(run, roles=("teacher", "student"), show=False)
    report = json.loads((run.dir / "report.json").read_text())
    (pair,) = report["paired"]
    assert (pair["a"], pair["b"]) == ("teacher", "student")
    assert pair["diff"] > 0 and pair["mcnemar_p"] < 0.05  # echo beats first-label clearly
    assert "Paired comparisons" in (run.dir / "report.md").read_text()


def test_label_distribution_against_scipy() -> None:
    from scipy.stats import chisquare

    from still.bench._bias import label_distribution

    rows = [
        {"role": "student", "reference": g, "prediction": p}
        for g, p in [("a", "a")] * 10 + [("b", "a")] * 8 + [("b", "b")] * 2 + [("c", None)] * 5
    ]
    (d,) = label_distribution(rows, ["a", "b", "c"])
    assert d["gold"] == [10, 10, 5] and d["predicted"] == [18, 2, 0] and d["not_answered"] == 5
    ref = chisquare([18, 2, 0], [10 / 25 * 20, 10 / 25 * 20, 5 / 25 * 20])
    assert d["chi2"] == pytest.approx(ref.statistic) and d["p_value"] == pytest.approx(ref.pvalue)
    assert d["confusion"] == [[10, 0, 0], [8, 2, 0], [0, 0, 0]]
