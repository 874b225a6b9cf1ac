"""Knowledge distillation from stored top-k token logprobs, as one readable recipe.

setup -> map the teacher's tokens onto the student's vocabulary -> train -> merge -> save.

An endpoint teacher (OpenAI, vLLM, `still serve`...) returns, for every token it
generated, its k most likely tokens with their logprobs (k <= 20): `generation.
top_logprobs` stores them with each answer. That is a sparse view of the teacher's
next-token distribution, and it is enough for distillation when the student shares the
teacher's tokenizer: at each answer position the student's distribution restricted to
the teacher's k candidates (and the token it chose, with the logprob stored for it, when
that token is not among them) is pulled towards the teacher's (both renormalised over
those tokens: "top-k KD"), with the divergences and temperature of still.train._losses,
plus `kd.hard_weight` times the cross-entropy on the teacher's own token.

Tokens come back from endpoints as text. They are mapped to the student's ids through its
vocabulary (each id's decoded text); when too many of the teacher's tokens have no such id
the tokenizers differ and the run is refused with a message that says so, unless
`kd.cross_tokenizer` asks for KD across vocabularies (still.train._cross_tokenizer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from still.errors import TrainError
from still.models import prompt_token_ids, render_prompt
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

MAX_UNMAPPED = 0.02
"""Share of teacher tokens (chosen and alternatives) allowed to have no student id."""


@dataclass(frozen=True)
class TopKRow:
    prompt: list[int]
    answer: list[int]  # the teacher's tokens as student ids, end of turn appended
    support: list[list[int]]  # per answer token (not the end of turn): candidate ids
    teacher: list[list[float]]  # ... and the teacher's logprobs for them


def vocabulary_by_text(tokenizer: Any) -> dict[str, int]:
    """Each token's decoded text -> its id (the first id, when two decode alike)."""
    table: dict[str, int] = {}
    for i in range(len(tokenizer)):
        table.setdefault(tokenizer.decode([i]), i)
    return table


def encode(
    tokenizer: Any, table: dict[str, int], row: dict[str, Any], max_length: int
) -> tuple[TopKRow | None, int, int, bool]:
    """A row in student ids: (row or None when too long or without usable targets, teacher
    tokens seen, teacher tokens with no student id, whether it was left out as too long).

    Each answer position's candidates are the teacher's top-k alternatives plus the token
    it chose, with the logprob stored for that token (`teacher_token_logprobs`) when it is
    not among them; a row that needs that logprob and lacks it (exported before it was
    kept) has no usable targets.
    """
    tokens: list[str] = row.get("teacher_tokens") or []
    tops: list[dict[str, float]] = row.get("teacher_top_logprobs") or []
    chosen: list[float] | None = row.get("teacher_token_logprobs")
    answer_text = str(row["messages"][-1]["content"])
    # keep the tokens that spell the kept answer (the provider may have cut a stop string)
    n = next((i for i in range(1, len(tokens) + 1)
              if "".join(tokens[:i]).strip() == answer_text), None)  # fmt: skip
    if n is None:
        return None, 0, 0, False
    seen = missing = 0
    ids, support, teacher = [], [], []
    for i, (tok, alts) in enumerate(zip(tokens[:n], tops[:n], strict=False)):
        seen += 1 + len(alts)
        if tok not in table:
            missing += 1 + len(alts)
            return None, seen, missing, False
        ids.append(table[tok])
        cand = {table[t]: lp for t, lp in alts.items() if t in table}
        missing += len(alts) - len(cand)
        if table[tok] not in cand:
            if chosen is None or i >= len(chosen):
                return None, seen, missing, False
            cand[table[tok]] = float(chosen[i])
        support.append(list(cand))
        teacher.append(list(cand.values()))
    prompt = render_prompt(tokenizer, [Message.model_validate(m) for m in row["messages"][:-1]])
    p_ids = prompt_token_ids(tokenizer, prompt)
    end = tokenizer.convert_tokens_to_ids(tokenizer.eos_token) if tokenizer.eos_token else None
    answer = ids + ([end] if end is not None else [])
    if len(p_ids) + len(answer) > max_length:
        return None, seen, missing, True
    return TopKRow(p_ids, answer, support, teacher), seen, missing, False


def row_lengths(tokenizer: Any, data: Path, spec: TrainSpec) -> list[int] | None:
    """The tokens of each row of `data` top-k KD trains on, tokenized as it does
    (`encode`): for the memory check, before the model is loaded (still.train._launch).
    None across tokenizers (another recipe, still.train._cross_tokenizer)."""
    if spec.kd.cross_tokenizer:
        return None
    table = vocabulary_by_text(tokenizer)
    rows = (encode(tokenizer, table, r, spec.max_length)[0] for r in read_token_rows(data))
    return [len(r.prompt) + len(r.answer) for r in filter(None, rows)]


def _loss(student: Any, batch: Sequence[TopKRow], spec: TrainSpec) -> Any:
    import torch

    vocab = len(student.tokenizer)
    logits, targets = answer_logits(student.model, [r.prompt for r in batch],
                                     [r.answer for r in batch], student.pad,
                                     student.device, vocab, pack_width(spec))  # fmt: skip
    kd = spec.kd
    losses = []
    pos = 0
    for r in batch:
        for j, (ids, lps) in enumerate(zip(r.support, r.teacher, strict=True)):
            s = logits[pos + j, ids].unsqueeze(0)
            t = torch.tensor([lps], device=s.device)
            losses.append(divergence(s, t, kd.divergence, kd.temperature, kd.beta))
        pos += len(r.answer)
    loss = torch.stack(losses).mean()
    if kd.hard_weight:
        loss = loss + kd.hard_weight * torch.nn.functional.cross_entropy(logits, targets)
    return loss


@launched(row_lengths)
def train_kd_topk(
    base_model: Path,
    data: Path,
    out_dir: Path,
    spec: TrainSpec,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Distil the stored top-k logprobs in `data` (train-tokens.jsonl rows with
    teacher_tokens and teacher_top_logprobs) into `base_model`; save to `out_dir`.

    Raises:
        TokenizerMismatch: more than MAX_UNMAPPED of the teacher's tokens have no id in the
            student's vocabulary.
        ValueError: no row carries usable soft targets.
    """
    if spec.kd.cross_tokenizer:  # vocabularies may differ: ULD or span alignment
        from still.train._cross_tokenizer import train_cross_topk

        return train_cross_topk(base_model, data, out_dir, spec, on_step)
    # -- setup ---------------------------------------------------------------------------
    student = load_student(base_model, spec, packs=True)
    table = vocabulary_by_text(student.tokenizer)

    # -- data ----------------------------------------------------------------------------
    raw = read_token_rows(data)
    seen = missing = too_long = 0
    rows: list[TopKRow] = []
    for r in raw:
        row, s, m, long = encode(student.tokenizer, table, r, spec.max_length)
        seen, missing, too_long = seen + s, missing + m, too_long + long
        if row is not None:
            rows.append(row)
    if seen and missing / seen > MAX_UNMAPPED:
        raise TokenizerMismatch(
            f"{missing} of the teacher's {seen} stored tokens ({missing / seen:.0%}) are not "
            f"tokens of the student {base_model}: top-k KD compares distributions token by "
            "token, so teacher and student must share a tokenizer. Set "
            "train.kd.cross_tokenizer: uld or align (KD across vocabularies), or use "
            "train.recipe: sft, or a teacher of the student's family."
        )
    if not rows:
        raise TrainError(
            f"{data}: no row has the teacher's top-k logprobs: set generation.top_logprobs "
            "(1-20) and capture the teacher again (or, if it was, run `still export` again: "
            "older exports lack teacher_token_logprobs), or use train.recipe: sft"
        )

    # -- train: divergence over the teacher's k candidates at every answer token ---------

    def loss_of(batch: list[TopKRow]) -> tuple[Any, int]:
        return _loss(student, batch, spec), sum(len(r.prompt) + len(r.answer) for r in batch)

    return train_loop(
        student, rows, spec, loss_of, out_dir, on_step,
        recipe=f"kd-topk-{spec.kd.divergence}", data=data, skipped_too_long=too_long,
        weight_of=lambda row: len(row.support),  # its divergence is a mean per position
        skipped_no_targets=len(raw) - len(rows) - too_long,
    )  # fmt: skip
