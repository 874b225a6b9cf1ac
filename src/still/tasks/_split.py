"""Deterministic train / validation / held-out / few-shot splits, by seeded hash of the id.

Examples are ordered by `sha256(f"{seed}:{id}")`, never by row number, and the held-out
set is the first `heldout` of that order (a count, or `round(fraction * n)`, at least 1).
Because ids come from content, re-sorting the data file changes nothing, and appended rows
only interleave with the old ones, whose relative order never changes:

- with a count (`heldout: 300`), no old training example can ever become held-out, so an
  earlier student is never evaluated on its own training data. Appended rows that hash
  into the prefix push as many old held-out examples into train;
- with a fraction (`heldout: 0.2`), an example is held out when its hash, read as a number
  in [0, 1), is below the fraction: each example's side depends on its own id alone, so
  appending or removing rows never moves any other example across. The held-out size is
  then about, not exactly, the fraction (at least 1). Prefer a fraction for growing data.

Validation examples come from what is left after the held-out part, by a second hash of
the id (`validation`: a count, or a fraction of all examples), so they are as stable as the
held-out ones. Choices (a recipe, a method, a threshold, a checkpoint) are made on them:
the held-out part is the test set, read once by the final comparison.

Few-shot examples are drawn from the training part and then REMOVED from `train`: the
teacher is never asked a question whose answer sits in its own prompt, and the student is
never trained on a prompt's own demonstration. They are balanced round-robin across answer
values, and every prefix of `fewshot` stays balanced (a role showing 2 of 6 shots still
sees 2 labels).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from still.tasks._example import Example
from still.tasks._load import TaskError
from still.tasks._schema import SplitSpec


@dataclass(frozen=True)
class Split:
    """The three disjoint parts of a task's examples.

    Attributes:
        train: Examples the teacher answers and the student is trained on (in hash order,
            capped at `split.train`), few-shot examples excluded.
        heldout: The test set: examples only ever used for the final comparison.
        fewshot: Labelled demonstrations for prompts, drawn from the training part.
        validation: Examples choices are made on (never trained on, never in a prompt).
        teacher: With a trained teacher (`teacher_training`), the training examples it is
            fine-tuned on with their gold answers; taken out of `train`, the students'.
    """

    train: list[Example]
    heldout: list[Example]
    fewshot: list[Example]
    validation: list[Example] = field(default_factory=list)
    teacher: list[Example] = field(default_factory=list)


def _digest(seed: int, example_id: str) -> str:
    return hashlib.sha256(f"{seed}:{example_id}".encode()).hexdigest()


def _heldout_size(n: int, heldout: int | float) -> int:
    """How many of `n` examples form the held-out prefix."""
    if isinstance(heldout, float) and heldout < 1:
        if heldout <= 0:
            raise TaskError(f"split.heldout must be > 0, got {heldout}")
        return max(1, round(n * heldout))
    if heldout != int(heldout) or heldout < 1:
        raise TaskError(
            f"split.heldout must be a fraction below 1 or a whole count >= 1, got {heldout}"
        )
    return min(int(heldout), n)


def split_examples(
    examples: Sequence[Example], spec: SplitSpec, fewshot: int = 0, teacher: int | float = 0
) -> Split:
    """Split examples into train, held-out and few-shot parts, deterministically.

    Args:
        examples: Unique examples (as `load_examples` returns them).
        spec: Seed, held-out size (a count, or a fraction if < 1) and optional train cap.
        fewshot: How many few-shot examples to draw from the training part (the largest
            `fewshot` of any role's prompt).
        teacher: The trained teacher's part of the training examples (`teacher_training.rows`:
            a count, or a fraction if < 1; 0: none), by a third seeded hash of the id,
            taken before the `split.train` cap.

    Returns:
        The split; `heldout` is disjoint from `train` and `fewshot`, and `fewshot` from
        `train`.

    Raises:
        TaskError: No examples, a bad `heldout` or `fewshot`, or nothing left to train on
            once the held-out and few-shot examples are taken.
        ValueError: duplicate ids (load_examples never gives them).
    """
    if not examples:
        raise TaskError("no examples to split")
    if len({e.id for e in examples}) != len(examples):
        raise ValueError("examples have duplicate ids; deduplicate them first (load_examples does)")
    if fewshot < 0:
        raise TaskError(f"fewshot must be >= 0, got {fewshot}")
    ordered = sorted(examples, key=lambda e: _digest(spec.seed, e.id))
    n_held = _heldout_size(len(ordered), spec.heldout)
    if isinstance(spec.heldout, float) and spec.heldout < 1:
        cut = int(spec.heldout * 16**64)
        n_held = max(1, sum(int(_digest(spec.seed, e.id), 16) < cut for e in ordered))
    heldout, rest = ordered[:n_held], ordered[n_held:]
    validation = _validation(rest, spec)
    val_ids = {e.id for e in validation}
    rest = [e for e in rest if e.id not in val_ids]
    if len(rest) <= fewshot:
        raise TaskError(
            f"{len(examples)} examples: {n_held} held out (split.heldout={spec.heldout}), "
            f"{len(validation)} for validation (split.validation={spec.validation}) and "
            f"{fewshot} few-shot leave no training examples; lower them or add data"
        )
    shots = balanced(rest, fewshot)
    shot_ids = {e.id for e in shots}
    train = [e for e in rest if e.id not in shot_ids]
    taught = _part(train, spec.seed, "teacher", teacher) if teacher else []
    taught_ids = {e.id for e in taught}
    train = [e for e in train if e.id not in taught_ids]
    if teacher and not train:
        raise TaskError(
            f"teacher_training.rows={teacher} leaves the students no training examples; "
            "lower it or add data"
        )
    if spec.train is not None:
        train = train[: spec.train]
    held_ids = {e.id for e in heldout}
    # Held-out examples must never reach a prompt or the training data: check, don't assume
    # (not `assert`, which `python -O` removes).
    train_ids = {e.id for e in train}
    if (
        held_ids & (train_ids | shot_ids | val_ids | taught_ids)
        or shot_ids & train_ids
        or val_ids & (train_ids | shot_ids | taught_ids)
        or taught_ids & (train_ids | shot_ids)
    ):
        raise AssertionError("split parts overlap; this is a bug in still")
    return Split(train=train, heldout=heldout, fewshot=shots, validation=validation, teacher=taught)


def _part(pool: Sequence[Example], seed: int, name: str, size: int | float) -> list[Example]:
    """A named part of `pool` by a seeded hash of each id: a count takes the first ones in
    that order, a fraction each example whose hash falls below it (at least one)."""
    order = sorted(pool, key=lambda e: _digest(seed, f"{name}:{e.id}"))
    if isinstance(size, float) and size < 1:
        cut = int(size * 16**64)
        return [e for e in order if int(_digest(seed, f"{name}:{e.id}"), 16) < cut] or order[:1]
    return order[: int(size)]


def _validation(rest: Sequence[Example], spec: SplitSpec) -> list[Example]:
    """The validation part of what the held-out part left, by a second seeded hash of the
    id: a count takes the first ones in that order; a fraction, each example whose hash
    falls below it (about that share of what is left; its side depends on its own id
    alone, so appending rows never moves an old example in or out)."""
    size = spec.validation
    if size == 0:
        return []
    if size < 0 or (size >= 1 and size != int(size)):
        raise TaskError(
            f"split.validation must be a fraction below 1 or a whole count >= 0, got {size}"
        )
    return _part(rest, spec.seed, "validation", size)


def balanced(pool: Sequence[Example], k: int) -> list[Example]:
    """Take `k` examples from `pool` round-robin across answer values.

    Each round takes the next example of every answer value, in pool order, so all values
    show up when `k` allows and every prefix of the result is as balanced as it can be.
    Labels within a round come in pool order (the seeded hash order), not a fixed cycle.

    Args:
        pool: Candidate examples, in the order to draw them.
        k: How many to take (all of `pool` if it has fewer).

    Returns:
        Up to `k` examples.
    """
    queues: dict[str, list[Example]] = {}
    for e in pool:
        queues.setdefault(e.answer, []).append(e)
    position = {e.id: i for i, e in enumerate(pool)}
    out: list[Example] = []
    depth = 0
    while len(out) < k:
        layer = [q[depth] for q in queues.values() if depth < len(q)]
        if not layer:
            break
        layer.sort(key=lambda e: position[e.id])
        out.extend(layer[: k - len(out)])
        depth += 1
    return out
