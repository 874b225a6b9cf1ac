"""Supervised fine-tuning of the student, as one recipe readable top to bottom.

setup -> tokenize (loss on the assistant tokens only) -> train -> merge -> save.

LoRA (default) or full fine-tuning. The saved directory is a plain transformers model
(LoRA merged in), so every provider loads it like any other model. The prompt is rendered
with the same functions the local provider uses at inference, so the student is trained
on exactly the format it is later asked in. With `train.packing`, a batch's conversations
are packed into rows (still.train._packing) instead of padded, for the same loss.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from still.curate import read_chat_jsonl
from still.errors import TrainError
from still.models import answer_token_ids, prompt_token_ids, render_prompt
from still.tasks import TrainSpec
from still.train._common import (
    TrainResult,
    load_student,
    train_loop,
)
from still.train._launch import launched
from still.train._packing import IGNORE, collate, pack_width
from still.types import Message


def tokenize(
    tokenizer: Any, conv: list[dict[str, str]], max_length: int
) -> tuple[list[int], list[int]] | None:
    """Token ids and labels of one conversation: only the assistant answer is learned."""
    prompt = render_prompt(tokenizer, [Message.model_validate(m) for m in conv[:-1]])
    p_ids = prompt_token_ids(tokenizer, prompt)
    a_ids = answer_token_ids(tokenizer, prompt, conv[-1]["content"], end_of_turn=True)
    if len(p_ids) + len(a_ids) > max_length:
        return None
    return p_ids + a_ids, [IGNORE] * len(p_ids) + a_ids


def learned(data: Path) -> list[list[dict[str, str]]]:
    """The conversations of chat JSONL `data` to learn from: OpenAI's per-message `weight`
    0 makes an answer context, not something to learn."""
    return [c for c in read_chat_jsonl(data) if c[-1].get("weight", 1) != 0]


def row_lengths(tokenizer: Any, data: Path, spec: TrainSpec) -> list[int]:
    """The tokens of each row of `data` SFT trains on, tokenized as it does (`tokenize`):
    for the memory check, before the model is loaded (still.train._launch)."""
    encoded = (tokenize(tokenizer, c, spec.max_length) for c in learned(data))
    return [len(ids) for ids, _ in filter(None, encoded)]


@launched(row_lengths)
def train_sft(
    base_model: Path,
    data: Path,
    out_dir: Path,
    spec: TrainSpec,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Fine-tune `base_model` on chat JSONL `data` and save the merged model to `out_dir`.

    Args:
        base_model: a transformers model directory (a bundled model's cache, or any).
        data: chat JSONL, the last message of each row being the assistant's answer.
        out_dir: where the merged model, its tokenizer and `train.json` go (atomically).
        spec: method, epochs, learning rate, batch size, LoRA rank...
        on_step: called with (step, total steps, loss) after each optimizer step.

    Raises:
        ValueError: no usable training rows (a run that trains on nothing must not
            report success).
    """
    # -- setup ---------------------------------------------------------------------------
    student = load_student(base_model, spec, packs=True)
    tokenizer, device, pad = student.tokenizer, student.device, student.pad
    width = pack_width(spec)  # None: one row a conversation, padded

    # -- data ----------------------------------------------------------------------------
    convs = learned(data)
    if not convs:
        raise TrainError(
            f"{data}: no training rows to learn from (empty, or every answer weight 0)"
        )
    encoded = [tokenize(tokenizer, c, spec.max_length) for c in convs]
    rows = [e for e in encoded if e is not None]
    if not rows:
        raise TrainError(f"{data}: no training rows fit max_length={spec.max_length}")

    # -- train: cross-entropy on the answer tokens (rows packed with train.packing) -----

    def loss_of(batch: list[tuple[list[int], list[int]]]) -> tuple[Any, int, int]:
        rows = collate([x for x, _ in batch], pad, device, width, labels=[y for _, y in batch])
        out = student.model(**rows.inputs)
        return out.loss, rows.tokens, rows.positions

    return train_loop(
        student,
        rows,
        spec,
        loss_of,
        out_dir,
        on_step,
        recipe="sft",
        data=data,
        weight_of=lambda row: sum(t != IGNORE for t in row[1]),  # its mean is per token
        skipped_too_long=len(encoded) - len(rows),
    )
