"""Preference pairs: where the teacher is right and the base student wrong, teach the gap.

SFT shows the student good answers only. DPO also shows it its own mistakes: for each
training example the teacher answered correctly and the base student did not, the pair
(teacher answer = chosen, student answer = rejected) under the STUDENT prompt pushes the
student toward the one and away from the other. The rejected answers are the student's
own, so the pairs target exactly the errors it makes.

Held-out examples never enter: ids are checked against the held-out set here, whatever
the caller did before (the same rule as `still.curate`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from still.curate import LeakageError

Format = Literal["openai", "trl"]


@dataclass
class PreferencePair:
    """One prompt with a preferred and a dispreferred answer."""

    example_id: str
    prompt: list[dict[str, str]]  # the student prompt's chat messages (system/user)
    chosen: str
    rejected: str


def pairs_from(
    prompts: Mapping[str, list[dict[str, str]]],
    teacher: Mapping[str, tuple[str, bool]],
    student: Mapping[str, tuple[str, bool]],
    heldout_ids: set[str],
) -> list[PreferencePair]:
    """Pairs for the examples where the teacher passed, the base student failed, and the
    two answers differ (identical text would teach nothing and make the DPO loss flat).

    Args:
        prompts: example id -> the student prompt's messages.
        teacher: example id -> (teacher answer, passed).
        student: example id -> (base student answer, passed).
        heldout_ids: ids that must never become training data.

    Returns the pairs in `prompts` order (ids missing from either answer map are skipped).

    Raises:
        LeakageError (a ValueError): a pair would come from a held-out example.
    """
    pairs: list[PreferencePair] = []
    for example_id, prompt in prompts.items():
        t, s = teacher.get(example_id), student.get(example_id)
        if t is None or s is None:
            continue
        (t_answer, t_passed), (s_answer, s_passed) = t, s
        if t_passed and not s_passed and t_answer != s_answer:
            pairs.append(PreferencePair(example_id, list(prompt), t_answer, s_answer))
    leaked = sorted(p.example_id for p in pairs if p.example_id in heldout_ids)
    if leaked:
        shown = ", ".join(leaked[:5]) + (", ..." if len(leaked) > 5 else "")
        raise LeakageError(
            f"{len(leaked)} held-out example(s) would enter the preference data ({shown}); "
            "refusing to train on them"
        )
    return pairs


def dpo_row(pair: PreferencePair, fmt: Format) -> dict[str, Any]:
    """One JSONL row in the given format.

    openai: OpenAI's preference fine-tuning (`method: dpo`) input, one assistant message
        per output.
    trl: TRL's conversational preference type (explicit prompt), what `DPOTrainer` reads.
    """
    chosen = [{"role": "assistant", "content": pair.chosen}]
    rejected = [{"role": "assistant", "content": pair.rejected}]
    if fmt == "openai":
        return {
            "input": {"messages": pair.prompt},
            "preferred_output": chosen,
            "non_preferred_output": rejected,
        }
    if fmt == "trl":
        return {"prompt": pair.prompt, "chosen": chosen, "rejected": rejected}
    raise ValueError(f"unknown preference format {fmt!r}: use 'openai' or 'trl'")


def write_dpo(pairs: Sequence[PreferencePair], path: Path, fmt: Format) -> int:
    """Write `pairs` as JSONL in `fmt` and return the number of rows.

    Written to a temporary file beside `path` and renamed into place, so a crash never
    leaves a half-written file that a trainer would then read as complete.
    """
    rows = [dpo_row(p, fmt) for p in pairs]  # before touching the disk: bad fmt raises here
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(rows)
