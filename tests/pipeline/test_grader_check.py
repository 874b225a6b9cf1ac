"""Grade the grader: a judge's agreement with gold, and the trust gate on training data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from still.bench import GraderNotTrusted
from still.cli import main
from still.pipeline import capture_role, check_grader, export_stage, open_run
from test_helpers import write_task

JUDGE = {
    "type": "label_model",
    "name": "verdict",
    # scripted:first-label always picks the first label: a judge that passes everything
    "model": "scripted:first-label",
    "input": [{"role": "user", "content": "Q: {{item.text}} A: {{sample.output_text}} Correct?"}],
    "labels": ["correct", "incorrect"],
    "passing_labels": ["correct"],
}


def _run(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    # the teacher always answers "human": right on a third of the questions
    task = write_task(
        tmp_path,
        student="scripted:first-label",
        teacher="scripted:first-label",
        graders=[{"type": "string_check", "name": "correct"}, JUDGE],
        **kw,
    )
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    return task, run


def test_a_judge_that_passes_everything_has_kappa_zero(tmp_path: Path) -> None:
    _, run = _run(tmp_path)
    a = check_grader(run, "verdict")
    n_right = sum(ex.answer == "human" for ex in run.split.train)
    assert a.n == len(run.split.train)
    assert a.accuracy == pytest.approx(n_right / a.n)
    assert a.kappa == pytest.approx(0.0)
    checks = json.loads((run.dir / "grader_checks.json").read_text())
    (record,) = checks.values()
    assert record["grader"] == "verdict" and record["kappa"] == pytest.approx(0.0)
    # judge answers were stored and tagged
    assert run.store.count(metadata={"role": "judge", "grader": "verdict"}) == a.n


def test_gold_file(tmp_path: Path) -> None:
    _, run = _run(tmp_path)
    gold = tmp_path / "gold.jsonl"
    gold.write_text(
        "\n".join(json.dumps({"example_id": ex.id, "passed": True}) for ex in run.split.train)
    )
    a = check_grader(run, "verdict", gold_file=gold)
    assert a.accuracy == 1.0  # gold says all pass; so does the judge
    gold.write_text('{"example_id": "x"}\n')
    with pytest.raises(ValueError, match=r"gold.jsonl:1: not a gold row"):
        check_grader(run, "verdict", gold_file=gold)


def test_untrusted_judge_blocks_export_unless_forced(tmp_path: Path) -> None:
    task, run = _run(tmp_path, curate={"filter": "verdict == 1", "min_kappa": 0.5})
    with pytest.raises(GraderNotTrusted, match="never checked"):
        export_stage(run, "correct")
    check_grader(run, "verdict")
    with pytest.raises(GraderNotTrusted, match=r"kappa 0.00 .*--force"):
        export_stage(run, "correct")
    stats = export_stage(run, "correct", force=True)
    assert stats.kept == len(run.split.train)  # the lax judge keeps every row
    res = CliRunner().invoke(
        main, ["check-grader", str(task), "--run-dir", str(run.dir), "--grader", "verdict"]
    )
    assert res.exit_code == 0, res.output
    assert "Cohen's kappa 0.000" in res.output
    res = CliRunner().invoke(
        main, ["export", str(task), "--run-dir", str(run.dir), "--keep", "correct"]
    )
    assert res.exit_code == 1 and "--force" in res.output
    # the teacher-only student's data is every parseable answer: no judge decides it
    assert export_stage(run, "parsed").kept == len(run.split.train)


def test_an_undefined_kappa_is_not_trusted(tmp_path: Path) -> None:
    _, run = _run(tmp_path, curate={"filter": "verdict == 1", "min_kappa": 0.5})
    check_grader(run, "verdict")
    checks = json.loads((run.dir / "grader_checks.json").read_text())
    (key,) = checks
    checks[key]["kappa"] = float("nan")
    (run.dir / "grader_checks.json").write_text(json.dumps(checks))
    with pytest.raises(GraderNotTrusted, match="kappa undefined"):
        export_stage(run, "correct")


def test_a_check_vouches_only_for_the_judge_it_measured(tmp_path: Path) -> None:
    """The trust record is keyed by the judge's whole configuration: a judge with the
    same name but another prompt or model is not vouched for by the old check."""
    from still.graders import build_grader
    from still.pipeline import fingerprint
    from still.tasks import load_task

    curate = {"filter": "verdict == 1", "min_kappa": -1.0}  # any measured kappa passes
    task, run = _run(tmp_path, curate=curate)
    check_grader(run, "verdict")
    assert export_stage(run, "correct").kept > 0  # measured: trusted
    stricter = {**JUDGE, "input": [{"role": "user", "content": "Strictly: {{sample.output_text}}"}]}
    other = tmp_path / "other"
    other.mkdir()
    changed = open_run(
        write_task(other, student="scripted:first-label", teacher="scripted:first-label",
                   graders=[{"type": "string_check", "name": "correct"}, stricter],
                   curate=curate),
        run.dir,
    )  # fmt: skip
    with pytest.raises(GraderNotTrusted, match="never checked"):
        export_stage(changed, "correct")
    judge = run.graders[1]
    assert fingerprint(judge) == fingerprint(build_grader(load_task(task).graders[1]))
    assert fingerprint(judge) != fingerprint(changed.graders[1])
    other_model = build_grader(load_task(task).graders[1].model_copy(update={"model": "x:y"}))
    assert fingerprint(judge) != fingerprint(other_model)
