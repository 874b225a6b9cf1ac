"""Contextual calibration: a teacher whose label scores favour one label by a constant
offset (`scripted:echo?bias=human:12`, as a few-shot prompt biases a small model) is
read without that bias once its prompt is calibrated, everywhere its answers are read;
the store keeps the raw scores and only the content-free requests are new calls."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from still.pipeline import (
    StageError,
    bench_stage,
    capture_role,
    export_stage,
    open_run,
    report_stage,
)
from still.pipeline._calibrate import Calibration, content_free_examples
from still.tasks import TaskError, load_task
from test_helpers import LABELS, write_task

BIASED = "scripted:echo?bias=human:12"


def _calibrated(task: Path, calibrate: object = True) -> Path:
    """The same task with the teacher's prompt calibrated, beside it."""
    data = yaml.safe_load(task.read_text())
    data["prompts"]["teacher"]["calibrate"] = calibrate
    out = task.with_name("task-calibrated.yaml")
    out.write_text(yaml.safe_dump(data))
    return out


def _calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_constant_offset_is_divided_out_exactly() -> None:
    bias = {"a": 3.0, "b": 0.0, "c": 0.0}
    cal = Calibration.from_scores([{y: bias[y] - 5.0 for y in bias}])  # content-free: bias only
    raw = {"a": 3.0 - 2.0, "b": 0.0, "c": -1.0}  # b is right; the offset makes a win
    assert max(raw, key=lambda y: raw[y]) == "a"
    q = cal.scores(raw)
    assert max(q, key=lambda y: q[y]) == "b"
    assert math.isclose(sum(math.exp(v) for v in q.values()), 1.0)
    unbiased = {"a": -2.0, "b": 0.0, "c": -1.0}  # the same scores without the offset
    z = math.log(sum(math.exp(v) for v in unbiased.values()))
    for y in q:
        assert math.isclose(q[y], unbiased[y] - z)


def test_content_free_examples_fill_every_field() -> None:
    exs = content_free_examples(["question", "context"], ["N/A", ""])
    assert [e.fields for e in exs] == [
        {"context": "N/A", "question": "N/A"},
        {"context": "", "question": ""},
    ]


def test_calibration_removes_a_label_bias_everywhere_the_answers_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("STILL_SCRIPTED_LOG", str(calls))
    plain = write_task(tmp_path, student="scripted:first-label", teacher=BIASED)
    run = open_run(plain, tmp_path / "run")
    heldout = [e.answer for e in run.split.heldout]
    raw = bench_stage(run, roles=("teacher",), show=False).by_role("teacher")
    assert raw is not None and raw.accuracy == heldout.count("human") / len(heldout) < 0.5
    capture_role(run, "teacher", "train")
    export_stage(run)
    raw_answers = {json.loads(x)["answer"] for x in run.soft_file().read_text().splitlines()}
    assert raw_answers == {"human"}  # every training answer is the biased label
    before = _calls(calls)

    # calibration on: the same requests, so the content-free ones are the only new calls
    run = open_run(_calibrated(plain), tmp_path / "run")
    stats = capture_role(run, "teacher", "heldout")
    assert (stats.called, stats.from_store, stats.total) == (3, 10, 13)
    assert _calls(calls) == before + 3
    answers = [c.text for c in stats.completions.values()]
    assert answers.count("human") == heldout.count("human")
    cmp = bench_stage(run, roles=("teacher",), show=False)
    teacher = cmp.by_role("teacher")
    assert teacher is not None and teacher.accuracy == 1.0
    # the soft targets of label KD and the teacher-answer rows read calibrated scores
    export_stage(run)
    soft = [json.loads(x) for x in run.soft_file().read_text().splitlines()]
    gold = {e.fields["text"]: e.answer for e in run.split.train}
    for row in soft:
        scores = row["teacher_logprobs"]
        assert row["answer"] == max(scores, key=scores.get) == gold[row["messages"][-1]["content"]]
        assert math.isclose(sum(math.exp(v) for v in scores.values()), 1.0)
    hard = [json.loads(x)["messages"][-1]["content"] for x in
            run.train_file().read_text().splitlines()]  # fmt: skip
    assert hard == [r["answer"] for r in soft]
    # the store-only report reads them calibrated too; nothing was called again
    again = report_stage(run, roles=("teacher",), show=False).by_role("teacher")
    assert again is not None and again.accuracy == 1.0
    assert capture_role(run, "teacher", "heldout").called == 0
    assert _calls(calls) == before + 3
    # the store keeps the raw, biased scores
    ex = run.split.heldout[0]
    stored = run.store.lookup(run.requests("teacher", "heldout")[ex.id].key())
    assert stored is not None and stored.label_logprobs is not None
    assert max(stored.label_logprobs, key=stored.label_logprobs.__getitem__) == "human"
    assert stored.text == "human"


def test_the_content_free_inputs_are_the_tasks_to_choose(tmp_path: Path) -> None:
    plain = write_task(tmp_path, student="scripted:first-label", teacher=BIASED)
    run = open_run(_calibrated(plain, ["N/A"]), tmp_path / "run")
    stats = capture_role(run, "teacher", "heldout")
    assert stats.called == 10 + 1
    content_free = run.store.list(metadata={"split": "content-free"})
    assert [c.request.messages[-1].content for c in content_free] == ["N/A"]
    # the student's prompt is not calibrated: its answers are read as they are
    student = capture_role(run, "student", "heldout")
    assert student.total == 10 and {c.text for c in student.completions.values()} == {LABELS[0]}


def test_uncaptured_content_free_answers_are_named_not_skipped(tmp_path: Path) -> None:
    plain = write_task(tmp_path, student="scripted:first-label", teacher=BIASED)
    run = open_run(plain, tmp_path / "run")
    capture_role(run, "teacher", "heldout")
    run = open_run(_calibrated(plain), tmp_path / "run")
    with pytest.raises(StageError, match=r"calibrate: .* is not stored; run `still capture"):
        run.stored("teacher", "heldout")


def test_calibration_needs_scored_labels(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label", generation={"mode": "generate"})
    with pytest.raises(TaskError, match=r"prompts.teacher.calibrate .* needs `labels`"):
        load_task(_calibrated(task))


def test_each_ensemble_member_is_calibrated_by_its_own_content_free_answers(
    tmp_path: Path,
) -> None:
    # two teachers biased towards different labels: each needs its own calibration
    other = "scripted:echo?bias=location:12"
    plain = write_task(tmp_path, student="scripted:first-label", teacher=BIASED)
    data = yaml.safe_load(_calibrated(plain).read_text())
    data["ensemble"] = {"members": 2, "models": [other]}
    task = tmp_path / "ensemble.yaml"
    task.write_text(yaml.safe_dump(data))
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "heldout")
    cmp = bench_stage(run, roles=("teacher",), show=False)
    teacher = cmp.by_role("teacher")
    assert teacher is not None and teacher.accuracy == 1.0  # both biases divided out
    content_free = run.store.list(metadata={"split": "content-free"})
    by_member = sorted((c.model, c.metadata.get("member")) for c in content_free)
    assert by_member == sorted([(BIASED, None)] * 3 + [(other, "1")] * 3)
