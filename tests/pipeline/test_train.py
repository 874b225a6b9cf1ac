"""The train stage looks its recipe up in still.train.RECIPES and says which command writes
a missing data file, before any model is loaded (scripted models: no torch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from still.pipeline import StageError, capture_role, export_stage, open_run, train_stage
from test_helpers import write_task


def _exported(tmp_path: Path, **task: object):  # type: ignore[no-untyped-def]
    run = open_run(write_task(tmp_path, student="scripted:echo", **task), tmp_path / "run")
    capture_role(run, "teacher", "train")
    export_stage(run, "parsed")
    return run


def test_no_exported_data_names_the_export_to_run(tmp_path: Path) -> None:
    run = open_run(write_task(tmp_path, student="scripted:echo"), tmp_path / "run")
    with pytest.raises(StageError, match=r"train.jsonl does not exist: run `still export` first"):
        train_stage(run)
    with pytest.raises(StageError, match=r"run `still export --keep correct` first"):
        train_stage(run, keep="correct")


def test_dpo_without_pairs_names_export_dpo(tmp_path: Path) -> None:
    run = _exported(tmp_path, train={"recipe": "dpo"})
    with pytest.raises(StageError, match=r"dpo-trl.jsonl does not exist: run `still export-dpo`"):
        train_stage(run)


def test_label_kd_without_scores_says_where_they_come_from(tmp_path: Path) -> None:
    run = _exported(tmp_path, train={"recipe": "kd"})
    run.soft_file().unlink()  # a teacher that gave no label scores
    with pytest.raises(StageError, match=r"train-soft.jsonl does not exist: .*no label scores"):
        train_stage(run)


def test_free_text_kd_from_an_endpoint_teacher_reads_stored_tokens(tmp_path: Path) -> None:
    # no labels and a teacher that is no local model: kd-topk, on train-tokens.jsonl (no
    # error about the teacher: the stored top-k logprobs stand in for it)
    run = _exported(tmp_path, train={"recipe": "kd"}, labels=None)
    run.tokens_file().unlink()
    with pytest.raises(StageError, match=r"train-tokens.jsonl does not exist: run `still export`"):
        train_stage(run)


def test_a_vllm_student_trains_from_its_folder_and_is_benched_on_vllm(
    tmp_path: Path, tiny_model: Path
) -> None:
    # `vllm:<folder>` names the weights transformers trains; the trained student is then
    # answered by the student's engine, not silently by the transformers loop
    task = write_task(tmp_path, student=f"vllm:{tiny_model}", train={"epochs": 1})
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    export_stage(run, "parsed")
    info = train_stage(run)
    assert info["steps"] > 0 and not info["skipped"]
    ref = run.model_for("distilled")
    assert ref == f"vllm:{run.distilled_dir().resolve()}"
    assert (Path(ref.removeprefix("vllm:")) / "config.json").is_file()
