"""Baselines a comparison must beat before any model is called good: always answering the
most frequent label, and guessing uniformly among the labels.

A model below these has learned nothing about the task, whatever its "gap closed" says:
on a task whose test split is 60% one label, a student answering that label every time
scores 60%. The majority label is chosen on the training split (never by looking at the
test answers) and scored on the test split, with its Wilson interval.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from still.bench._stats import wilson


@dataclass(frozen=True)
class Baselines:
    """Accuracy on the test split of answering without looking at the input.

    Attributes:
        majority_label: the most frequent reference answer on the training split.
        majority: the test accuracy of always answering it (None without test answers).
        majority_ci: its 95% Wilson interval.
        chance: uniform guessing among the task's labels (None for free-text tasks).
        n: test examples.
    """

    majority_label: str | None
    majority: float | None
    majority_ci: tuple[float, float] | None
    chance: float | None
    n: int

    @property
    def floor(self) -> float | None:
        """The higher of the two: what a model must beat to show it read the input."""
        known = [x for x in (self.majority, self.chance) if x is not None]
        return max(known) if known else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def baselines(
    train_answers: Sequence[str], test_answers: Sequence[str], labels: Sequence[str] | None
) -> Baselines:
    """Majority-label and chance accuracy on the test answers.

    >>> b = baselines(["a", "a", "b"], ["a", "b", "b", "b"], ["a", "b"])
    >>> b.majority_label, b.majority, b.chance
    ('a', 0.25, 0.5)
    """
    counts = Counter(train_answers)
    label = counts.most_common(1)[0][0] if counts else None
    n = len(test_answers)
    majority = ci = None
    if label is not None and n:
        hits = sum(a == label for a in test_answers)
        majority = hits / n
        ci = wilson(hits, n)
    chance = 1 / len(labels) if labels else None
    return Baselines(label, majority, ci, chance, n)
