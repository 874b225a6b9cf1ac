"""Knowledge distillation token by token, for free-text answers, as one readable recipe.

setup (student + frozen teacher, same tokenizer) -> read rows -> train -> merge -> save.

For each training row the teacher reads ITS prompt in ITS format (its own chat template,
or plain text for a base model) followed by the answer, the student reads ITS prompt
followed by the same answer tokens, and at every answer position the student's
next-token distribution is pulled towards the teacher's over the whole vocabulary
(forward KL, reverse KL or generalized JSD, with a temperature; `divergence` in
still.train._losses). Prompts may differ (a long few-shot teacher prompt, a short student
one): that is prompt distillation on top of knowledge distillation.

On-policy (GKD, Agarwal et al. 2024; TRL's GKDTrainer `lmbda`): with probability
`kd.on_policy` a batch's answers are sampled from the student itself and the teacher
scores those, so the student also learns on the mistakes it actually makes, not only on
the teacher's answers.

Comparing distributions position by position needs one vocabulary: a teacher whose
tokenizer differs is refused with a message that says so, unless `kd.cross_tokenizer`
asks for KD across vocabularies (still.train._cross_tokenizer: ULD or span alignment).
Label tasks need no shared vocabulary: still.train.kd distils over the labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from still.errors import TrainError
from still.models import answer_token_ids, prompt_token_ids, render_prompt
from still.tasks import TrainSpec
from still.train._common import (
    TrainResult,
    load_student,
    read_token_rows,
    train_loop,
)
from still.train._launch import launched
from still.train._losses import TokenizerMismatch, answer_logits, divergence
from still.train._packing import pack_width
from still.types import Message


@dataclass(frozen=True)
class TokenRow:
    student_prompt: list[int]
    teacher_prompt: list[int]
    answer: list[int]  # the answer's tokens, end of turn included


def check_shared_tokenizer(
    teacher: Any, student: Any, teacher_name: str, student_name: str
) -> None:
    """Refuse a pair whose vocabularies differ (ids must mean the same token in both).

    Raises:
        TokenizerMismatch: naming both models, their vocabulary sizes and a differing token.
    """
    tv, sv = teacher.get_vocab(), student.get_vocab()
    if tv == sv:
        return
    differing = next((tok for tok in sorted(set(tv) | set(sv)) if tv.get(tok) != sv.get(tok)), "?")
    raise TokenizerMismatch(
        f"free-text knowledge distillation compares next-token distributions token by token, "
        f"so teacher and student must share a tokenizer; teacher {teacher_name} has "
        f"{len(tv)} tokens and student {student_name} has {len(sv)} (e.g. {differing!r} "
        f"differs). Set train.kd.cross_tokenizer: uld or align (KD across vocabularies), or "
        f"use train.recipe: sft (learns the teacher's answers as text), a teacher of the "
        f"student's family, or a label task (KD over the labels needs no shared vocabulary)."
    )


def encode(
    student_tok: Any, teacher_tok: Any, row: dict[str, Any], max_length: int
) -> TokenRow | None:
    """Token ids of both prompts and of the answer; None when the longer prompt plus the
    answer does not fit `max_length`.

    Each prompt is rendered the way its own model is prompted at inference: with its own
    chat template, or, for a model without one (a base model), as the plain-text prompt
    the local provider gives base models (still.models._chat.render_prompt). The answer is
    tokenized after the student prompt and appended to both, so the positions compared
    hold the same tokens (the vocabularies are the same: check_shared_tokenizer).
    """
    s_prompt = render_prompt(student_tok, [Message.model_validate(m) for m in row["messages"][:-1]])
    t_prompt = render_prompt(
        teacher_tok, [Message.model_validate(m) for m in row["teacher_messages"]]
    )
    s_ids = prompt_token_ids(student_tok, s_prompt)
    t_ids = prompt_token_ids(teacher_tok, t_prompt)
    answer = answer_token_ids(
        student_tok, s_prompt, row["messages"][-1]["content"], end_of_turn=True
    )
    if not answer or max(len(s_ids), len(t_ids)) + len(answer) > max_length:
        return None
    return TokenRow(s_ids, t_ids, answer)


def _sample(student: Any, prompts: list[list[int]], max_new: int, eos: set[int]) -> list[list[int]]:
    """The student's own answers (temperature 1), ending at its end-of-turn token."""
    import torch

    pad = student.pad
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=student.device)
    mask = (ids != pad).long()
    for i, p in enumerate(prompts):  # a prompt may contain the pad id itself
        mask[i, width - len(p) :] = 1
    model = student.unwrapped  # generate is the model's, not the DDP wrapper's
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            pad_token_id=pad,
            synced_gpus=student.sharded,  # sharded weights: every process runs each step
        )
    model.train()
    answers = []
    for row in out[:, width:].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), None)
        answers.append(row[: cut + 1] if cut is not None else row)
    return [a or [next(iter(eos))] for a in answers]


@launched()
def train_kd_tokens(
    base_model: Path,
    teacher_model: Path,
    data: Path,
    out_dir: Path,
    spec: TrainSpec,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Distil a local teacher's next-token distributions into `base_model` on the rows of
    `data` (train-tokens.jsonl); save the merged student to `out_dir`.

    Raises:
        TokenizerMismatch: teacher and student tokenizers differ.
        ValueError: no usable rows.
    """
    if spec.kd.cross_tokenizer:  # vocabularies may differ: ULD or span alignment
        from still.train._cross_tokenizer import train_cross_local

        return train_cross_local(base_model, teacher_model, data, out_dir, spec, on_step)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # -- setup ---------------------------------------------------------------------------
    teacher_tok = AutoTokenizer.from_pretrained(teacher_model)
    student_tok = AutoTokenizer.from_pretrained(base_model)
    check_shared_tokenizer(teacher_tok, student_tok, str(teacher_model), str(base_model))
    student = load_student(base_model, spec, packs=True)
    auto: Any = AutoModelForCausalLM
    teacher = auto.from_pretrained(teacher_model, dtype=torch.float32).to(student.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    vocab = len(student.tokenizer)
    kd = spec.kd
    ends = student.model.generation_config.eos_token_id  # an id, a list of ids or None
    eos = {student.tokenizer.eos_token_id, *(ends if isinstance(ends, list) else [ends])}
    eos.discard(None)
    width = pack_width(spec)  # None: one row a sequence, padded

    # -- data ----------------------------------------------------------------------------
    encoded = [
        encode(student.tokenizer, teacher_tok, r, spec.max_length) for r in read_token_rows(data)
    ]
    rows = [e for e in encoded if e is not None]
    if not rows:
        raise TrainError(f"{data}: no training rows (or none fit max_length={spec.max_length})")

    # -- train: divergence at every answer token -----------------------------------------
    name = f"kd-tokens-{kd.divergence}" + (f"-on-policy-{kd.on_policy:g}" if kd.on_policy else "")

    def loss_of(batch: list[TokenRow]) -> tuple[Any, int]:
        answers = [r.answer for r in batch]
        if kd.on_policy and student.rng.random() < kd.on_policy:
            answers = _sample(student, [r.student_prompt for r in batch], kd.max_new_tokens, eos)
        with torch.no_grad():
            t_logits, _ = answer_logits(teacher, [r.teacher_prompt for r in batch], answers,
                                        student.pad, student.device, vocab, width)  # fmt: skip
        s_logits, targets = answer_logits(student.model, [r.student_prompt for r in batch],
                                          answers, student.pad, student.device, vocab,
                                          width)  # fmt: skip
        loss = divergence(s_logits, t_logits, kd.divergence, kd.temperature, kd.beta)
        if kd.hard_weight:
            loss = loss + kd.hard_weight * torch.nn.functional.cross_entropy(s_logits, targets)
        tokens = sum(len(r.student_prompt) + len(a) for r, a in zip(batch, answers, strict=True))
        return loss, tokens

    return train_loop(
        student,
        rows,
        spec,
        loss_of,
        out_dir,
        on_step,
        recipe=name,
        data=data,
        teacher=teacher_model,
        weight_of=lambda row: len(row.answer),  # a mean per answer token (its own, off-policy)
        skipped_too_long=len(encoded) - len(rows),
    )
