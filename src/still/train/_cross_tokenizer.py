"""Knowledge distillation between a teacher and a student that tokenize differently
(`train.kd.cross_tokenizer`).

Token-level KD (kd_tokens.py, kd_topk.py) compares the two next-token distributions id by
id, which needs one vocabulary; most real pairs (an API teacher and an open student, the
demo's Gemma and SmolLM2) have two. Two ways around it, both added to the student's
cross-entropy on the teacher's text (tokenized the student's way):

- `uld`, universal logit distillation (Boizard et al. 2024): at the i-th answer token of
  each (the shorter answer sets how many), sort both probability vectors in decreasing
  order, pad the shorter vocabulary with zeros, and take the L1 distance. It asks the
  student for the teacher's confidence profile, not for any token's identity, so no
  vocabulary is shared. An endpoint teacher's stored top-k is a partial sorted vector:
  the student's is cut to the teacher's k (the rest of the teacher's mass is unknown).
- `align`: the answer's text is cut into tokens twice; where a teacher token and a student
  token cover exactly the same characters, both models predict the same text from the same
  text, so their distributions are comparable through the tokens' strings: the teacher's
  top tokens (ALIGN_TOP_K from a local teacher; the stored ones from an endpoint) whose
  string is one student token are mapped onto it, renormalised, and compared with the
  student's distribution over those ids (`kd.divergence`, as top-k KD does). Elsewhere
  (and where no candidate maps) ULD against the teacher token under the student token's
  first character.

The same loss is trained from a local teacher (its full distribution: the whole vector for
ULD, its top ALIGN_TOP_K for align) and from an endpoint's stored top-k, so the two sources
differ only in what the teacher reveals. ULD uses probabilities at temperature 1;
`kd.temperature` applies to align's divergence.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from still.errors import TrainError
from still.models import answer_token_ids, prompt_token_ids, render_prompt
from still.tasks import TrainSpec
from still.train._common import TrainResult, load_student, read_token_rows, train_loop
from still.train._losses import answer_logits, divergence
from still.train.kd_topk import vocabulary_by_text
from still.types import Message

ALIGN_TOP_K = 20
"""A local teacher's candidates at an aligned token: as many as endpoints give at most."""


@dataclass(frozen=True)
class Token:
    """An answer token's characters in the answer text: [start, end); `exact` when both
    ends are known (a token ending inside a multi-byte character has no exact end)."""

    start: int
    end: int
    exact: bool = True

    @property
    def span(self) -> tuple[int, int] | None:
        return (self.start, self.end) if self.exact else None


@dataclass(frozen=True)
class Pair:
    """A student answer position distilled from a teacher position.

    Attributes:
        student: index into the student's answer tokens.
        teacher: index into the teacher's answer positions.
        aligned: the two tokens cover the same text (align compares their strings).
        lead: (teacher's, student's) text before the answer where this pair starts it
            (a base model's prompt ends in a word, so its answer starts with a space):
            swapped in the teacher's candidate strings before they are looked up.
    """

    student: int
    teacher: int
    aligned: bool = False
    lead: tuple[str, str] = ("", "")


@dataclass(frozen=True)
class CrossRow:
    """One training row. `teacher_prompt`/`teacher_answer`: a local teacher's ids (empty for
    an endpoint); `top`: an endpoint's stored candidates (string -> logprob) per teacher
    position (empty for a local teacher)."""

    student_prompt: list[int]
    answer: list[int]  # the teacher's text in student ids, end of turn included
    pairs: list[Pair]
    teacher_prompt: list[int]
    teacher_answer: list[int]
    top: list[dict[str, float]]


def uld(student_logits: Any, teacher_probs: Any, partial: bool = False) -> Any:
    """Universal logit distillation distance per row: the L1 distance between the sorted
    probability vectors, shape (rows,).

    Args:
        student_logits: (rows, student vocabulary) logits.
        teacher_probs: (rows, width) teacher probabilities in any order: the whole
            distribution (width: the teacher's vocabulary), or with `partial` its known top
            entries, zero-padded (an endpoint's top-k): the student's vector is then cut to
            each row's known entries.
    """
    import torch

    s = torch.softmax(student_logits.float(), dim=-1).sort(dim=-1, descending=True).values
    t = teacher_probs.float().sort(dim=-1, descending=True).values
    if partial:
        width = t.shape[-1]
        if s.shape[-1] < width:
            s = torch.nn.functional.pad(s, (0, width - s.shape[-1]))
        return ((t - s[:, :width]).abs() * (t > 0)).sum(-1)
    m = min(s.shape[-1], t.shape[-1])  # the longer vector's tail meets the shorter's zeros
    return (t[:, :m] - s[:, :m]).abs().sum(-1) + t[:, m:].sum(-1) + s[:, m:].sum(-1)


def decoded_tokens(tokenizer: Any, ids: Sequence[int], lead: int) -> list[Token]:
    """Each token's characters in the answer, from decoding growing prefixes of `ids` (any
    tokenizer, whatever its decoder does with spaces); `lead` characters before the answer
    (its continuation's leading space) are cut off, so a first token " Paris" starts at 0."""
    ends: list[int | None] = []
    for j in range(len(ids)):
        text = str(tokenizer.decode(list(ids[: j + 1])))
        ends.append(None if text.endswith("\ufffd") else len(text))
    return _tokens(ends, lead)


def text_tokens(pieces: Sequence[str], lead: int) -> list[Token]:
    """Each token's characters in the answer, from the tokens' strings (an endpoint's)."""
    ends: list[int | None] = []
    total = 0
    for piece in pieces:
        total += len(piece)
        ends.append(total)
    return _tokens(ends, lead)


def _tokens(ends: Sequence[int | None], lead: int) -> list[Token]:
    tokens, start, exact_start = [], 0, True
    for end in ends:
        stop = start if end is None else end
        tokens.append(Token(max(0, start - lead), max(0, stop - lead),
                            exact_start and end is not None))  # fmt: skip
        start, exact_start = stop, end is not None
    return tokens


def pair_positions(
    teacher: Sequence[Token],
    student: Sequence[Token],
    mode: str,
    lead: tuple[str, str] = ("", ""),
    ends: bool = False,
) -> list[Pair]:
    """Which teacher position each student answer position is distilled from.

    uld: the i-th of each, as far as the shorter goes (`ends`: both answers end with an
    end-of-turn token, counted as a position). align: tokens with the same exact span (and
    the two ends) are aligned; any other student token is paired, for ULD, with the teacher
    token under its first character.
    """
    n_t, n_s = len(teacher) + ends, len(student) + ends
    if mode == "uld":
        return [Pair(j, j, lead=lead if j == 0 else ("", "")) for j in range(min(n_t, n_s))]
    if mode != "align":
        raise ValueError(f"unknown cross_tokenizer {mode!r}: uld or align")
    by_span = {t.span: i for i, t in enumerate(teacher) if t.span is not None}
    starts = [t.start for t in teacher]
    pairs = []
    for j, tok in enumerate(student):
        first = lead if tok.start == 0 else ("", "")
        if tok.span is not None and tok.span in by_span:
            pairs.append(Pair(j, by_span[tok.span], True, first))
        elif teacher:
            pairs.append(Pair(j, max(0, bisect.bisect_right(starts, tok.start) - 1), lead=first))
    if ends:
        pairs.append(Pair(len(student), len(teacher), True))
    return pairs


def _split_end(tokenizer: Any, ids: list[int]) -> list[int]:
    """The answer's text tokens (`answer_token_ids` appends the end-of-turn token)."""
    eos = tokenizer.eos_token_id
    return ids[:-1] if ids and eos is not None and ids[-1] == eos else ids


def _lead(tokenizer: Any, text_ids: list[int], answer: str) -> str:
    """What the decoded answer tokens hold before the answer itself (a leading space)."""
    decoded = str(tokenizer.decode(text_ids))
    at = decoded.find(answer) if answer else len(decoded)
    return decoded[:at] if at > 0 else ""


def encode_local(
    student_tok: Any, teacher_tok: Any, row: dict[str, Any], max_length: int, mode: str
) -> CrossRow | None:
    """A train-tokens.jsonl row for a local teacher: both prompts, each rendered the way its
    own model is prompted, the answer tokenized by each, and the positions paired; None when
    either side's prompt plus answer does not fit `max_length`."""
    answer_text = str(row["messages"][-1]["content"])
    s_prompt = render_prompt(student_tok, [Message.model_validate(m) for m in row["messages"][:-1]])
    t_prompt = render_prompt(
        teacher_tok, [Message.model_validate(m) for m in row["teacher_messages"]]
    )
    s_ids, t_ids = prompt_token_ids(student_tok, s_prompt), prompt_token_ids(teacher_tok, t_prompt)
    s_ans = answer_token_ids(student_tok, s_prompt, answer_text, end_of_turn=True)
    t_ans = answer_token_ids(teacher_tok, t_prompt, answer_text, end_of_turn=True)
    if not s_ans or not t_ans:
        return None
    if max(len(s_ids) + len(s_ans), len(t_ids) + len(t_ans)) > max_length:
        return None
    s_text, t_text = _split_end(student_tok, s_ans), _split_end(teacher_tok, t_ans)
    s_lead = _lead(student_tok, s_text, answer_text)
    t_lead = _lead(teacher_tok, t_text, answer_text)
    ends = len(s_text) < len(s_ans) and len(t_text) < len(t_ans)
    pairs = pair_positions(
        decoded_tokens(teacher_tok, t_text, len(t_lead)),
        decoded_tokens(student_tok, s_text, len(s_lead)),
        mode,
        (t_lead, s_lead),
        ends,
    )
    return CrossRow(s_ids, s_ans, pairs, t_ids, t_ans, [])


def encode_endpoint(
    student_tok: Any, row: dict[str, Any], max_length: int, mode: str
) -> tuple[CrossRow | None, bool]:
    """A train-tokens.jsonl row with an endpoint's stored tokens and top-k logprobs: (the
    row, or None when it has no usable targets or is too long; whether it was too long).

    The teacher's positions are its tokens that spell the kept answer, each with its top-k
    candidates plus the token it chose (with the logprob stored for it, when not among
    them), as top-k KD reads them; the student's answer is the text in its own tokens."""
    tokens: list[str] = row.get("teacher_tokens") or []
    tops: list[dict[str, float]] = row.get("teacher_top_logprobs") or []
    chosen: list[float] | None = row.get("teacher_token_logprobs")
    answer_text = str(row["messages"][-1]["content"])
    n = next((i for i in range(1, len(tokens) + 1)
              if "".join(tokens[:i]).strip() == answer_text), None)  # fmt: skip
    if n is None or len(tops) < n:
        return None, False
    top = []
    for i, (tok, alts) in enumerate(zip(tokens[:n], tops[:n], strict=True)):
        cand = {str(t): float(lp) for t, lp in alts.items()}
        if tok not in cand:
            if chosen is None or i >= len(chosen):
                return None, False
            cand[tok] = float(chosen[i])
        top.append(cand)
    prompt = render_prompt(student_tok, [Message.model_validate(m) for m in row["messages"][:-1]])
    p_ids = prompt_token_ids(student_tok, prompt)
    s_ans = answer_token_ids(student_tok, prompt, answer_text, end_of_turn=True)
    if len(p_ids) + len(s_ans) > max_length:
        return None, True
    s_text = _split_end(student_tok, s_ans)
    s_lead = _lead(student_tok, s_text, answer_text)
    joined = "".join(tokens[:n])
    t_lead = joined[: len(joined) - len(joined.lstrip())]
    pairs = pair_positions(
        text_tokens(tokens[:n], len(t_lead)),
        decoded_tokens(student_tok, s_text, len(s_lead)),
        mode,
        (t_lead, s_lead),
    )
    return CrossRow(p_ids, s_ans, pairs, [], [], top), False


@dataclass
class StudentVocabulary:
    """Token strings -> the student's ids, for mapping the teacher's candidates: each id's
    decoded text, and the teacher's end-of-turn strings -> the student's end of turn."""

    table: dict[str, int]
    teacher_ends: set[str]
    end: int | None

    def candidates(
        self, cand: dict[str, float], lead: tuple[str, str]
    ) -> tuple[list[int], list[float]]:
        """The candidates whose string is one student token: (student ids, logprobs); two
        strings on one id keep the likelier."""
        got: dict[int, float] = {}
        t_lead, s_lead = lead
        for text, lp in cand.items():
            if text in self.teacher_ends:
                sid = self.end
            else:
                if t_lead != s_lead and text.startswith(t_lead):
                    text = s_lead + text[len(t_lead) :]
                sid = self.table.get(text)
            if sid is not None and lp > got.get(sid, -float("inf")):
                got[sid] = lp
        return list(got), list(got.values())


def cross_loss(
    student_logits: Any,
    targets: Any,
    rows: Sequence[CrossRow],
    teacher: Sequence[tuple[Any, Callable[[int], dict[str, float]]]],
    vocab: StudentVocabulary,
    spec: TrainSpec,
    partial: bool,
) -> Any:
    """The cross-tokenizer loss of a batch: cross-entropy on the student's answer tokens
    plus `kd.cross_weight` times the mean, over paired positions, of align's divergence
    (aligned positions with a mapped candidate) or ULD (the others).

    Args:
        student_logits: (answer tokens of all rows, student vocabulary), rows in order.
        targets: the student's answer ids, flattened the same way.
        rows: the batch.
        teacher: per row, (its teacher probabilities per position: (positions, width),
            whole or `partial`), and a function giving a position's candidates as strings.
        vocab: the student's strings.
        spec: the training config (kd.divergence, temperature, beta, cross_weight).
        partial: the teacher's probabilities are top-k only (an endpoint's).
    """
    import torch

    kd = spec.kd
    terms = []
    uld_rows: list[int] = []
    uld_teacher = []
    offset = 0
    for row, (probs, candidates) in zip(rows, teacher, strict=True):
        for pair in row.pairs:
            at = offset + pair.student
            if pair.aligned and kd.cross_tokenizer == "align":
                ids, lps = vocab.candidates(candidates(pair.teacher), pair.lead)
                if ids:
                    s = student_logits[at, ids].unsqueeze(0)
                    t = torch.tensor([lps], device=s.device)
                    terms.append(divergence(s, t, kd.divergence, kd.temperature, kd.beta))
                    continue
            uld_rows.append(at)
            uld_teacher.append(probs[pair.teacher])
        offset += len(row.answer)
    if uld_rows:
        width = max(t.shape[-1] for t in uld_teacher)
        stacked = torch.stack([torch.nn.functional.pad(t, (0, width - t.shape[-1]))
                               for t in uld_teacher])  # fmt: skip
        terms.extend(uld(student_logits[uld_rows], stacked, partial).unbind())
    loss = torch.nn.functional.cross_entropy(student_logits, targets)
    if terms:
        loss = loss + kd.cross_weight * torch.stack(terms).mean()
    return loss


def _end_strings(tokenizer: Any, model: Any = None) -> set[str]:
    ids = {tokenizer.eos_token_id}
    ends = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(ends if isinstance(ends, list) else [ends])
    return {str(tokenizer.decode([i])) for i in ids if i is not None}


def train_cross_local(
    base_model: Path,
    teacher_model: Path,
    data: Path,
    out_dir: Path,
    spec: TrainSpec,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Distil a local teacher with another tokenizer into `base_model` on the rows of `data`
    (train-tokens.jsonl), with `spec.kd.cross_tokenizer`; save the merged student to
    `out_dir`. kd_tokens.train_kd_tokens calls this when cross_tokenizer is set.

    Raises:
        TrainError: no usable rows.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # -- setup ---------------------------------------------------------------------------
    mode = str(spec.kd.cross_tokenizer)
    teacher_tok = AutoTokenizer.from_pretrained(teacher_model)
    student = load_student(base_model, spec)  # memory checked (teacher too) by train_kd_tokens
    auto: Any = AutoModelForCausalLM
    teacher = auto.from_pretrained(teacher_model, dtype=torch.float32).to(student.device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    s_vocab, t_vocab = len(student.tokenizer), len(teacher_tok)
    t_pad = teacher_tok.pad_token_id if teacher_tok.pad_token_id is not None else 0
    vocab = StudentVocabulary(
        vocabulary_by_text(student.tokenizer) if mode == "align" else {},
        _end_strings(teacher_tok, teacher),
        student.tokenizer.eos_token_id,
    )
    strings: dict[int, str] = {}  # the teacher's ids decoded, as they come up

    def text_of(i: int) -> str:
        if i not in strings:
            strings[i] = str(teacher_tok.decode([i]))
        return strings[i]

    # -- data ----------------------------------------------------------------------------
    encoded = [encode_local(student.tokenizer, teacher_tok, r, spec.max_length, mode)
               for r in read_token_rows(data)]  # fmt: skip
    rows = [e for e in encoded if e is not None]
    if not rows:
        raise TrainError(f"{data}: no training rows (or none fit max_length={spec.max_length})")

    # -- train: cross-entropy + ULD / aligned divergence ---------------------------------
    def loss_of(batch: list[CrossRow]) -> tuple[Any, int]:
        with torch.no_grad():
            t_logits, _ = answer_logits(teacher, [r.teacher_prompt for r in batch],
                                        [r.teacher_answer for r in batch], t_pad,
                                        student.device, t_vocab)  # fmt: skip
            t_logprobs = torch.log_softmax(t_logits, dim=-1)
        views = []
        offset = 0
        for r in batch:
            own = t_logprobs[offset : offset + len(r.teacher_answer)]
            offset += len(r.teacher_answer)
            views.append((own.exp(), _top_of(own, text_of)))
        s_logits, targets = answer_logits(student.model, [r.student_prompt for r in batch],
                                          [r.answer for r in batch], student.pad,
                                          student.device, s_vocab)  # fmt: skip
        loss = cross_loss(s_logits, targets, batch, views, vocab, spec, partial=False)
        tokens = sum(len(r.student_prompt) + len(r.answer) for r in batch)
        return loss, tokens

    return train_loop(
        student, rows, spec, loss_of, out_dir, on_step,
        recipe=f"kd-tokens-{mode}", data=data, teacher=teacher_model,
        weight_of=lambda row: len(row.answer), skipped_too_long=len(encoded) - len(rows),
    )  # fmt: skip


def _top_of(logprobs: Any, text_of: Callable[[int], str]) -> Callable[[int], dict[str, float]]:
    """A local teacher's candidates at a position: its ALIGN_TOP_K likeliest tokens."""

    def top(i: int) -> dict[str, float]:
        values, ids = logprobs[i].topk(min(ALIGN_TOP_K, logprobs.shape[-1]))
        out: dict[str, float] = {}
        for lp, tid in zip(values.tolist(), ids.tolist(), strict=True):
            out.setdefault(text_of(tid), lp)
        return out

    return top


def train_cross_topk(
    base_model: Path,
    data: Path,
    out_dir: Path,
    spec: TrainSpec,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Distil an endpoint teacher's stored top-k logprobs (train-tokens.jsonl rows with
    teacher_tokens and teacher_top_logprobs) into a student with another tokenizer, with
    `spec.kd.cross_tokenizer`; save to `out_dir`. kd_topk.train_kd_topk calls this when
    cross_tokenizer is set.

    Raises:
        TrainError: no row carries usable soft targets.
    """
    import math

    import torch

    # -- setup ---------------------------------------------------------------------------
    mode = str(spec.kd.cross_tokenizer)
    student = load_student(base_model, spec)
    vocab = StudentVocabulary(
        vocabulary_by_text(student.tokenizer) if mode == "align" else {},
        set(),  # an endpoint's stored tokens hold no end of turn
        student.tokenizer.eos_token_id,
    )

    # -- data ----------------------------------------------------------------------------
    raw = read_token_rows(data)
    rows: list[CrossRow] = []
    too_long = 0
    for r in raw:
        row, long = encode_endpoint(student.tokenizer, r, spec.max_length, mode)
        too_long += long
        if row is not None:
            rows.append(row)
    if not rows:
        raise TrainError(
            f"{data}: no row has the teacher's top-k logprobs: set generation.top_logprobs "
            "(1-20) and capture the teacher again (or, if it was, run `still export` again: "
            "older exports lack teacher_token_logprobs), or use train.recipe: sft"
        )

    # -- train: cross-entropy + ULD on the partial vectors / aligned divergence ----------
    def loss_of(batch: list[CrossRow]) -> tuple[Any, int]:
        s_logits, targets = answer_logits(student.model, [r.student_prompt for r in batch],
                                          [r.answer for r in batch], student.pad,
                                          student.device, len(student.tokenizer))  # fmt: skip
        views = []
        for r in batch:
            width = max(len(c) for c in r.top)
            probs = torch.tensor(
                [[math.exp(lp) for lp in c.values()] + [0.0] * (width - len(c)) for c in r.top],
                device=s_logits.device,
            )
            views.append((probs, r.top.__getitem__))
        loss = cross_loss(s_logits, targets, batch, views, vocab, spec, partial=True)
        return loss, sum(len(r.student_prompt) + len(r.answer) for r in batch)

    return train_loop(
        student, rows, spec, loss_of, out_dir, on_step,
        recipe=f"kd-topk-{mode}", data=data, skipped_too_long=too_long,
        weight_of=lambda row: len(row.answer),
        skipped_no_targets=len(raw) - len(rows) - too_long,
    )  # fmt: skip
