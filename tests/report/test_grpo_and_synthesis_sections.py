"""The report's sections for a grpo student (reward by step, read from grpo-eval.jsonl) and
for teacher-written inputs (diversity and label balance), in report.md and report.html."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from still.bench import Comparison, ModelResult
from still.report import write_reports

pytest.importorskip("matplotlib")


def _comparison() -> tuple[Comparison, list[dict[str, Any]]]:
    result = ModelResult(
        role="distilled", model="local:/runs/countdown/distilled-x", n=2, correct=1,
        accuracy=0.5, ci_low=0.1, ci_high=0.9, unparseable=0, errors=0, mean_latency_s=0.1,
        p95_latency_s=0.1, tokens_per_s=10.0, prompt_tokens_mean=30.0,
    )  # fmt: skip
    rows = [
        {"role": "distilled", "example_id": f"e{i}", "reference": "1", "prediction": "1",
         "correct": i == 0, "failure": None, "latency_s": 0.1}
        for i in range(2)
    ]  # fmt: skip
    return Comparison([result]), rows


def _grpo_records() -> list[dict[str, Any]]:
    """Six training steps, validation at steps 0, 3 and 6; step 3's weights kept."""
    train = [0.1, 0.2, 0.3, 0.5, 0.4, 0.6]
    records: list[dict[str, Any]] = [
        {"step": s, "split": "train", "reward": r} for s, r in enumerate(train, 1)
    ]
    for step, reward, best in ((0, 0.25, False), (3, 0.55, True), (6, 0.5, False)):
        records.append(
            {"step": step, "split": "validation", "reward": reward, "examples": 50, "best": best}
        )
    return records


def test_a_grpo_students_rewards_by_step_are_a_table_and_a_plot(tmp_path: Path) -> None:
    cmp, rows = _comparison()
    extra = {"grpo": [{"role": "distilled", "records": _grpo_records()}],
             "splits": {"train": 400, "validation": 100, "heldout": 200}}  # fmt: skip
    paths = write_reports(cmp, rows, tmp_path, title="countdown", extra=extra)
    md = paths["markdown"].read_text()
    assert "reward by step" in md
    # each evaluation with the mean training reward of the steps since the one before
    assert "| distilled (grpo) | 0 | 0.250 | - |  |" in md
    assert "| distilled (grpo) | 3 | 0.550 | 0.200 | yes |" in md
    assert "| distilled (grpo) | 6 | 0.500 | 0.500 |  |" in md
    assert "the weights kept are step 3's (0.550)" in md
    assert "0.100 over the first step, 0.600 over the last step, of 6" in md
    assert "the first 50 validation prompts" in md
    assert "its own answers, rewarded by the graders" in md  # not "the teacher answers them"
    page = paths["html"].read_text()
    assert 'data-section="grpo"' in page and 'data-plot="grpo-reward"' in page


SYNTH = {
    "model": "local:gemma3-270m", "n": 6, "seed": 0, "similarity": 0.7, "requested": 9,
    "from_store": 0, "called": 9, "failed": 1, "returned": 8, "parsed": 7, "duplicates": 1,
    "near_duplicates": 0, "leaked": 0, "kept": 6,
    "requested_per_label": {"yes": 5, "no": 4}, "kept_per_label": {"yes": 3, "no": 3},
    "diversity": {"distinct_1": 40, "distinct_1_ratio": 0.6, "distinct_2": 50,
                  "distinct_2_ratio": 0.9},
    "train_diversity": {"distinct_1": 30, "distinct_1_ratio": 0.75, "distinct_2": 38,
                        "distinct_2_ratio": 0.95},
    "real_inputs": 4,
    "diversity_same_size": {"distinct_1": 28, "distinct_1_ratio": 0.7, "distinct_2": 36,
                            "distinct_2_ratio": 0.9},
    "per_label": {"yes": {"kept": 3, "agrees": 2, "other": 1, "none": 0},
                  "no": {"kept": 3, "agrees": 3, "other": 0, "none": 0}},
    "teacher_labels": {"yes": 2, "no": 4},
    "real_labels": {"yes": 2, "no": 2},
}  # fmt: skip


def test_teacher_written_inputs_show_diversity_and_label_balance(tmp_path: Path) -> None:
    cmp, rows = _comparison()
    paths = write_reports(cmp, rows, tmp_path, title="t", extra={"synthesis": SYNTH})
    md = paths["markdown"].read_text()
    assert "wrote 6 new inputs of 6 wanted, from 9 requests: 1 duplicates" in md
    assert "1 unparseable, 1 failed calls" in md
    assert re.search(r"the 4 real training inputs distinct-1 30 \(75\.0%\)", md)
    assert "the first 4 synthetic inputs distinct-1 28 (70.0%), distinct-2 36 (90.0%)" in md
    assert "real training inputs' gold labels yes 2, no 2" in md
    assert "the teacher's answers to the synthetic ones yes 2, no 4" in md
    assert "| yes | 5 | 3 | 2 (67%) | 1 | 0 |" in md
    assert 'data-section="synthesis"' in paths["html"].read_text()


def test_mean_scores_are_shown_with_paired_differences(tmp_path: Path) -> None:
    """A grader with partial credit (a reward's closeness): the report gives each role's
    mean score and its paired difference from the base student and the teacher."""
    from still.bench import compare_scores

    rows = [
        {"role": role, "example_id": f"e{i}", "score": score + (0.02 * (i % 3))}
        for role, score in (("teacher", 0.5), ("student", 0.2), ("distilled", 0.3))
        for i in range(30)
    ]
    cmp, result_rows = _comparison()
    extra = {"scores": compare_scores(rows, n_resamples=500)}
    md = write_reports(cmp, result_rows, tmp_path, title="t", extra=extra)["markdown"].read_text()
    assert "### Mean grader score (before the pass threshold)" in md
    section = md.split("### Mean grader score")[1]
    row = next(x for x in section.splitlines() if x.startswith("| distilled student"))
    # every example 0.1 above the base student and 0.2 below the teacher: no spread
    assert "| 30 | 0.320 [" in row
    assert "| +0.100 [+0.100, +0.100] | -0.200 [-0.200, -0.200] |" in row
    assert "| base student | 30 | 0.220 [" in section
