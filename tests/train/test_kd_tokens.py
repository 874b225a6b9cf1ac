"""Token-level KD (free text) on tiny real models: the student's next-token distributions
move onto a frozen teacher's, on-policy sampling runs, and a teacher with another
tokenizer is refused with a message that says why and what to do."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from conftest import build_tiny_model
from still.pipeline import StageError, capture_role, export_stage, open_run, train_stage
from still.tasks import TrainSpec
from still.train import kd_tokens
from still.train._common import load_student, read_token_rows
from still.train._losses import TokenizerMismatch, answer_logits, divergence
from still.train.kd_tokens import TokenRow, encode, train_kd_tokens
from test_helpers import write_task

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
    rows = [encode(s.tokenizer, t.tokenizer, r, 256) for r in read_token_rows(data)]
    kept = [r for r in rows if r is not None]
    vocab = len(s.tokenizer)
    answers = [r.answer for r in kept]
    with torch.no_grad():
        sl, _ = answer_logits(
            s.model.eval(), [r.student_prompt for r in kept], answers, s.pad, "cpu", vocab
        )
        tl, _ = answer_logits(
            t.model.eval(), [r.teacher_prompt for r in kept], answers, s.pad, "cpu", vocab
        )
    return float(divergence(sl, tl, "forward_kl"))


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
    tiny_model: Path, other_student: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With kd.on_policy 1 every batch's answers are the student's own samples, and the
    teacher scores those; with 0 the student never samples."""
    sampled: list[list[list[int]]] = []
    scored: list[list[list[int]]] = []
    real_sample = kd_tokens._sample

    def spy_sample(student: Any, *args: Any) -> list[list[int]]:
        out = real_sample(student, *args)
        sampled.append(out)
        return out

    def spy_logits(model: Any, prompts: Any, answers: Any, *args: Any) -> Any:
        if not model.training:  # the frozen teacher
            scored.append(answers)
        return answer_logits(model, prompts, answers, *args)

    monkeypatch.setattr(kd_tokens, "_sample", spy_sample)
    monkeypatch.setattr("still.train.kd_tokens.answer_logits", spy_logits)
    data = _rows(tmp_path)

    def spec(on_policy: float) -> TrainSpec:
        return TrainSpec.model_validate({"recipe": "kd", "epochs": 1, "batch_size": 4,
                                         "learning_rate": 5e-3, "lora_r": 4,
                                         "kd": {"divergence": "jsd", "on_policy": on_policy,
                                                "max_new_tokens": 8}})  # fmt: skip

    result = train_kd_tokens(other_student, tiny_model, data, tmp_path / "o", spec(1.0))
    assert result.recipe == "kd-tokens-jsd-on-policy-1"
    assert result.steps == 3 and all(math.isfinite(x) for x in result.losses)
    assert len(sampled) == 3 and scored == sampled  # the teacher scored the samples
    teacher_answers = {tuple(r.answer) for r in _encoded(tiny_model, data)}
    assert any(tuple(a) not in teacher_answers for batch in sampled for a in batch)

    sampled.clear()
    scored.clear()
    train_kd_tokens(other_student, tiny_model, data, tmp_path / "off", spec(0.0))
    assert sampled == [] and len(scored) == 3
    assert all(tuple(a) in teacher_answers for batch in scored for a in batch)


def _encoded(model_dir: Path, data: Path) -> list[TokenRow]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = [encode(tok, tok, r, 256) for r in read_token_rows(data)]
    return [r for r in rows if r is not None]


OTHER_TEMPLATE = (
    "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}### assistant:{% endif %}"
)


def test_the_teacher_reads_its_prompt_in_its_own_chat_template(
    tiny_model: Path, other_student: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A teacher whose chat template differs from the student's (same vocabulary) is shown
    its prompt in its own template, in training as in encode."""
    from transformers import AutoTokenizer

    teacher_dir = tmp_path / "teacher"
    shutil.copytree(tiny_model, teacher_dir)
    t_tok = AutoTokenizer.from_pretrained(teacher_dir)
    t_tok.chat_template = OTHER_TEMPLATE
    t_tok.save_pretrained(teacher_dir)
    t_tok = AutoTokenizer.from_pretrained(teacher_dir)
    s_tok = AutoTokenizer.from_pretrained(other_student)
    data = _rows(tmp_path)
    row = encode(s_tok, t_tok, read_token_rows(data)[0], 256)
    assert row is not None
    assert t_tok.decode(row.teacher_prompt) == (
        "### system: Classify the question.\n### user: Who wrote the play?\n### assistant:"
    )
    assert str(s_tok.decode(row.student_prompt)).startswith("<|im_start|>user\nWho wrote the play?")

    seen: list[str] = []

    def spy_logits(model: Any, prompts: Any, *args: Any) -> Any:
        if not model.training:  # the frozen teacher
            seen.extend(str(t_tok.decode(p)) for p in prompts)
        return answer_logits(model, prompts, *args)

    monkeypatch.setattr("still.train.kd_tokens.answer_logits", spy_logits)
    spec = TrainSpec.model_validate({"recipe": "kd", "epochs": 1, "batch_size": 12, "lora_r": 4})
    train_kd_tokens(other_student, teacher_dir, data, tmp_path / "o", spec)
    assert len(seen) == 12 and all(p.startswith("### system: Classify") for p in seen)


def test_a_base_teacher_reads_the_plain_text_prompt(
    tiny_model: Path, tiny_base_model: Path, tmp_path: Path
) -> None:
    """A teacher without a chat template (a base model) gets the plain-text prompt the
    local provider gives base models, not the student's template."""
    from transformers import AutoTokenizer

    s_tok, t_tok = (AutoTokenizer.from_pretrained(p) for p in (tiny_model, tiny_base_model))
    row = encode(s_tok, t_tok, read_token_rows(_rows(tmp_path))[0], 256)
    assert row is not None
    text = t_tok.decode(row.teacher_prompt, skip_special_tokens=True)
    assert text == "Classify the question.\n\nWho wrote the play?"


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
