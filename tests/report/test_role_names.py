"""Every renderer names the roles of the run it reports on: a student trained by
reinforcement fine-tuning (train.recipe: grpo) learned from its own answers and the
graders' rewards, so no report may call it a student of teacher answers; reports of other
recipes, and report.json files written without the names, keep the default names."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from still.bench import Comparison, ModelResult, wilson
from still.report import ROLE_NAMES, print_table, role_names, verdict_lines, write_reports

pytest.importorskip("matplotlib")

TEACHER_ANSWERS = "distilled student (teacher answers)"
RFT = role_names("grpo")["distilled"]


def _comparison() -> tuple[Comparison, list[dict[str, object]]]:
    """Teacher, base student and distilled student on 40 examples, analysed (paired tests),
    the distilled student well above the base student."""
    right = {
        "teacher": [i % 10 != 0 for i in range(40)],
        "student": [i % 3 == 0 for i in range(40)],
        "distilled": [i % 5 != 0 for i in range(40)],
    }
    results = []
    for role, cs in right.items():
        k, n = sum(cs), len(cs)
        lo, hi = wilson(k, n)
        results.append(
            ModelResult(role, f"scripted:{role}", n, k, k / n, lo, hi, 0, 0, 0.1, 0.1, 10, 5)
        )
    rows: list[dict[str, object]] = [
        {"role": role, "example_id": f"e{i}", "reference": "1", "prediction": "1",
         "correct": c, "failure": None, "latency_s": 0.1}
        for role, cs in right.items()
        for i, c in enumerate(cs)
    ]  # fmt: skip
    cmp = Comparison(results).analyse(rows, n_resamples=500)
    return cmp, rows


def test_names_by_recipe() -> None:
    assert RFT != TEACHER_ANSWERS and "teacher" not in RFT
    for recipe in (None, "sft", "kd", "dpo", "a-plugin-recipe"):
        assert role_names(recipe) == ROLE_NAMES  # all learn from teacher answers
    names = role_names("grpo")
    names["student"] = "changed"  # a fresh dict: the defaults stay as they are
    assert ROLE_NAMES["student"] == "base student" == role_names("grpo")["student"]


def test_a_grpo_run_never_calls_its_student_one_of_teacher_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cmp, rows = _comparison()
    extra = {"role_names": role_names("grpo"), "paired": cmp.paired}
    paths = write_reports(cmp, rows, tmp_path, title="countdown", extra=extra)
    md = paths["markdown"].read_text()
    page = paths["html"].read_text()
    for text in (md, page):
        assert "teacher answers" not in text
    assert f"| {RFT} | `scripted:distilled` |" in md  # the table
    assert f"\n{RFT} closes " in md  # the verdict, its case kept ("RFT", not "Rft")
    assert f"| {RFT} vs base student |" in md  # the paired tests
    assert f"<td>{html.escape(RFT)}</td>" in page
    assert f'<p class="headline win" data-mood="win">{html.escape(RFT)} closes ' in page
    assert json.loads(paths["json"].read_text())["role_names"]["distilled"] == RFT
    print_table(cmp, title="countdown", names=role_names("grpo"))
    shown = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "teacher answers" not in shown and f"{RFT} closes " in shown
    assert verdict_lines(cmp, role_names("grpo"))[0].startswith(RFT)


def test_without_names_a_report_keeps_the_default_ones(tmp_path: Path) -> None:
    """A report.json written before the names were stored, or another recipe's run."""
    cmp, rows = _comparison()
    for extra in ({"paired": cmp.paired}, {"paired": cmp.paired, "role_names": role_names("dpo")}):
        paths = write_reports(cmp, rows, tmp_path, title="t", extra=extra)
        md = paths["markdown"].read_text()
        assert f"| {TEACHER_ANSWERS} | `scripted:distilled` |" in md
        assert f"| {TEACHER_ANSWERS} vs base student |" in md
        assert "\nDistilled student (teacher answers) closes " in md
        assert html.escape(TEACHER_ANSWERS) in paths["html"].read_text()
        assert RFT not in md
