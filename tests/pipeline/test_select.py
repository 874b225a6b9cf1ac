"""`still select`: candidates on gold train examples, roles picked by policy, with reasons."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from still.bench import ModelResult
from still.cli import main
from still.pipeline import apply_policy, open_run, select_models
from test_helpers import write_task


def _r(model: str, acc: float, cost: float | None = None, lat: float = 0.1) -> ModelResult:
    return ModelResult(
        role="candidate", model=model, n=100, correct=int(acc * 100), accuracy=acc,
        ci_low=acc - 0.09, ci_high=acc + 0.09, unparseable=0, errors=0, mean_latency_s=lat,
        p95_latency_s=lat, tokens_per_s=0.0, prompt_tokens_mean=0.0, cost_per_1k=cost,
    )  # fmt: skip


def test_policy_picks_best_teacher_and_cheapest_student_over_the_floor() -> None:
    results = [
        _r("big", 0.9, cost=5.0),
        _r("mid", 0.7, cost=1.0),
        _r("small", 0.6, cost=0.1),
        _r("tiny", 0.3, cost=0.01),
    ]
    sel = apply_policy(results, floor=0.5, control="second")
    assert (sel.teacher, sel.student, sel.control) == ("big", "small", "mid")
    assert "cheapest reaching the floor 50%" in sel.reasons["student"]
    weakest = apply_policy(results, floor=None, control=None)
    assert weakest.student == "tiny" and "weakest (no floor set)" in weakest.reasons["student"]
    none_meet = apply_policy(results, floor=0.95, control=None)
    assert (
        none_meet.student == "tiny"
        and "none of the others reaches 95%" in none_meet.reasons["student"]
    )


def test_unpriced_candidates_are_ranked_by_latency_after_priced_ones() -> None:
    results = [_r("big", 0.9, cost=5.0), _r("fast", 0.6, lat=0.05), _r("slow", 0.6, lat=0.5)]
    assert apply_policy(results, floor=0.5, control=None).student == "fast"


def test_close_calls_are_flagged() -> None:
    sel = apply_policy([_r("a", 0.6), _r("b", 0.55)], floor=None, control=None)
    assert "within the 95% intervals" in sel.reasons["warning"]


def test_select_runs_candidates_on_train_examples_only(tmp_path: Path) -> None:
    task = write_task(
        tmp_path,
        student="scripted:first-label",
        selection={
            "candidates": ["scripted:echo", "scripted:first-label", "scripted:const=number"],
            "examples": 12,
        },
    )
    run = open_run(task, tmp_path / "run")
    sel = select_models(run)
    assert sel.teacher == "scripted:echo"  # echo names the label: always right
    assert sel.student in ("scripted:first-label", "scripted:const=number")
    stored = run.store.list(metadata={"role": "candidate"})
    assert len(stored) == 36 and all(c.metadata["split"] == "train" for c in stored)
    heldout = {e.id for e in run.split.heldout}
    assert not heldout & {e.id for e in run.split.train[:12]}
    res = CliRunner().invoke(main, ["select", str(task), "--run-dir", str(run.dir)])
    assert res.exit_code == 0, res.output
    assert "teacher: scripted:echo" in res.output
    assert json.loads((run.dir / "selection.json").read_text())["teacher"] == "scripted:echo"


def test_the_report_shows_the_selection_and_why(tmp_path: Path) -> None:
    """After `still select`, the run's reports carry the candidates and every reason."""
    from still.pipeline import report_stage

    task = write_task(
        tmp_path,
        student="scripted:first-label",
        selection={"candidates": ["scripted:echo", "scripted:first-label"], "examples": 12},
    )
    run = open_run(task, tmp_path / "run")
    res = CliRunner().invoke(main, ["select", str(task), "--run-dir", str(run.dir)])
    assert res.exit_code == 0, res.output
    run.store.close()
    run = open_run(task, tmp_path / "run")
    from still.pipeline import bench_stage

    bench_stage(run, roles=("teacher", "student"), show=False)
    report_stage(run, roles=("teacher", "student"), show=False)
    saved = json.loads((run.dir / "report.json").read_text())["selection"]
    assert saved["teacher"] == "scripted:echo" and saved["student"] == "scripted:first-label"
    md = (run.dir / "report.md").read_text()
    assert "### Model selection" in md and "teacher: scripted:echo (most accurate: 100.0%" in md
    html = (run.dir / "report.html").read_text()
    assert 'data-section="selection"' in html and 'data-plot="selection"' in html
