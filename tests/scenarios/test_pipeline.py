"""The whole loop on a scripted teacher and a tiny real student: stages, reports, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from still.pipeline import (
    StageError,
    bench_stage,
    capture_role,
    export_stage,
    open_run,
    run_all,
)
from test_helpers import write_task


def test_run_all_then_rerun_calls_no_model(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("STILL_SCRIPTED_LOG", str(calls))
    # validation large enough for the teacher check before training to tell (15 examples)
    task = write_task(tmp_path, student=f"local:{tiny_model}", n=55,
                      split={"seed": 1, "heldout": 10, "validation": 15})  # fmt: skip
    run, cmp = run_all(task, tmp_path / "run")
    check = json.loads(run.teacher_check_file.read_text())
    assert check["n"] == 15 and check["teacher"] == 1.0 and check["problems"] == []
    assert "Is the teacher worth distilling?" in (run.dir / "report.md").read_text()
    # both distilled students: teacher answers alone, and grader-verified ones
    roles = ["teacher", "student", "distilled", "distilled-verified", "control"]
    assert [r.role for r in cmp.results] == roles
    prompts = ["teacher", "student", "student", "student", "teacher"]
    assert [r.prompt for r in cmp.results] == prompts
    assert run.train_file("parsed").is_file() and run.train_file("correct").is_file()
    # a perfect teacher: the same rows, so one content-addressed model serves both
    assert run.train_file("parsed").read_text() == run.train_file("correct").read_text()
    assert run.distilled_dir("parsed") == run.distilled_dir("correct")
    teacher = cmp.by_role("teacher")
    assert teacher is not None and teacher.accuracy == 1.0 and teacher.n == 10
    for name in ("report.md", "report.json", "results.jsonl", "results.parquet", "split.json"):
        assert (run.dir / name).is_file(), name
    frame = pd.read_parquet(run.dir / "results.parquet")
    assert len(frame) == 50 and set(frame.role) == set(roles)
    report = json.loads((run.dir / "report.json").read_text())
    assert report["results"][0]["role"] == "teacher"
    # training data: student prompt, teacher answer, never a held-out id
    rows = [json.loads(x) for x in run.train_file().read_text().splitlines()]
    assert rows and all(
        r["messages"][0] == {"role": "system", "content": "Classify."} for r in rows
    )
    heldout_texts = {e.fields["text"] for e in run.split.heldout}
    assert not heldout_texts & {r["messages"][1]["content"] for r in rows}

    n_calls, n_rows = len(calls.read_text().splitlines()), run.store.count()
    # the teacher on train, held-out and validation (its check); the local models too
    assert n_calls == len(run.split.train) + 10 + 15 and n_rows > n_calls
    model_dir = run.distilled_dir("correct")
    mtime = (model_dir / "model.safetensors").stat().st_mtime
    run2, cmp2 = run_all(task, tmp_path / "run")
    assert len(calls.read_text().splitlines()) == n_calls, "rerun called the teacher again"
    assert run2.store.count() == n_rows, "rerun made model calls already stored"
    assert (model_dir / "model.safetensors").stat().st_mtime == mtime, "rerun retrained"
    assert [r.accuracy for r in cmp2.results] == [r.accuracy for r in cmp.results]


def test_teacher_only_export_keeps_wrong_answers_the_verified_one_drops(
    tmp_path: Path, tiny_model: Path
) -> None:
    """`parsed` learns from the teacher alone (no reference read), `correct` from what the
    graders confirm: with a teacher that always answers the first label they differ."""
    task = write_task(tmp_path, student=f"local:{tiny_model}", teacher="scripted:first-label")
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    parsed, correct = export_stage(run, "parsed"), export_stage(run, "correct")
    n = len(run.split.train)
    right = sum(e.answer == "human" for e in run.split.train)
    assert parsed.kept == n and correct.kept == right < n
    assert run.train_file("parsed").parent == run.dir
    assert run.train_file("correct").parent == run.dir / "verified"
    answers = [json.loads(x)["messages"][-1]["content"] for x in
               run.train_file("parsed").read_text().splitlines()]  # fmt: skip
    assert set(answers) == {"human"}


def test_validation_examples_never_reach_training_data(tmp_path: Path, tiny_model: Path) -> None:
    task = write_task(tmp_path, student=f"local:{tiny_model}", split={"seed": 1, "heldout": 10,
                      "validation": 6})  # fmt: skip
    run = open_run(task, tmp_path / "run")
    assert len(run.split.validation) == 6
    capture_role(run, "teacher", "train")
    export_stage(run)
    texts = {json.loads(x)["messages"][1]["content"] for x in
             run.train_file().read_text().splitlines()}  # fmt: skip
    assert not texts & {e.fields["text"] for e in run.split.validation}
    split = json.loads((run.dir / "split.json").read_text())
    assert len(split["validation"]) == 6


def test_failed_requests_are_stored_and_counted(tmp_path: Path, tiny_model: Path) -> None:
    task = write_task(tmp_path, student=f"local:{tiny_model}", teacher="scripted:echo?fail_every=3")
    run = open_run(task, tmp_path / "run")
    stats = capture_role(run, "teacher", "train")
    assert stats.failed == stats.total // 3 and stats.called == stats.total
    assert run.store.count(errors=True) == stats.failed
    export = export_stage(run)
    assert export.dropped["teacher error"] == stats.failed
    # a rerun retries only the failed ones
    again = capture_role(run, "teacher", "train")
    assert again.from_store == stats.total - stats.failed and again.called == stats.failed


def test_a_teacher_that_always_fails_stops_the_run(tmp_path: Path, tiny_model: Path) -> None:
    task = write_task(tmp_path, student=f"local:{tiny_model}", teacher="scripted:fail")
    with pytest.raises(StageError, match="every teacher request failed"):
        run_all(task, tmp_path / "run")


def test_export_refuses_heldout_ids(tmp_path: Path, tiny_model: Path) -> None:
    from still.curate import LeakageError, export

    task = write_task(tmp_path, student=f"local:{tiny_model}")
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    leaky = run.split.train + run.split.heldout[:1]
    with pytest.raises(LeakageError, match="held out"):
        export(
            run.task,
            leaky,
            {},
            run.graders,
            run.heldout_ids,
            run.split.fewshot,
            tmp_path / "x.jsonl",
        )


def test_export_without_teacher_answers_says_so(tmp_path: Path, tiny_model: Path) -> None:
    task = write_task(tmp_path, student=f"local:{tiny_model}")
    run = open_run(task, tmp_path / "run")
    with pytest.raises(StageError, match="no teacher answer"):
        export_stage(run)


def test_generate_mode_parses_free_text_and_counts_unparseable(
    tmp_path: Path, tiny_model: Path
) -> None:
    task = write_task(
        tmp_path,
        student=f"local:{tiny_model}",
        generation={"mode": "generate", "max_tokens": 4, "batch_size": 4},
    )
    run = open_run(task, tmp_path / "run")
    assert all(r.labels is None for r in run.requests("student", "heldout").values())
    stats = capture_role(run, "student", "heldout")
    assert stats.unparseable is not None and f"{stats.unparseable} unparseable" in stats.summary()
    cmp = bench_stage(run, roles=("teacher", "student"), show=False)
    teacher, student = cmp.by_role("teacher"), cmp.by_role("student")
    assert teacher is not None and teacher.accuracy == 1.0  # echo names the label
    assert student is not None and student.unparseable == stats.unparseable
    rows = pd.read_parquet(run.dir / "results.parquet")
    student_rows = rows[rows.role == "student"]
    assert (student_rows.failure == "unparseable").sum() == student.unparseable
    assert not student_rows[student_rows.failure == "unparseable"].correct.any()


def test_kd_recipe_trains_on_the_teachers_label_scores(tmp_path: Path, tiny_model: Path) -> None:
    """export writes train-soft.jsonl beside train.jsonl (the same rows, with the teacher's
    label scores); train.recipe kd trains on it into its own content-addressed folder."""
    from still.pipeline import train_stage

    kd = {"recipe": "kd", "epochs": 1, "batch_size": 4, "learning_rate": 0.001, "lora_r": 4}
    run = open_run(write_task(tmp_path, student=f"local:{tiny_model}", train=kd), tmp_path / "r")
    capture_role(run, "teacher", "train")
    stats = export_stage(run)
    soft = [json.loads(x) for x in run.soft_file().read_text().splitlines()]
    hard = [json.loads(x) for x in run.train_file().read_text().splitlines()]
    assert len(soft) == len(hard) == stats.kept
    for s, h in zip(soft, hard, strict=True):
        assert s["messages"] == h["messages"][:-1] and s["answer"] == h["messages"][-1]["content"]
        assert max(s["teacher_logprobs"], key=s["teacher_logprobs"].get) == s["answer"]
    info = train_stage(run)
    assert info["recipe"] == "kd-forward_kl" and not info["skipped"]
    assert (run.distilled_dir() / "model.safetensors").is_file()


def test_kd_without_label_scores_says_what_to_do(tmp_path: Path, tiny_model: Path) -> None:
    from still.pipeline import StageError, train_stage

    run = open_run(
        write_task(tmp_path, student=f"local:{tiny_model}", train={"recipe": "kd"}),
        tmp_path / "r",
    )
    run.train_file().write_text("{}\n")
    with pytest.raises(StageError, match="carry no label scores.*generation.mode: score"):
        train_stage(run)


def test_a_run_folder_outside_the_run_root_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither a task's name nor --run-dir can place files outside the run root."""
    root = tmp_path / "runs"
    monkeypatch.setenv("STILL_RUNS", str(root))
    task = write_task(tmp_path, student="scripted:first-label")
    for outside in (tmp_path / "elsewhere", root / ".." / "escaped", Path("/tmp/not-a-run")):
        with pytest.raises(StageError, match="outside the run root"):
            open_run(task, outside)
        assert not outside.exists()
    assert open_run(task).dir == root / "toy"  # the default: <run root>/<task name>
    assert open_run(task, root / "mine" / "a").dir.is_dir()


def test_a_run_whose_references_confirm_nothing_still_trains_the_teacher_only_student(
    tmp_path: Path, tiny_model: Path
) -> None:
    """With no usable reference (every teacher answer 'wrong' against it, as with traffic
    that has none), the verified student has nothing to learn from: `still run` says so
    and goes on with the teacher-only one instead of failing the whole run (forced: such a
    teacher fails the check before training)."""
    task = write_task(tmp_path, student=f"local:{tiny_model}", teacher="scripted:const=unknowable",
                      labels=None)  # fmt: skip
    run, cmp = run_all(task, tmp_path / "run", force=True)
    roles = [r.role for r in cmp.results]
    assert "distilled" in roles and "distilled-verified" not in roles
