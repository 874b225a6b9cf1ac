"""Token-level KD (free text) on tiny real models: the student's next-token distributions
move onto a frozen teacher's, on-policy sampling runs, and a teacher with another
tokenizer is refused with a message that says why and what to do."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import build_tiny_model
from helpers import write_task
from still.pipeline import StageError, capture_role, export_stage, open_run, train_stage
from still.tasks import TrainSpec
from still.train._common import load_student
from still.train.kd import divergence
from still.train.kd_tokens import (
    TokenizerMismatch,
    _answer_logits,
    encode,
    read_token_rows,
    train_kd_tokens,
)

QA = [("Who wrote the play?", "human"), ("Where is the river?", "location"),
      ("How many days?", "number"), ("What does NASA stand for?", "abbreviation")]  # fmt: skip


def _rows(tmp_path: Path) -> Path:
    path = tmp_path / "train-tokens.jsonl"
    with path.open("w") as f:
        for q, a in QA * 3:
            f.write(json.dumps({
                "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                "teacher_messages": [{"role": "system", "content": "Classify the question."},
                                     {"role": "user", "content": q}],
            }) + "\n")  # fmt: skip
    return path


@pytest.fixture(scope="module")
def other_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same tokenizer as tiny_model, different random weights."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-student"), seed=3)


def _gap(student_dir: Path, teacher_dir: Path, data: Path) -> float:
    """Mean forward KL teacher -> student over the answer tokens of every row."""
    spec = TrainSpec(method="full")
    s, t = load_student(student_dir, spec), load_student(teacher_dir, spec)
    rows = [encode(s.tokenizer, r, 256) for r in read_token_rows(data)]
    vocab = len(s.tokenizer)
    with torch.no_grad():
        sl, _ = _answer_logits(
            s.model.eval(),
            [r.student_prompt for r in rows],  # type: ignore[union-attr]
            [r.answer for r in rows],
            s.pad,
            "cpu",
            vocab,
        )  # type: ignore[union-attr]
        tl, _ = _answer_logits(
            t.model.eval(),
            [r.teacher_prompt for r in rows],  # type: ignore[union-attr]
            [r.answer for r in rows],
            s.pad,
            "cpu",
            vocab,
        )  # type: ignore[union-attr]
    return float(divergence(sl, tl, "forward_kl"))  # fmt: skip


def test_token_kd_pulls_the_student_onto_the_teacher(
    tiny_model: Path, other_student: Path, tmp_path: Path
) -> None:
    data = _rows(tmp_path)
    spec = TrainSpec.model_validate(
        {"recipe": "kd", "method": "full", "epochs": 4, "batch_size": 4, "learning_rate": 3e-3}
    )
    out = tmp_path / "kd"
    result = train_kd_tokens(other_student, tiny_model, data, out, spec)
    assert result.recipe == "kd-tokens-forward_kl" and result.steps == 12
    assert math.isfinite(result.last_loss) and result.last_loss < result.first_loss
    before, after = (
        load_file(str(other_student / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert _gap(out, tiny_model, data) < 0.5 * _gap(other_student, tiny_model, data)


def test_on_policy_batches_train_on_the_students_own_samples(
    tiny_model: Path, other_student: Path, tmp_path: Path
) -> None:
    spec = TrainSpec.model_validate({"recipe": "kd", "epochs": 1, "batch_size": 4,
                                     "learning_rate": 5e-3, "lora_r": 4,
                                     "kd": {"divergence": "jsd", "on_policy": 1.0,
                                            "max_new_tokens": 8}})  # fmt: skip
    result = train_kd_tokens(other_student, tiny_model, _rows(tmp_path), tmp_path / "o", spec)
    assert result.recipe == "kd-tokens-jsd-on-policy-1"
    assert result.steps == 3 and all(math.isfinite(x) for x in result.losses)


def test_a_teacher_with_another_tokenizer_is_refused(
    tiny_model: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    odd = build_tiny_model(tmp_path_factory.mktemp("odd-vocab"), vocab_size=330)
    with pytest.raises(TokenizerMismatch, match=r"must share a tokenizer; teacher .* has 330"):
        train_kd_tokens(tiny_model, odd, _rows(tmp_path), tmp_path / "x", TrainSpec(recipe="kd"))
    # the same through the pipeline, on a free-text task, before any training
    task = write_task(tmp_path, student=f"local:{tiny_model}", teacher=f"local:{odd}",
                      labels=None, graders=[{"type": "string_check", "name": "exact"}],
                      generation={"mode": "generate", "batch_size": 4, "max_tokens": 4},
                      train={"recipe": "kd"})  # fmt: skip
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    export_stage(run, keep="parsed")
    assert (run.dir / "train-tokens.jsonl").is_file()
    with pytest.raises(StageError, match="must share a tokenizer.*train.recipe: sft"):
        train_stage(run)
    assert not run.distilled_dir().exists()
