"""Knowledge distillation over the label set, as one recipe readable top to bottom.

setup -> read soft targets -> train (divergence between label distributions) -> merge -> save.

A hard label says only which answer the teacher picked; its scores over every label say
how sure it was and what it would have said instead. For a label task the teacher's
distribution is over the labels, not over a vocabulary, so teacher and student need not
share a tokenizer: the student's distribution is computed the way the local provider
scores labels at inference (the summed log-probability of each label's tokens after the
student prompt), softened by a temperature and pulled towards the teacher's with

- forward KL, KL(teacher || student): mass-covering, the classic (Hinton et al.);
- reverse KL, KL(student || teacher): mode-seeking;
- generalized JSD with weight beta (GKD, Agarwal et al.): between the two;

scaled by temperature², plus `hard_weight` times the cross-entropy on the teacher's label.

Each step runs every prompt once, keeps its KV cache, and runs only the label tokens
again per label (on a copy of that cache), as the scorer does: a six-label task costs
about one forward pass a row, not six.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from still.errors import TrainError
from still.models import answer_token_ids, prompt_token_ids, render_prompt
from still.tasks import TrainSpec
from still.train._common import (
    TrainResult,
    load_student,
    read_jsonl,
    train_loop,
)
from still.train._launch import launched
from still.train._losses import divergence
from still.types import Message


@dataclass(frozen=True)
class SoftRow:
    """One training row: the student prompt's token ids, every label's token ids after it,
    and the teacher's log-scores of the labels (unnormalised is fine: softmax follows)."""

    prompt: list[int]
    labels: list[list[int]]
    teacher: list[float]


def read_soft_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a soft-target file (`train-soft.jsonl`, written by export): `messages`
    (the student prompt), `answer` (the teacher's label), `teacher_logprobs` {label:
    log-score}. A malformed row names file and line."""
    return read_jsonl(
        path,
        lambda row: (
            isinstance(row["messages"], list)
            and isinstance(row["teacher_logprobs"], dict)
            and bool(row["teacher_logprobs"])
        ),
        "an object with messages and non-empty teacher_logprobs",
    )


def encode(tokenizer: Any, row: dict[str, Any], max_length: int) -> SoftRow | None:
    """A soft row in token ids, with the labels in a fixed (sorted) order; None when the
    prompt plus its longest label does not fit `max_length`."""
    prompt = render_prompt(tokenizer, [Message.model_validate(m) for m in row["messages"]])
    p_ids = prompt_token_ids(tokenizer, prompt)
    labels = sorted(row["teacher_logprobs"])
    l_ids = [answer_token_ids(tokenizer, prompt, lab) for lab in labels]
    if any(not ids for ids in l_ids):
        raise TrainError(f"a label of {labels} tokenizes to nothing")
    if len(p_ids) + max(len(x) for x in l_ids) > max_length:
        return None
    return SoftRow(p_ids, l_ids, [float(row["teacher_logprobs"][lab]) for lab in labels])


def row_lengths(tokenizer: Any, data: Path, spec: TrainSpec) -> list[int]:
    """The tokens of each row of `data` label KD trains on, its prompt and longest label,
    tokenized as it does (`encode`): for the memory check, before the model is loaded
    (still.train._launch)."""
    rows = (encode(tokenizer, r, spec.max_length) for r in read_soft_jsonl(data))
    return [len(r.prompt) + max(map(len, r.labels)) for r in filter(None, rows)]


def label_scores(model: Any, batch: Sequence[SoftRow], pad: int, device: str) -> Any:
    """The student's summed log-probability of every label after each prompt, shape
    (rows, labels), with gradients: prompts once (left-padded, cached), then each label's
    remaining tokens on a copy of its prompt's cache."""
    import torch

    width = max(len(r.prompt) for r in batch)
    inp = torch.tensor([[pad] * (width - len(r.prompt)) + r.prompt for r in batch])
    mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in batch])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=inp.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        use_cache=True,
        logits_to_keep=1,  # only the last position's vocabulary logits: the LM head is big
    )
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    k = len(batch[0].labels)
    firsts = torch.tensor([[ids[0] for ids in r.labels] for r in batch], device=device)
    scores = first.gather(1, firsts)  # (rows, labels)
    rest = max(len(ids) for r in batch for ids in r.labels) - 1
    if rest == 0:
        return scores
    rows = [b for b in range(len(batch)) for _ in range(k)]
    cache = out.past_key_values
    cache.batch_select_indices(torch.tensor(rows, device=device))
    tails = [ids[:-1] for r in batch for ids in r.labels]
    targets = [ids[1:] for r in batch for ids in r.labels]
    inp2 = torch.tensor([t + [pad] * (rest - len(t)) for t in tails])
    tmask = torch.tensor([[1] * len(t) + [0] * (rest - len(t)) for t in tails])
    mask2 = torch.cat([mask[rows], tmask], dim=1)
    pos2 = positions[rows, -1:] + 1 + torch.arange(rest)
    out2 = model(
        input_ids=inp2.to(device),
        attention_mask=mask2.to(device),
        position_ids=pos2.to(device),
        past_key_values=cache,
        use_cache=True,
    )
    logp = torch.log_softmax(out2.logits.float(), dim=-1)
    tgt = torch.tensor([t + [0] * (rest - len(t)) for t in targets], device=device)
    keep = torch.tensor([[1.0] * len(t) + [0.0] * (rest - len(t)) for t in targets], device=device)
    extra = (logp.gather(2, tgt.unsqueeze(-1)).squeeze(-1) * keep).sum(-1)
    return scores + extra.view(len(batch), k)


@launched(row_lengths)
def train_kd(
    base_model: Path,
    data: Path,
    out_dir: Path,
    spec: TrainSpec,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Distil the teacher's label distributions in `data` (train-soft.jsonl) into
    `base_model`; save the merged model to `out_dir`. Same config, schedule and save as
    SFT (still.train._common); `spec.kd` picks divergence, temperature, beta and the
    hard-label weight.

    Raises:
        ValueError: no usable rows, or rows whose label sets differ.
    """
    import torch

    # -- setup ---------------------------------------------------------------------------
    student = load_student(base_model, spec)
    kd = spec.kd

    # -- data ----------------------------------------------------------------------------
    raw = read_soft_jsonl(data)
    encoded = [encode(student.tokenizer, r, spec.max_length) for r in raw]
    rows = [e for e in encoded if e is not None]
    if not rows:
        raise TrainError(f"{data}: no training rows (or none fit max_length={spec.max_length})")
    if len({len(r.labels) for r in rows}) != 1:
        raise TrainError(f"{data}: every row needs the same label set")

    # -- train: divergence between label distributions -----------------------------------

    def loss_of(batch: list[SoftRow]) -> tuple[Any, int]:
        s = label_scores(student.model, batch, student.pad, student.device)
        t = torch.tensor([r.teacher for r in batch], device=student.device)
        loss = divergence(s, t, kd.divergence, kd.temperature, kd.beta)
        if kd.hard_weight:
            loss = loss + kd.hard_weight * torch.nn.functional.cross_entropy(s, t.argmax(-1))
        return loss, sum(len(r.prompt) + sum(len(x) - 1 for x in r.labels) for r in batch)

    return train_loop(
        student,
        rows,
        spec,
        loss_of,
        out_dir,
        on_step,
        recipe=f"kd-{kd.divergence}",
        data=data,
        skipped_too_long=len(encoded) - len(rows),
    )
