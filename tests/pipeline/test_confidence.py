"""Gold-free filtering: the teacher-only student keeps the answers the teacher is sure of,
by a threshold chosen on validation (where gold exists) and applied to the training rows
without reading their gold."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from still.graders import answer_of
from still.pipeline import StageError, bench_stage, capture_role, export_stage, open_run
from still.pipeline._confidence import (
    CONFIDENCE_FILE,
    choose_threshold,
    confidence,
    confidence_stage,
)
from still.tasks import TaskError, load_task
from test_helpers import LABELS, write_task

SPLIT = {"seed": 1, "heldout": 10, "validation": 20}
NO_VALIDATION = {"seed": 1, "heldout": 10, "validation": 0}
NOISY = "scripted:echo?wrong=0/3"  # a third wrong, and unsure when wrong (margin 0.25)


def test_the_threshold_keeps_most_right_answers_net_of_wrong_ones() -> None:
    low_wrong = [(0.1, False), (0.2, False), (0.3, True), (0.8, True), (0.9, True)]
    assert choose_threshold(low_wrong, 0.5) == 0.25  # drops the two wrong
    assert choose_threshold(low_wrong, 0.9) == 0.0  # must keep 5 of 5: keeps all
    assert choose_threshold([(0.2, True), (0.9, False)], 0.5) == 0.0  # the sure one is wrong
    assert choose_threshold([(0.5, False), (0.5, True), (0.5, True)], 0.1) == 0.0  # no cut
    assert choose_threshold([], 0.5) == 0.0


def _noisy_run(tmp_path: Path, **confidence: object) -> Path:
    curate = {"students": ["parsed"], "confidence": confidence}
    return write_task(tmp_path, student="scripted:first-label", teacher=NOISY, n=120,
                      split=SPLIT, curate=curate)  # fmt: skip


def test_low_margin_wrong_answers_are_dropped(tmp_path: Path) -> None:
    run = open_run(_noisy_run(tmp_path), tmp_path / "run")
    train = capture_role(run, "teacher", "train").completions
    stats = export_stage(run)
    gold = {e.id: e.answer for e in run.split.train}
    wrong = {i for i, c in train.items() if answer_of(c, LABELS).answer != gold[i]}
    assert wrong and stats.dropped["low confidence"] == len(wrong)
    choice = json.loads((run.dir / CONFIDENCE_FILE).read_text())
    assert choice["rule"] == "margin" and choice["chosen_on"] == "validation"
    assert 0.25 < choice["threshold"] < 0.99
    used = next(r for r in choice["rules"] if r["chosen"])
    assert used["validation_rows"] == 20 and used["kept_accuracy"] == 1.0 > used["accuracy"]
    assert used["train_kept"] == len(run.split.train) - len(wrong)
    assert {r["rule"] for r in choice["rules"]} == {"margin", "probability"}
    # every kept training row is right; every dropped one says why
    rows = [json.loads(x) for x in (run.dir / "curation.jsonl").read_text().splitlines()]
    assert {r["example_id"] for r in rows if not r["kept"]} == wrong
    assert all(r["reason"].startswith("low confidence: margin 0.245 < ") for r in rows
               if not r["kept"])  # fmt: skip
    text = {e.fields["text"]: e.answer for e in run.split.train}
    kept = [json.loads(x)["messages"] for x in run.train_file().read_text().splitlines()]
    assert all(m[-1]["content"] == text[m[-2]["content"]] for m in kept)
    # the report says what was kept and how it was chosen
    bench_stage(run, roles=("teacher", "student"), show=False)
    md = (run.dir / "report.md").read_text()
    assert "### Gold-free filtering (teacher-only student)" in md
    assert "| margin (used) |" in md and "gold-free filter (curate.confidence)" in md


def test_train_gold_is_never_read(tmp_path: Path) -> None:
    """The same choice and the same dropped rows with every training answer's gold
    replaced; another validation gold changes the choice."""
    run = open_run(_noisy_run(tmp_path), tmp_path / "run")
    train = capture_role(run, "teacher", "train").completions
    first = confidence_stage(run, train)
    flipped = [e.model_copy(update={"answer": "nonsense"}) for e in run.split.train]
    run.split = dataclasses.replace(run.split, train=flipped)
    again = confidence_stage(run, train)
    assert again.as_dict() == first.as_dict() and again.drops == first.drops and first.drops

    # the validation gold is what decides: say the unsure answers are the right ones
    val = capture_role(run, "teacher", "validation").completions
    unsure = {e.id for e in run.split.validation
              if (confidence(val[e.id], LABELS, "margin") or 0) < 0.5}  # fmt: skip
    assert unsure
    odd = [e.model_copy(update={"answer": val[e.id].text if e.id in unsure else "nonsense"})
           for e in run.split.validation]  # fmt: skip
    run.split = dataclasses.replace(run.split, validation=odd)
    assert confidence_stage(run, train).threshold == 0.0 < first.threshold


def test_a_fixed_threshold_and_no_validation(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label", teacher=NOISY, n=60,
                      split=NO_VALIDATION,
                      curate={"students": ["parsed"], "confidence": {}})  # fmt: skip
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    with pytest.raises(StageError, match=r"chooses its threshold on the validation split"):
        export_stage(run)
    curate = {"students": ["parsed"], "confidence": {"threshold": 0.5}}
    fixed = write_task(tmp_path, student="scripted:first-label", teacher=NOISY, n=60,
                       split=NO_VALIDATION, curate=curate)  # fmt: skip
    run = open_run(fixed, tmp_path / "run")
    stats = export_stage(run)
    choice = json.loads((run.dir / CONFIDENCE_FILE).read_text())
    assert choice["chosen_on"] == "task" and choice["threshold"] == 0.5
    assert stats.dropped["low confidence"] == choice["train_dropped"] > 0
    # the filter is the teacher-only student's: without it, no stale choice remains
    plain = write_task(tmp_path, student="scripted:first-label", teacher=NOISY, n=60,
                       split=NO_VALIDATION)  # fmt: skip
    export_stage(open_run(plain, tmp_path / "run"))
    assert not (run.dir / CONFIDENCE_FILE).exists()


def test_agreement_needs_an_ensemble_and_margin_labels(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label",
                      curate={"confidence": {"by": "agreement"}})  # fmt: skip
    with pytest.raises(TaskError, match=r"agreement counts ensemble votes; add `ensemble:`"):
        load_task(task)
    task = write_task(tmp_path, student="scripted:first-label", labels=None,
                      curate={"confidence": {"by": "margin"}})  # fmt: skip
    with pytest.raises(TaskError, match=r"margin reads label scores, which need `labels`"):
        load_task(task)


def test_agreement_of_an_ensemble(tmp_path: Path) -> None:
    """Two members wrong on the same third of the questions outvote the right one there
    (agreement 2/3, elsewhere 1): the threshold chosen on validation drops those answers."""
    curate = {"students": ["parsed"], "confidence": {"by": "agreement"}}
    task = write_task(tmp_path, student="scripted:first-label", n=120, split=SPLIT,
                      ensemble={"members": 3, "models": [NOISY]}, curate=curate)  # fmt: skip
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    stats = export_stage(run)
    choice = json.loads((run.dir / CONFIDENCE_FILE).read_text())
    used = next(r for r in choice["rules"] if r["chosen"])
    assert used["rule"] == "agreement" and 2 / 3 < choice["threshold"] < 1
    assert used["kept_accuracy"] == 1.0 > used["accuracy"]
    assert stats.dropped["low confidence"] == choice["train_dropped"] > 0
