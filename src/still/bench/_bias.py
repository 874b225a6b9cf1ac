"""Label bias: does a model's predicted-label distribution match the gold distribution?

A model that answers "human" to everything can still look fine on a skewed test set; the
distribution of its predictions against the gold labels, with a chi-square goodness-of-fit
test (expected counts = gold proportions x the number of answered examples), shows it.
Labels that never occur in gold have no expected count: predictions of them are reported
(`predicted_outside_gold`) and left out of the test. Failed and unparseable answers are
left out and counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any


def label_distribution(
    rows: Sequence[Mapping[str, Any]], labels: Sequence[str]
) -> list[dict[str, Any]]:
    """Per role: predicted and gold counts per label, the chi-square statistic and p-value,
    and the confusion matrix (rows gold, columns predicted, in `labels` order)."""
    from scipy.stats import chisquare

    out = []
    for role in dict.fromkeys(r["role"] for r in rows):
        mine = [r for r in rows if r["role"] == role]
        gold = Counter(str(r["reference"]) for r in mine)
        answered = [r for r in mine if r.get("prediction") is not None]
        pred = Counter(str(r["prediction"]) for r in answered)
        in_gold = [lab for lab in labels if gold[lab] > 0]
        n = sum(pred[lab] for lab in in_gold)
        total_gold = sum(gold[lab] for lab in in_gold)
        stat = p = None
        if n and len(in_gold) > 1:
            expected = [gold[lab] / total_gold * n for lab in in_gold]
            res = chisquare([pred[lab] for lab in in_gold], expected)
            stat, p = float(res.statistic), float(res.pvalue)
        index = {lab: i for i, lab in enumerate(labels)}
        confusion = [[0] * len(labels) for _ in labels]
        for r in answered:
            g, q = index.get(str(r["reference"])), index.get(str(r["prediction"]))
            if g is not None and q is not None:
                confusion[g][q] += 1
        out.append(
            {"role": role, "labels": list(labels), "gold": [gold[lab] for lab in labels],
             "predicted": [pred[lab] for lab in labels], "not_answered": len(mine) - len(answered),
             "predicted_outside_gold": sum(pred[lab] for lab in labels if not gold[lab]),
             "chi2": stat, "p_value": p, "confusion": confusion}
        )  # fmt: skip
    return out
