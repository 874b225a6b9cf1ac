"""Curation filters over grade scores, and the per-row curation report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from still.graders import FormulaError, parse_filter
from still.pipeline import StageError, capture_role, export_stage, open_run
from test_helpers import write_task


@pytest.mark.parametrize(
    ("expr", "scores", "kept"),
    [
        ("correct == 1 and sarcasm >= 6", {"correct": 1, "sarcasm": 6}, True),
        ("correct == 1 and sarcasm >= 6", {"correct": 0, "sarcasm": 9}, False),
        ("correct == 1 and sarcasm >= 6", {"correct": 1, "sarcasm": 5.5}, False),
        ("correct == 1 or sarcasm > 8", {"correct": 0, "sarcasm": 9}, True),
        ("a > 1 and b > 1 or c > 1", {"a": 0, "b": 0, "c": 2}, True),  # and binds tighter
        ("not correct == 1", {"correct": 0}, True),
        ("min(a, b) * 10 >= 5 ^ 2", {"a": 3, "b": 2.5}, True),
    ],
)
def test_filters(expr: str, scores: dict[str, float], kept: bool) -> None:
    assert parse_filter(expr).test(scores) is kept


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("correct", "needs exactly one comparison"),
        ("correct == 1 == 1", "needs exactly one comparison"),
        ("open(x) == 1", "not allowed"),
        ("correctt == 1", "correctt, which name no grader"),
    ],
)
def test_bad_filters_are_refused(expr: str, message: str) -> None:
    with pytest.raises(FormulaError, match=message):
        parse_filter(expr, {"correct", "sarcasm"})


def test_export_with_a_filter_writes_a_curation_report(tmp_path: Path) -> None:
    graders = [
        {"type": "string_check", "name": "correct"},
        {
            "type": "text_similarity",
            "name": "close",
            "evaluation_metric": "fuzzy_match",
            "pass_threshold": 0.5,
        },
    ]
    task = write_task(tmp_path, student="scripted:first-label", graders=graders)
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    # scripted:echo answers the question text: "question 3 about human" names its label
    stats = export_stage(run, keep_if="correct == 1 and close > 0.99")
    report = [json.loads(x) for x in (run.dir / "curation.jsonl").read_text().splitlines()]
    assert len(report) == len(run.split.train)
    assert sum(r["kept"] for r in report) == stats.kept
    # the parsed answer equals the label, so fuzzy_match is 1.0: every row passes
    assert stats.kept == len(run.split.train) and all(r["scores"]["close"] == 1.0 for r in report)
    with pytest.raises(StageError, match=r"kept no rows .*23 filtered out"):
        export_stage(run, keep_if="close < 0.5")  # a stage that keeps nothing says so
    report = [json.loads(x) for x in (run.dir / "curation.jsonl").read_text().splitlines()]
    assert len(report) == 23
    assert all(r["reason"] == "filtered out: close < 0.5" for r in report)
