"""Supervised fine-tuning of the student, as one recipe readable top to bottom.

setup -> tokenize (loss on the assistant tokens only) -> train -> merge -> save.

LoRA (default) or full fine-tuning. The saved directory is a plain transformers model
(LoRA merged in), so every provider loads it like any other model. The prompt is rendered
with the same functions the local provider uses at inference, so the student is trained
on exactly the format it is later asked in.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from still.curate import read_chat_jsonl
from still.models._chat import answer_token_ids, prompt_token_ids, render_prompt
from still.tasks import TrainSpec
from still.types import Message

IGNORE = -100


@dataclass
class TrainResult:
    """What a training run did; written as `train.json` beside the model."""

    out_dir: str
    method: str
    examples: int
    steps: int
    epochs: float
    seconds: float
    tokens_per_s: float
    losses: list[float] = field(default_factory=list)
    skipped_too_long: int = 0

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def last_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return sum(tail) / len(tail) if tail else math.nan


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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # -- setup ---------------------------------------------------------------------------
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer: Any = AutoTokenizer.from_pretrained(base_model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    auto: Any = AutoModelForCausalLM  # its stubs mistype from_pretrained's first argument
    model: Any = auto.from_pretrained(base_model, dtype=torch.float32).to(device)
    if spec.method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=spec.lora_r,
                lora_alpha=spec.lora_alpha,
                lora_dropout=0.05,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
    model.train()

    # -- data ----------------------------------------------------------------------------
    # OpenAI's per-message `weight`: an answer weighted 0 is context, not something to learn
    convs = [c for c in read_chat_jsonl(data) if c[-1].get("weight", 1) != 0]
    if not convs:
        raise ValueError(
            f"{data}: no training rows to learn from (empty, or every answer weight 0)"
        )
    encoded = [tokenize(tokenizer, c, spec.max_length) for c in convs]
    rows = [e for e in encoded if e is not None]
    if not rows:
        raise ValueError(f"{data}: no training rows fit max_length={spec.max_length}")
    steps_per_epoch = math.ceil(len(rows) / spec.batch_size)
    total = max(1, round(steps_per_epoch * spec.epochs))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.0)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )

    # -- train ---------------------------------------------------------------------------
    result = TrainResult(
        str(out_dir),
        spec.method,
        len(rows),
        total,
        spec.epochs,
        0.0,
        0.0,
        skipped_too_long=len(encoded) - len(rows),
    )
    order: list[int] = []
    tokens = 0
    start = time.perf_counter()
    for step in range(total):
        if len(order) < spec.batch_size:
            fresh = list(range(len(rows)))
            rng.shuffle(fresh)
            order += fresh
        batch = [rows[i] for i in order[: spec.batch_size]]
        del order[: spec.batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in batch], device=device)
        labels = torch.tensor([y + [IGNORE] * (width - len(y)) for _, y in batch], device=device)
        mask = torch.tensor(
            [[1] * len(x) + [0] * (width - len(x)) for x, _ in batch], device=device
        )
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(mask.sum())
        loss_value = float(loss.detach())
        result.losses.append(loss_value)
        if on_step:
            on_step(step + 1, total, loss_value)
    result.seconds = time.perf_counter() - start
    result.tokens_per_s = tokens / result.seconds if result.seconds else 0.0

    # -- save ----------------------------------------------------------------------------
    if spec.method == "lora":
        model = model.merge_and_unload()
    model.eval()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "train.json").write_text(json.dumps(asdict(result), indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return result
