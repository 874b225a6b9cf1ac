"""Agreement of a grader with gold labels: accuracy, Cohen's kappa, confusion matrix.

A grader (a judge model, usually) decides which teacher answers become training data, so
it is checked against gold labels before it is trusted. Accuracy alone flatters a grader
on skewed data (one that passes everything is 90% accurate when 90% of answers pass);
Cohen's kappa corrects for the agreement expected by chance, so that grader scores 0.

A prediction of None means the grader failed on that item. It counts as a disagreement
(never silently dropped: a grader that errors on the hard cases must not look better for
it) and shows up as its own "(failed)" column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from still.bench._stats import wilson
from still.errors import StillError

FAILED = "(failed)"
"""The predicted label of an item the grader failed on."""


class GraderNotTrusted(StillError, RuntimeError):
    """A grader agrees too little with gold labels to decide training data."""


@dataclass
class Agreement:
    """How well predicted labels agree with gold labels.

    `labels` name both the rows (gold) and the columns (predicted) of the square
    `confusion` matrix; `(failed)` is the last label when any prediction is missing, and
    its row is all zeros (gold is never "failed"). `kappa` is NaN when it is undefined:
    gold and grader both used one and the same label for every item, so chance agreement
    is already 1 and the data cannot tell a good grader from a constant one.
    """

    n: int
    accuracy: float
    kappa: float
    labels: list[str]
    confusion: list[list[int]]  # rows gold, columns predicted
    accuracy_ci: tuple[float, float]  # Wilson 95%

    def as_record(self) -> dict[str, Any]:
        """The fields as JSON values (how `still check-grader` records a check)."""
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "accuracy_ci": list(self.accuracy_ci),
            "kappa": self.kappa,
            "labels": self.labels,
            "confusion": self.confusion,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Agreement:
        """An agreement read back from `as_record`'s fields (extra keys are ignored)."""
        lo, hi = record["accuracy_ci"]
        return cls(
            n=int(record["n"]),
            accuracy=float(record["accuracy"]),
            kappa=float(record["kappa"]),
            labels=list(record["labels"]),
            confusion=[list(row) for row in record["confusion"]],
            accuracy_ci=(float(lo), float(hi)),
        )

    @property
    def failed(self) -> int:
        """Items the grader failed on (no prediction)."""
        if FAILED not in self.labels:
            return 0
        j = self.labels.index(FAILED)
        return sum(row[j] for row in self.confusion)

    def table(self) -> str:
        """The confusion matrix as a markdown table (rows gold, columns predicted).

        Readable as plain text in a terminal and renders as a table in notes and reports.
        The all-zero "(failed)" row is left out: gold never fails.
        """
        rows = [lab for lab in self.labels if lab != FAILED]
        header = ["gold \\ predicted", *self.labels]
        body = [[lab, *(str(c) for c in self.confusion[i])] for i, lab in enumerate(rows)]
        widths = [max(len(r[j]) for r in [header, *body]) for j in range(len(header))]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
            return "| " + " | ".join([first, *rest]) + " |"

        rule = (
            "|"
            + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]])
            + "|"
        )
        return "\n".join([line(header), rule, *(line(r) for r in body)])


def agreement(gold: Sequence[str], predicted: Sequence[str | None]) -> Agreement:
    """Compare a grader's `predicted` labels with `gold` labels, item by item.

    Labels are sorted (so the matrix is the same whatever the item order), with
    "(failed)" last when a prediction is None.

    Raises:
        ValueError: the sequences differ in length, are empty, or gold uses "(failed)".
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ValueError("no items to compare: agreement needs at least one gold label")
    if FAILED in gold:
        raise ValueError(f"{FAILED!r} is reserved for failed predictions, not a gold label")
    pred = [FAILED if p is None else p for p in predicted]
    labels = sorted(set(gold) | {p for p in pred if p != FAILED})
    if FAILED in pred:
        labels.append(FAILED)
    index = {lab: i for i, lab in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, pred, strict=True):
        confusion[index[g]][index[p]] += 1
    n = len(gold)
    agreed = sum(confusion[i][i] for i in range(len(labels)))
    return Agreement(
        n=n,
        accuracy=agreed / n,
        kappa=cohen_kappa(confusion),
        labels=labels,
        confusion=confusion,
        accuracy_ci=wilson(agreed, n),
    )


def cohen_kappa(confusion: Sequence[Sequence[int]]) -> float:
    """Cohen's kappa of a square confusion matrix: (p_o - p_e) / (1 - p_e).

    p_o is the observed agreement (the diagonal's share), p_e the agreement expected if
    both raters labelled independently with their own label frequencies (row share times
    column share, summed over labels). NaN when p_e is 1 (see `Agreement`). Rounded to
    12 places so that float noise does not print a kappa of exactly 0 as "-0.00".

    >>> cohen_kappa([[20, 5], [10, 15]])  # Wikipedia's worked example
    0.4
    """
    n = sum(sum(row) for row in confusion)
    k = len(confusion)
    if n == 0:
        return math.nan
    p_o = sum(confusion[i][i] for i in range(k)) / n
    rows = [sum(confusion[i]) / n for i in range(k)]
    cols = [sum(confusion[i][j] for i in range(k)) / n for j in range(k)]
    p_e = sum(r * c for r, c in zip(rows, cols, strict=True))
    if math.isclose(p_e, 1.0):
        return math.nan
    return round((p_o - p_e) / (1 - p_e), 12)


def check_trust(
    agreement: Agreement | None, min_kappa: float, force: bool, grader: str | None = None
) -> None:
    """Refuse a grader whose kappa is below `min_kappa`, unless `force`: the one decision
    behind `still export`'s trust gate (which passes the check recorded by
    `still check-grader`, or None when there is none).

    An undefined kappa (NaN) is refused too: agreement on data with a single label says
    nothing about whether the grader can tell good answers from bad ones.

    Args:
        agreement: the grader's measured agreement with gold; None: never checked.
        min_kappa: the lowest kappa trusted (the task's `curate.min_kappa`).
        force: trust it anyway.
        grader: its name, to say which grader and how to check it.

    Raises:
        GraderNotTrusted: kappa is below the minimum (or undefined, or never measured) and
            not forced.
    """
    if force or (agreement is not None and agreement.kappa >= min_kappa):
        return
    who = "grader not trusted" if grader is None else f"grader {grader!r} not trusted"
    check = "improve the grader (or check it on more varied gold)"
    if grader is not None:
        check = f"run `still check-grader TASK --grader {grader}` (a better judge if it stays low)"
    if agreement is None:
        raise GraderNotTrusted(
            f"{who}: it decides training data but was never checked against gold (the "
            f"required minimum kappa is {min_kappa}): {check}, or pass --force to use its "
            "verdicts anyway"
        )
    measured = (
        "undefined (gold and grader used a single label)"
        if math.isnan(agreement.kappa)
        else f"{agreement.kappa:.2f}"
    )
    failed = f", {agreement.failed} failed" if agreement.failed else ""
    raise GraderNotTrusted(
        f"{who}: Cohen's kappa {measured} (accuracy {agreement.accuracy:.1%} on "
        f"{agreement.n} items{failed}) is below the required minimum kappa {min_kappa}: "
        f"{check}, or pass --force to use its verdicts anyway"
    )
