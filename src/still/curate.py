"""Curation: turn graded teacher completions into training data.

The teacher answered with its own (long, few-shot) prompt; the student must learn to give
that answer to its own short prompt. So each kept row is rebuilt with the STUDENT prompt and
the teacher's answer, and written as chat JSONL in the OpenAI fine-tuning format.

Held-out examples never reach training data: every id is checked against the held-out set
again here, at the last moment, whatever the caller did before.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from still.capture import build_messages
from still.graders import Grader, answer_of, grade
from still.tasks import Example, Task
from still.types import Completion

Keep = Literal["correct", "parsed"]


class LeakageError(ValueError):
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

    Raises:
        LeakageError: a training example id belongs to the held-out split.
    """
    stats = ExportStats(path=out)
    seen: set[str] = set()
    rows = []
    for ex in train:
        if ex.id in heldout_ids:
            raise LeakageError(
                f"example {ex.id} ({ex.source}) is held out; refusing to train on it"
            )
        comp = teacher.get(ex.id)
        answer, why = answer_of(comp, task.labels)
        if answer is None:
            stats.dropped[f"teacher {why}"] += 1
            continue
        if keep == "correct" and not all(g.passed for g in grade(graders, ex, comp, task.labels)):
            stats.dropped["teacher wrong"] += 1
            continue
        messages = build_messages(task, "student", ex, fewshot)
        key = json.dumps([m.content for m in messages])
        if key in seen:
            stats.dropped["duplicate prompt"] += 1
            continue
        seen.add(key)
        rows.append(
            {
                "messages": [m.model_dump() for m in messages]
                + [{"role": "assistant", "content": answer}]
            }
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(out)
    stats.kept = len(rows)
    return stats


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
            raise ValueError(f"{path}:{n}: not a chat row ({exc})") from exc
        convs.append(msgs)
    return convs
