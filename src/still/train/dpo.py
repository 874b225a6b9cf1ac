"""Direct preference optimisation (DPO) of the student, as one recipe readable top to bottom.

setup (LoRA or full) -> read pairs -> reference log-probabilities -> train -> merge -> save.

DPO (Rafailov et al. 2023) raises the likelihood of the chosen answer over the rejected
one, relative to the model it starts from (the reference), with `beta` limiting how far
it may drift:

    loss = -log sigmoid(beta * ((log p(chosen) - log ref(chosen))
                                - (log p(rejected) - log ref(rejected))))

with each log-probability summed over the answer's tokens. The reference's are computed
once, before the first step, from the model as loaded: no second copy of the weights is
held in memory, whether LoRA or full fine-tuning trains it.

Setup, schedule, progress, `max_length` and the atomic save are the ones every recipe
shares (still.train._common), and prompts are rendered with the functions the local
provider uses at inference; only the learning rate differs (`train.dpo.learning_rate`:
DPO wants far smaller steps than SFT). The pairs come from `still.preference` in TRL's
conversational format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from still.errors import TrainError
from still.models import answer_token_ids, prompt_token_ids, render_prompt
from still.tasks import TrainSpec
from still.train._common import Student, TrainResult, load_student, train_loop
from still.train._launch import launched
from still.train._losses import answer_logprobs
from still.types import Message


@dataclass(frozen=True)
class PairRow:
    """One preference pair in token ids, with the reference model's log-probabilities of
    both answers (filled in before training)."""

    prompt: list[int]
    chosen: list[int]  # the answer's tokens, end of turn included
    rejected: list[int]
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """TRL conversational preference rows; a malformed line raises ValueError naming file
    and line (a trainer fed a bad row fails much later, with a far less clear error)."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            for key in ("prompt", "chosen", "rejected"):
                if not isinstance(row[key], list) or not row[key]:
                    raise ValueError(f"{key!r} must be a non-empty list of messages")
            for key in ("chosen", "rejected"):
                if len(row[key]) != 1 or row[key][0]["role"] != "assistant":
                    raise ValueError(f"{key!r} must be one message, the assistant's answer")
                if not isinstance(row[key][0]["content"], str):
                    raise ValueError(f"{key!r} must hold the answer's text")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TrainError(f"{path}:{n}: not a TRL preference row ({exc})") from exc
        rows.append({k: row[k] for k in ("prompt", "chosen", "rejected")})
    return rows


def encode(tokenizer: Any, row: dict[str, Any], max_length: int) -> PairRow | None:
    """A pair in token ids (both answers tokenized after the rendered prompt); None when
    the prompt plus its longer answer does not fit `max_length`."""
    prompt = render_prompt(tokenizer, [Message.model_validate(m) for m in row["prompt"]])
    p_ids = prompt_token_ids(tokenizer, prompt)
    chosen, rejected = (
        answer_token_ids(tokenizer, prompt, row[key][0]["content"], end_of_turn=True)
        for key in ("chosen", "rejected")
    )
    if len(p_ids) + max(len(chosen), len(rejected)) > max_length:
        return None
    return PairRow(p_ids, chosen, rejected)


def row_lengths(tokenizer: Any, data: Path, spec: TrainSpec) -> list[int]:
    """The tokens of the longer sequence of each pair of `data` DPO trains on, tokenized
    as it does (`encode`): for the memory check, before the model is loaded
    (still.train._launch)."""
    pairs = (encode(tokenizer, r, spec.max_length) for r in read_pairs(data))
    return [len(p.prompt) + max(len(p.chosen), len(p.rejected)) for p in filter(None, pairs)]


def _logprobs(student: Student, batch: Sequence[PairRow]) -> Any:
    """The model's summed log-probabilities of the chosen answers, then the rejected ones
    (shape (2 * rows,)), in one forward pass."""
    return answer_logprobs(
        student.model,
        [r.prompt for r in batch] * 2,
        [r.chosen for r in batch] + [r.rejected for r in batch],
        student.pad,
        student.device,
        len(student.tokenizer),
    )


def with_reference(student: Student, rows: Sequence[PairRow], batch_size: int) -> list[PairRow]:
    """`rows` with the log-probabilities the model gives their answers now, before any
    step: DPO's reference (computed in eval mode, without gradients)."""
    import torch

    out: list[PairRow] = []
    student.model.eval()
    with torch.no_grad(), student.autocast():  # the precision training runs in
        for i in range(0, len(rows), batch_size):
            batch = rows[i : i + batch_size]
            lp = _logprobs(student, batch).tolist()
            out += [
                PairRow(r.prompt, r.chosen, r.rejected, lp[j], lp[len(batch) + j])
                for j, r in enumerate(batch)
            ]
    student.model.train()
    return out


@launched(row_lengths)
def train_dpo(
    base_model: Path,
    data: Path,
    out_dir: Path,
    spec: TrainSpec,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """DPO-train `base_model` on the preference pairs in `data`; save the merged model.

    Args:
        base_model: a transformers model directory (usually the SFT student, since DPO
            refines a model that already answers in the right format).
        data: JSONL in TRL's conversational preference format (`still.preference`).
        out_dir: where the merged model, its tokenizer and `train.json` go (atomically).
        spec: method (LoRA or full), epochs, batch size, LoRA rank, max_length and seed,
            as for every recipe; `spec.dpo` gives beta and the learning rate.
        on_step: called with (step, total steps, loss) after each optimizer step.

    Raises:
        ValueError: no pairs in `data`, or none fits `max_length` (a run that trains on
            nothing must not succeed); the loss became NaN or infinite (nothing is saved).
    """
    import torch

    # -- setup ---------------------------------------------------------------------------
    raw = read_pairs(data)
    if not raw:
        raise TrainError(f"{data}: no preference pairs to train on")
    student = load_student(base_model, spec)
    beta = spec.dpo.beta

    # -- data: token ids, then the reference's log-probabilities -------------------------
    encoded = [encode(student.tokenizer, r, spec.max_length) for r in raw]
    fitting = [e for e in encoded if e is not None]
    if not fitting:
        raise TrainError(f"{data}: no preference pair fits max_length={spec.max_length}")
    rows = with_reference(student, fitting, spec.batch_size)

    # -- train: the chosen answer's gain over the rejected one's, relative to the start --

    def loss_of(batch: list[PairRow]) -> tuple[Any, int]:
        lp = _logprobs(student, batch)
        ref = torch.tensor(
            [r.ref_chosen for r in batch] + [r.ref_rejected for r in batch], device=lp.device
        )
        gain = lp - ref
        margin = gain[: len(batch)] - gain[len(batch) :]
        loss = -torch.nn.functional.logsigmoid(beta * margin).mean()
        return loss, sum(2 * len(r.prompt) + len(r.chosen) + len(r.rejected) for r in batch)

    return train_loop(
        student,
        rows,
        spec.model_copy(update={"learning_rate": spec.dpo.learning_rate}),
        loss_of,
        out_dir,
        on_step,
        recipe="dpo",
        data=data,
        skipped_too_long=len(encoded) - len(rows),
    )
