"""Deterministic train / held-out / few-shot splits by example id.

Examples are ordered by a seeded hash of their id, not by row number, so appending rows to
the data file never moves an old example from held-out into train.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from still.tasks._example import Example
from still.tasks._schema import SplitSpec


@dataclass(frozen=True)
class Split:
    """Train examples (for the teacher and training), held-out ones, and few-shot examples.

    Few-shot examples are drawn from the training part and removed from `train`, so the
    teacher is never asked a question whose answer sits in its own prompt.
    """

    train: list[Example]
    heldout: list[Example]
    fewshot: list[Example]


def _order(examples: Sequence[Example], seed: int) -> list[Example]:
    return sorted(examples, key=lambda e: hashlib.sha256(f"{seed}:{e.id}".encode()).hexdigest())


def split_examples(examples: Sequence[Example], spec: SplitSpec, fewshot: int = 0) -> Split:
    """Split by seeded id hash; draw `fewshot` label-balanced examples from the train part."""
    ordered = _order(examples, spec.seed)
    n_held = (
        spec.heldout
        if isinstance(spec.heldout, int) and spec.heldout >= 1
        else max(1, round(len(ordered) * float(spec.heldout)))
    )
    n_held = min(int(n_held), len(ordered))
    heldout, rest = ordered[:n_held], ordered[n_held:]
    shots = _balanced(rest, fewshot)
    shot_ids = {e.id for e in shots}
    train = [e for e in rest if e.id not in shot_ids]
    if spec.train is not None:
        train = train[: spec.train]
    held_ids = {e.id for e in heldout}
    assert not held_ids & ({e.id for e in train} | shot_ids), "held-out ids leaked"
    return Split(train=train, heldout=heldout, fewshot=shots)


def _balanced(pool: Sequence[Example], k: int) -> list[Example]:
    """k examples taking answers round-robin, so every label shows up when possible."""
    by_answer: dict[str, list[Example]] = {}
    for e in pool:
        by_answer.setdefault(e.answer, []).append(e)
    queues = [list(v) for _, v in sorted(by_answer.items())]
    out: list[Example] = []
    while len(out) < k and any(queues):
        for q in queues:
            if q and len(out) < k:
                out.append(q.pop(0))
    # interleave deterministically by id hash so labels don't come in a fixed cycle
    return sorted(out, key=lambda e: e.id)
