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
from still.tasks import Example, TaskError
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
    answers = []
    for (it, opts, ans, _), c in zip(jobs, outs, strict=True):
        pick = letters.index(c.text) if c.ok and c.text in letters else None
        answers.append(Answer(it.id, ans, pick, None if pick is None else opts[pick]))
    return summarise(getattr(model, "name", "model"), answers, letters)


@dataclass(frozen=True)
class Answer:
    """One rotation of one question as answered: where the correct option was, which
    position the model picked (None: failed or no letter) and that option's text."""

    question: str
    correct_at: int
    picked: int | None
    option: str | None


def summarise(model: str, answers: Sequence[Answer], letters: Sequence[str]) -> PositionBias:
    """Position-bias numbers from every rotation's answer. A failed answer counts as
    wrong and breaks the question's consistency; it is left out of the letter shares.

    Raises:
        ValueError: no answers.
    """
    if not answers:
        raise ValueError("no answers")
    by_pos: Counter[str] = Counter()
    right_by_pos: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    chosen: dict[str, set[str]] = {}
    errors = 0
    rows = []
    for a in answers:
        at = letters[a.correct_at]
        by_pos[at] += 1
        if a.picked is None:
            errors += 1
            chosen.setdefault(a.question, set()).add("\0failed")
            continue
        predicted[letters[a.picked]] += 1
        right_by_pos[at] += a.picked == a.correct_at
        chosen.setdefault(a.question, set()).add(a.option or "")
        rows.append({"id": a.question, "correct_at": at, "predicted": letters[a.picked],
                     "correct": a.picked == a.correct_at})  # fmt: skip
    answered = sum(predicted.values())
    return PositionBias(
        model=model,
        n_questions=len(chosen),
        k=len(letters),
        accuracy=sum(right_by_pos.values()) / len(answers),
        accuracy_by_position={
            x: right_by_pos[x] / by_pos[x] if by_pos[x] else float("nan") for x in letters
        },
        predicted_share={x: predicted[x] / answered if answered else 0.0 for x in letters},
        consistency=sum(len(v) == 1 for v in chosen.values()) / len(chosen),
        chi2_p=_uniform_p([predicted[x] for x in letters]),
        errors=errors,
        per_question=rows,
    )


def rotate_example(
    example: Example, options: Sequence[str], labels: Sequence[str]
) -> list[tuple[Example, int]]:
    """A multiple-choice example in every cyclic rotation of its option fields, with
    the answer relabelled to where the correct option lands; rotation 0 is the example
    itself (same id, same prompt, so its stored answer is reused).

    Raises:
        ValueError: the reference is not one of `labels` (load_examples drops those).
        TaskError: an option field is missing from the example.
    """
    if example.answer not in labels:
        raise ValueError(f"example {example.id}: answer {example.answer!r} is not in {labels}")
    missing = [f for f in options if f not in example.fields]
    if missing:
        raise TaskError(
            f"example {example.id} ({example.source}) has no field {missing}; "
            "multiple_choice.options must name fields of the data"
        )
    item = MCItem(
        example.id,
        "",
        tuple(example.fields[f] for f in options),
        list(labels).index(example.answer),
    )
    out = []
    for r, (opts, ans) in enumerate(rotations(item)):
        fields = {**example.fields, **dict(zip(options, opts, strict=True))}
        rid = example.id if r == 0 else f"{example.id}@r{r}"
        out.append((example.model_copy(update={"id": rid, "fields": fields,
                                               "answer": labels[ans]}), ans))  # fmt: skip
    return out


def _uniform_p(counts: list[int]) -> float | None:
    """p-value of a chi-square test of the counts against a uniform spread."""
    try:
        from scipy.stats import chisquare
    except ImportError:
        return None
    if sum(counts) == 0:
        return None
    return float(chisquare(counts).pvalue)
