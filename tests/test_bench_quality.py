"""benchmarks/bench_quality.py: the cross-task table read from report.json files, the goal
line of issue 15, and the trained-teacher variant of the demo it tables."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from still.tasks import load_examples, load_task, split_examples

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_quality", ROOT / "benchmarks" / "bench_quality.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bq = _bench()


def _result(role: str, correct: int, n: int, low: float, high: float) -> dict[str, Any]:
    """One entry of report.json's "results", with every key a real one has."""
    return {
        "role": role, "model": f"local:{role}", "n": n, "correct": correct,
        "accuracy": correct / n, "ci_low": low, "ci_high": high, "unparseable": 0, "errors": 0,
        "mean_latency_s": 0.1, "p95_latency_s": 0.2, "tokens_per_s": 300.0,
        "prompt_tokens_mean": 49.0, "p50_latency_s": 0.1, "p99_latency_s": 0.3,
        "completion_tokens_mean": 1.0, "ttft_p50_s": 1.0, "ttft_p95_s": 1.5,
        "prompt": "student" if role != "teacher" else "teacher", "cost_per_1k": None,
    }  # fmt: skip


def _pair(a: str, b: str, diff: float, low: float, high: float) -> dict[str, Any]:
    return {
        "a": a, "b": b, "n": 100, "accuracy_a": 0.0, "accuracy_b": 0.0, "diff": diff,
        "diff_low": low, "diff_high": high, "mcnemar_b01": 1, "mcnemar_b10": 9, "mcnemar_p": 0.01,
    }  # fmt: skip


def _report(
    teacher: tuple[int, float, float], majority: float, gap: tuple[float, float, float]
) -> dict[str, Any]:
    """A report.json of 100 test examples: base student 30%, teacher-only student 70%,
    both beaten by the teacher (paired); `gap`: the teacher-only student's, as written."""
    correct, low, high = teacher
    point, g_low, g_high = gap
    return {
        "split": "heldout",
        "results": [
            _result("teacher", correct, 100, low, high),
            _result("student", 30, 100, 0.22, 0.40),
            _result("distilled", 70, 100, 0.60, 0.78),
        ],
        "baselines": {
            "majority_label": "x",
            "majority": majority,
            "majority_ci": [majority - 0.1, majority + 0.1],
            "chance": 0.25,
            "n": 100,
        },  # fmt: skip
        "gap_closed": point,
        "gaps": {"distilled": {"gap_closed": point, "ci_low": g_low, "ci_high": g_high}},
        "distilled_beats_base_paired": True,
        "paired": [
            _pair("distilled", "student", 0.4, 0.3, 0.5),
            _pair("teacher", "student", correct / 100 - 0.3, 0.1, 0.5),
        ],
        "gap_closed_interval": {
            "distilled": {"gap_closed": point, "ci_low": g_low, "ci_high": g_high}
        },
        "gap_meaningful": low > majority,
    }


def _rows() -> list[Any]:
    strong = _report((80, 0.71, 0.87), majority=0.40, gap=(0.80, 0.60, 1.00))
    weak = _report((50, 0.40, 0.60), majority=0.55, gap=(1.50, 0.20, 3.00))
    return [
        bq.row(bq.Entry(Path("a.yaml"), "strong", "few-shot"), strong),
        bq.row(bq.Entry(Path("b.yaml"), "weak", "few-shot"), weak),
    ]


def test_the_goal_mean_counts_only_tasks_whose_teacher_beats_the_majority() -> None:
    strong, weak = _rows()
    assert strong.beats_majority and weak.beats_majority is False
    (line,) = bq.goal_lines([strong, weak])
    # the weak task's 150% would lift the mean to 115%, past the goal: it is not counted
    assert "80% over 1 task(s) (strong 80% [60%, 100%]): not met." in line
    assert "weak" not in line
    (line,) = bq.goal_lines([strong, bq.row(bq.Entry(Path("c.yaml"), "c", "few-shot"), None)])
    assert "not run yet: c" in line and "80% over 1 task(s)" in line


def test_a_withheld_gap_is_a_dash_with_the_reports_reason() -> None:
    strong, weak = _rows()
    assert strong.cells[bq.HEADER.index("gap closed (teacher-only)")] == "80% [60%, 100%]"
    assert weak.cells[bq.HEADER.index("gap closed (teacher-only)")] == "— (raw 150% [20%, 300%])"
    text = bq.table([strong, weak])
    assert "| strong | few-shot | 100 | 80.0% [71.0%, 87.0%] | 30.0% [22.0%, 40.0%] |" in text
    assert (
        "- weak (few-shot teacher): no gap figure: the teacher (50.0% [40.0%, 60.0%]) is within "
        "its interval of the majority-label baseline (55.0%)" in text
    )
    assert "- strong" not in text  # nothing to say about it


def test_a_report_is_stale_when_its_task_file_or_the_one_it_extends_is_newer(
    tmp_path: Path,
) -> None:
    base, variant, report = tmp_path / "task.yaml", tmp_path / "v.yaml", tmp_path / "report.json"
    base.write_text("name: t\n")
    variant.write_text(yaml.safe_dump({"extends": "task.yaml", "name": "v"}))
    report.write_text("{}")
    for path, when in ((base, 100), (variant, 100), (report, 200)):
        os.utime(path, (when, when))
    assert not bq.stale(variant, report)
    os.utime(base, (300, 300))
    assert bq.stale(variant, report)
    assert bq.stale(variant, tmp_path / "missing.json")


def test_a_report_with_a_digest_is_stale_only_when_a_setting_changed(tmp_path: Path) -> None:
    """A comment edited in the task file (or the file it extends) keeps the report; a
    setting changed there does not, whatever the file times say."""
    base, variant, report = tmp_path / "task.yaml", tmp_path / "v.yaml", tmp_path / "report.json"
    shutil.copyfile(bq.EXAMPLES / "sms-spam" / "task.yaml", base)
    variant.write_text("extends: task.yaml\nname: v\n")
    report.write_text(json.dumps({"task_digest": load_task(variant).digest()}))
    os.utime(report, (100, 100))  # older than both files
    assert not bq.stale(variant, report)
    base.write_text("# a new comment\n" + base.read_text())
    assert not bq.stale(variant, report)
    task = yaml.safe_load(base.read_text())
    task["split"]["seed"] += 1
    base.write_text(yaml.safe_dump(task))
    assert bq.stale(variant, report)


def test_the_trained_teacher_demo_is_benched_on_the_demos_test_split() -> None:
    found = {e.name: e for e in bq.entries()}
    assert found["trec"].variant == "few-shot"
    assert found["trec-trained-teacher"].variant == "trained"
    assert "countdown" not in found  # grpo: no teacher to distil
    demo = load_task(ROOT / "examples" / "trec" / "task.yaml")
    trained = load_task(ROOT / "examples" / "trec" / "trained-teacher.yaml")
    assert trained.teacher_training is not None and demo.teacher_training is None
    assert (trained.split, trained.models, trained.train) == (demo.split, demo.models, demo.train)
    examples, _ = load_examples(demo)
    a = split_examples(examples, demo.split, demo.prompts["teacher"].fewshot)
    b = split_examples(examples, trained.split, 0, trained.teacher_training.rows)
    assert [e.id for e in a.heldout] == [e.id for e in b.heldout]
    assert [e.id for e in a.validation] == [e.id for e in b.validation]
    assert len(b.train) == len(a.train) and len(b.teacher) == trained.teacher_training.rows
    assert not {e.id for e in b.teacher} & {e.id for e in b.train}
