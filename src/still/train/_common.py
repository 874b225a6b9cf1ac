"""What every training recipe shares: one config (TrainSpec), one way to load the student
(LoRA or full), one schedule, one result record and one atomic save.

Each recipe (sft.py, kd.py, ...) keeps only what differs, its data and its loss, so
comparing recipes compares losses, not accidental differences in setup.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from still.tasks import TrainSpec

T = TypeVar("T")


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
    recipe: str = "sft"
    tokens: int = 0  # tokens through the forward pass (prompt + answer), all steps
    skipped_no_targets: int = 0  # rows without usable soft targets (top-k KD)

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def last_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return sum(tail) / len(tail) if tail else math.nan


@dataclass
class Student:
    """The model being trained, its tokenizer, device and padding id."""

    model: Any
    tokenizer: Any
    device: str
    pad: int
    lora: bool


def read_jsonl(path: Path, valid: Callable[[Any], bool], expected: str) -> list[Any]:
    """The rows of a recipe's JSONL data file, each checked by `valid` (which may raise
    KeyError, TypeError or IndexError on a malformed row); the first bad row raises
    ValueError naming file and line and what was `expected` there."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ok = valid(row)
        except (ValueError, KeyError, TypeError, IndexError):
            ok = False
        if not ok:
            raise ValueError(f"{path}:{n}: expected {expected}")
        rows.append(row)
    return rows


def read_token_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of `train-tokens.jsonl`: `messages` (student prompt + the answer, last) and
    `teacher_messages` (the teacher's prompt). A malformed row names file and line."""
    return read_jsonl(
        path,
        lambda row: (
            isinstance(row["messages"], list)
            and row["messages"][-1]["role"] == "assistant"
            and isinstance(row["teacher_messages"], list)
        ),
        "messages ending in the assistant's answer, and teacher_messages",
    )


def load_student(base_model: Path, spec: TrainSpec) -> Student:
    """The base model in float32, wrapped in LoRA adapters on every linear layer when
    `spec.method == "lora"`, in training mode, seeded."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(spec.seed)
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
    return Student(model, tokenizer, device, pad, spec.method == "lora")


def total_steps(rows: int, spec: TrainSpec) -> int:
    return max(1, round(math.ceil(rows / spec.batch_size) * spec.epochs))


def optimizer(student: Student, spec: TrainSpec, total: int) -> tuple[Any, Any, list[Any]]:
    """AdamW over the trainable parameters with linear warm-up (10%) and linear decay."""
    import torch

    params = [p for p in student.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.0)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    return opt, sched, params


def batches(rows: Sequence[T], spec: TrainSpec, total: int) -> Iterator[list[T]]:
    """`total` batches of `spec.batch_size` rows: epochs of a seeded shuffle, back to back."""
    rng = random.Random(spec.seed)
    order: list[int] = []
    for _ in range(total):
        if len(order) < spec.batch_size:
            fresh = list(range(len(rows)))
            rng.shuffle(fresh)
            order += fresh
        yield [rows[i] for i in order[: spec.batch_size]]
        del order[: spec.batch_size]


def step(opt: Any, sched: Any, params: list[Any], loss: Any) -> float:
    """Backward, clip to norm 1, update; returns the loss as a float."""
    import torch

    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def save(student: Student, out_dir: Path, result: TrainResult) -> None:
    """Merge LoRA into the weights and save model, tokenizer and train.json, atomically
    (a folder appears complete or not at all)."""
    model = student.model.merge_and_unload() if student.lora else student.model
    model.eval()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    student.tokenizer.save_pretrained(tmp)
    (tmp / "train.json").write_text(json.dumps(asdict(result), indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def train_loop(
    student: Student,
    rows: Sequence[T],
    spec: TrainSpec,
    loss_of: Callable[[list[T]], tuple[Any, int]],
    out_dir: Path,
    on_step: Callable[[int, int, float], None] | None = None,
    *,
    recipe: str,
    skipped_too_long: int = 0,
    skipped_no_targets: int = 0,
) -> TrainResult:
    """The loop every recipe shares: `spec.epochs` over `rows` in batches, each batch's
    loss and token count from the recipe's `loss_of`, an optimizer step, progress through
    `on_step(step, total, loss)`; then the merged model saved to `out_dir` with its
    TrainResult (recipe name, rows left out and why, losses, throughput).

    Raises:
        ValueError: the loss became NaN or infinite (nothing is saved).
    """
    total = total_steps(len(rows), spec)
    result = TrainResult(
        str(out_dir), spec.method, len(rows), total, spec.epochs, 0.0, 0.0,
        skipped_too_long=skipped_too_long, recipe=recipe,
        skipped_no_targets=skipped_no_targets,
    )  # fmt: skip
    opt, sched, params = optimizer(student, spec, total)
    start = time.perf_counter()
    for n, batch in enumerate(batches(rows, spec, total), 1):
        loss, tokens = loss_of(batch)
        value = step(opt, sched, params, loss)
        if not math.isfinite(value):  # a broken model must not replace a good one
            raise ValueError(
                f"{recipe}: the loss became {value} at step {n} of {total}, so nothing was "
                "saved; lower the learning rate (train.learning_rate, train.dpo.learning_rate)"
            )
        result.tokens += tokens
        result.losses.append(value)
        if on_step:
            on_step(n, total, value)
    result.seconds = time.perf_counter() - start
    result.tokens_per_s = result.tokens / result.seconds if result.seconds else 0.0
    save(student, out_dir, result)
    return result
