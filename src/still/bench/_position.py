"""Position bias of multiple-choice answers: does a model prefer a letter, not an answer?

Each question is asked once per cyclic rotation of its options, so the correct option
sits at every position (A, B, C, D...) once. An unbiased model's accuracy is the same
whatever the position, its predicted letters are spread like the correct ones (uniform
over rotations), and it picks the same option (content, not letter) in every rotation.
A biased one shows it in three numbers: accuracy by the correct answer's position, the
share of each predicted letter (with a chi-square test against uniform), and consistency.

Answers are scored over the letters (one forward pass a question, always a valid letter),
so this measures preference, not format failures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from still.models import Provider
from still.types import Message, Request, SamplingParams

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question: its options in their original order and the index of
    the correct one."""

    id: str
    question: str
    options: tuple[str, ...]
    answer: int


def rotations(item: MCItem) -> list[tuple[tuple[str, ...], int]]:
    """Every cyclic rotation of the options, with where the correct one lands.

    >>> rotations(MCItem("q", "?", ("a", "b", "c"), 0))
    [(('a', 'b', 'c'), 0), (('b', 'c', 'a'), 2), (('c', 'a', 'b'), 1)]
    """
    k = len(item.options)
    return [(item.options[r:] + item.options[:r], (item.answer - r) % k) for r in range(k)]


def default_prompt(question: str, options: Sequence[str]) -> tuple[Message, ...]:
    """A plain zero-shot multiple-choice prompt ending in 'Answer:'."""
    lines = [question.strip(), ""]
    lines += [f"({LETTERS[i]}) {opt}" for i, opt in enumerate(options)]
    lines += ["", "Answer with the letter only.", "Answer:"]
    return (Message(role="user", content="\n".join(lines)),)


@dataclass
class PositionBias:
    """One model's position-bias numbers over all rotations of all questions."""

    model: str
    n_questions: int
    k: int
    accuracy: float
    accuracy_by_position: dict[str, float]  # correct answer at this letter -> accuracy
    predicted_share: dict[str, float]  # share of predictions naming each letter
    consistency: float  # questions whose chosen option is the same in every rotation
    chi2_p: float | None  # predicted letters against uniform (None without scipy)
    errors: int = 0
    per_question: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("per_question")
        return d


def position_bias(
    model: Provider,
    items: Sequence[MCItem],
    prompt: Callable[[str, Sequence[str]], tuple[Message, ...]] = default_prompt,
    batch_size: int = 8,
) -> PositionBias:
    """Ask every rotation of every question (letters scored) and measure the bias.

    All items must have the same number of options (so positions are comparable).

    Raises:
        ValueError: no items, or items with different numbers of options.
    """
    if not items:
        raise ValueError("no questions")
    k = len(items[0].options)
    if any(len(it.options) != k for it in items):
        raise ValueError("every question needs the same number of options")
    letters = tuple(LETTERS[:k])
    jobs: list[tuple[MCItem, tuple[str, ...], int, Request]] = []
    for it in items:
        for opts, ans in rotations(it):
            req = Request(
                model=getattr(model, "name", "model"),
                messages=prompt(it.question, opts),
                params=SamplingParams(max_tokens=1),
                labels=letters,
            )
            jobs.append((it, opts, ans, req))
    outs = []
    for i in range(0, len(jobs), batch_size):
        outs += model.complete([j[3] for j in jobs[i : i + batch_size]])
    by_pos: Counter[str] = Counter()
    right_by_pos: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    chosen: dict[str, set[str]] = {}
    errors = 0
    rows = []
    for (it, opts, ans, _), c in zip(jobs, outs, strict=True):
        by_pos[letters[ans]] += 1
        if c.error or c.text not in letters:
            errors += 1
            chosen.setdefault(it.id, set()).add("(failed)")
            continue
        pick = letters.index(c.text)
        predicted[c.text] += 1
        right_by_pos[letters[ans]] += pick == ans
        chosen.setdefault(it.id, set()).add(opts[pick])
        rows.append({"id": it.id, "correct_at": letters[ans], "predicted": c.text,
                     "correct": pick == ans})  # fmt: skip
    total = len(jobs)
    answered = sum(predicted.values())
    return PositionBias(
        model=getattr(model, "name", "model"),
        n_questions=len(items),
        k=k,
        accuracy=sum(right_by_pos.values()) / total,
        accuracy_by_position={x: right_by_pos[x] / by_pos[x] for x in letters},
        predicted_share={x: predicted[x] / answered if answered else 0.0 for x in letters},
        consistency=sum(len(v) == 1 for v in chosen.values()) / len(items),
        chi2_p=_uniform_p([predicted[x] for x in letters]),
        errors=errors,
        per_question=rows,
    )


def _uniform_p(counts: list[int]) -> float | None:
    """p-value of a chi-square test of the counts against a uniform spread."""
    try:
        from scipy.stats import chisquare
    except ImportError:
        return None
    if sum(counts) == 0:
        return None
    return float(chisquare(counts).pvalue)
