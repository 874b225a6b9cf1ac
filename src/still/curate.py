"""Curation: turn graded teacher completions into training data.

The teacher answered with its own (long, few-shot) prompt; the student must learn to give
that answer to its own short prompt. So each kept row is rebuilt with the STUDENT prompt and
the teacher's answer, and written as chat JSONL in the OpenAI fine-tuning format.

Held-out examples never reach training data: every id is checked against the held-out set
again here, at the last moment, whatever the caller did before; and a training example
whose student prompt reads like a held-out one's (up to case and spacing) is dropped too,
since a dataset can hold one question twice under two ids (TREC has questions under two
fine labels).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from still.capture import build_messages
from still.errors import StillError, TrainError
from still.graders import Capture, Filter, Grader, answer_of, grade, parse_filter, prepare_graders
from still.settings import scrub
from still.tasks import Example, Task
from still.types import Completion, Message

Keep = Literal["correct", "parsed"]


class LeakageError(StillError):
    """A held-out example was about to enter training data."""


@dataclass
class ExportStats:
    """Kept and dropped rows, with the reason for each drop."""

    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    path: Path | None = None

    def summary(self) -> str:
        drops = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items())) or "none"
        return f"kept {self.kept} rows; dropped: {drops}"


def export(
    task: Task,
    train: Sequence[Example],
    teacher: dict[str, Completion],
    graders: Sequence[Grader],
    heldout_ids: set[str],
    fewshot: Sequence[Example],
    out: Path,
    keep: Keep = "correct",
    capture: Capture | None = None,
    keep_if: str | None = None,
    heldout: Sequence[Example] = (),
    drop: Mapping[str, str] | None = None,
) -> ExportStats:
    """Write the teacher completions that pass as student-prompt chat JSONL.

    Args:
        task: the task (for the student prompt and label set).
        train: training examples, in order.
        teacher: example id -> the teacher's completion.
        graders: graders whose pass decides `correct`.
        heldout_ids: ids that must never be written (LeakageError if one is).
        fewshot: examples available to the student prompt, if it shows any.
        out: the JSONL file to write.
        keep: `correct` keeps rows every grader passes (needs reference answers); `parsed`
            keeps every successful, parseable teacher answer (no gold needed).
        capture: how judge graders are called (see `still.graders.prepare_graders`).
        keep_if: a filter over grade scores (`correct == 1 and sarcasm >= 6`, see
            `still.graders.parse_filter`) deciding which rows are kept, instead of `keep`'s
            "every grader passes". A row whose grader failed is dropped with the reason.
        heldout: the held-out examples: a training row whose student prompt has the same
            text as one of theirs (lowercased, whitespace collapsed) is dropped, counted
            as "held-out text".
        drop: example ids to leave out, with the reason (`low confidence: ...`: the
            gold-free filter, `still.pipeline._confidence`), counted by its first word(s)
            before a colon.

    Besides `out`, writes `train-soft.jsonl` (SOFT_FILE: the teacher's label scores of
    the same rows, when it gave them), `train-tokens.jsonl` (TOKENS_FILE: with the
    teacher's prompt) and `curation.jsonl` beside it: one line per
    training example with its id, source, whether it was kept, why not, and its grade
    scores.

    Raises:
        LeakageError: a training example id belongs to the held-out split.
    """
    stats = ExportStats(path=out)
    flt = parse_filter(keep_if, {g.name for g in graders}) if keep_if else None
    prompts = {ex.id: build_messages(task, "student", ex, fewshot) for ex in train}
    heldout_text = {_normalised(build_messages(task, "student", h, fewshot)) for h in heldout}
    if keep == "correct" or flt is not None:
        gradable = [
            (ex, teacher.get(ex.id))
            for ex in train
            if ex.id not in heldout_ids and _normalised(prompts[ex.id]) not in heldout_text
        ]
        prepare_graders(graders, gradable, task.labels, capture)
    seen: set[str] = set()
    rows = []
    soft: list[dict[str, object]] = []  # the same rows with the teacher's label scores
    tokens: list[dict[str, object]] = []  # ... and with the teacher's prompt, for token KD
    report: list[dict[str, object]] = []
    for ex in train:
        if ex.id in heldout_ids:
            raise LeakageError(
                f"example {ex.id} ({ex.source}) is held out; refusing to train on it"
            )
        comp = teacher.get(ex.id)
        answer, why = answer_of(comp, task.labels)
        scores: dict[str, float] = {}
        messages = prompts[ex.id]
        key = _normalised(messages)
        reason: str | None = "held-out text"  # the same question under another id
        if key not in heldout_text:
            reason = _drop_reason(answer, why, keep, flt, graders, ex, comp, task, scores)
        if reason is None and drop and ex.id in drop:
            reason = drop[ex.id]
        if reason is None and key in seen:
            reason = "duplicate prompt"
        report.append(
            {
                "example_id": ex.id,
                "source": ex.source,
                "kept": reason is None,
                "reason": reason,
                "scores": scores,
            }
        )
        if reason is not None:
            stats.dropped[reason.split(":")[0]] += 1
            continue
        assert answer is not None
        seen.add(key)
        rows.append(
            {
                "messages": [m.model_dump() for m in messages]
                + [{"role": "assistant", "content": answer, "weight": 1}]
            }
        )
        teacher_prompt = build_messages(task, "teacher", ex, fewshot)
        token_row: dict[str, object] = {
            **rows[-1],
            "teacher_messages": [m.model_dump() for m in teacher_prompt],
        }
        if comp is not None and comp.tokens and comp.top_logprobs and not task.labels:
            # the teacher's own tokens and their top-k alternatives: soft targets that need
            # no live teacher (an endpoint's), for a student sharing its tokenizer
            token_row["teacher_tokens"] = list(comp.tokens)
            token_row["teacher_top_logprobs"] = list(comp.top_logprobs)
            if comp.token_logprobs is not None:  # each chosen token's own logprob
                token_row["teacher_token_logprobs"] = list(comp.token_logprobs)
        tokens.append(token_row)
        if task.labels and comp is not None and comp.label_logprobs:
            soft.append(
                {
                    "messages": [m.model_dump() for m in messages],
                    "answer": answer,
                    "teacher_logprobs": comp.label_logprobs,
                }
            )
    _write_jsonl(out.with_name("curation.jsonl"), report)
    _write_jsonl(out, rows)
    _write_jsonl(out.with_name(TOKENS_FILE), tokens)
    soft_path = out.with_name(SOFT_FILE)
    if soft and len(soft) == len(rows):
        _write_jsonl(soft_path, soft)
    elif soft_path.exists():
        soft_path.unlink()  # stale soft targets of an earlier export must not be trained on
    stats.kept = len(rows)
    return stats


TRAIN_FILE = "train.jsonl"
"""The curated rows a student learns from (student prompt, teacher answer): SFT's data."""

TOKENS_FILE = "train-tokens.jsonl"
"""Beside train.jsonl: the same rows with the teacher's prompt, for token-level KD
(still.train.kd_tokens), where the teacher reads its prompt and the student its own."""

SOFT_FILE = "train-soft.jsonl"
"""Beside train.jsonl: the same rows with the teacher's scores over the label set, for
knowledge distillation (still.train.kd); written when every kept answer has them."""


def _drop_reason(
    answer: str | None,
    why: str | None,
    keep: Keep,
    flt: Filter | None,
    graders: Sequence[Grader],
    ex: Example,
    comp: Completion | None,
    task: Task,
    scores: dict[str, float],
) -> str | None:
    """Why a teacher answer is not training data (None: keep it); fills `scores`."""
    if answer is None:
        return f"teacher {why}"
    if keep == "parsed" and flt is None:
        return None
    grades = grade(graders, ex, comp, task.labels)
    scores.update({g.grader: g.score for g in grades})
    failed = next((g for g in grades if g.error), None)
    if failed is not None:
        return f"grader failed: {failed.grader}: {scrub(failed.error or '')}"
    if flt is not None:
        return None if flt.test(scores) else f"filtered out: {flt.source}"
    if all(g.passed for g in grades):
        return None
    # an input with no reference (a teacher-written one, say) failed for want of one
    return "no reference" if not ex.answer else "teacher wrong"


def _normalised(messages: Sequence[Message]) -> str:
    """A prompt's dedup key: case and runs of whitespace do not make a new prompt."""
    return json.dumps([" ".join(m.content.lower().split()) for m in messages])


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    """Write rows beside `path` and rename into place (never a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_chat_jsonl(path: Path) -> list[list[dict[str, str]]]:
    """Read chat JSONL; a malformed line raises ValueError naming file and line."""
    convs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            msgs = row["messages"]
            if not msgs or msgs[-1]["role"] != "assistant":
                raise ValueError("the last message must be the assistant's answer")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TrainError(f"{path}:{n}: not a chat row ({exc})") from exc
        convs.append(msgs)
    return convs
