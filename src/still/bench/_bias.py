"""Label bias: does a model's predicted-label distribution match the gold distribution?

A model that answers "human" to everything can still look fine on a skewed test set; the
distribution of its predictions against the gold labels, with a chi-square goodness-of-fit
test (expected counts = gold proportions x the number of answered examples), shows it.
Labels that never occur in gold have no expected count: predictions of them are reported
(`predicted_outside_gold`) and left out of the test. Failed and unparseable answers are
left out and counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from still.bench._paired import chi_square_labels


def label_distribution(
    rows: Sequence[Mapping[str, Any]], labels: Sequence[str]
) -> list[dict[str, Any]]:
    """Per role: predicted and gold counts per label, the chi-square statistic and p-value,
    and the confusion matrix (rows gold, columns predicted, in `labels` order)."""
    out = []
    for role in dict.fromkeys(r["role"] for r in rows):
        mine = [r for r in rows if r["role"] == role]
        answered = [r for r in mine if r.get("prediction") is not None]
        test = chi_square_labels(
            [None if r.get("prediction") is None else str(r["prediction"]) for r in mine],
            [str(r["reference"]) for r in mine],
            labels,
        )
        gold, pred = test.gold_counts, test.predicted_counts
        stat, p = test.statistic, test.p_value
        index = {lab: i for i, lab in enumerate(labels)}
        confusion = [[0] * len(labels) for _ in labels]
        for r in answered:
            g, q = index.get(str(r["reference"])), index.get(str(r["prediction"]))
            if g is not None and q is not None:
                confusion[g][q] += 1
        out.append(
            {"role": role, "labels": list(labels), "gold": [gold[lab] for lab in labels],
             "predicted": [pred[lab] for lab in labels], "not_answered": test.not_answered,
             "predicted_outside_gold": test.outside_gold,
             "chi2": stat, "p_value": p, "confusion": confusion}
        )  # fmt: skip
    return out
