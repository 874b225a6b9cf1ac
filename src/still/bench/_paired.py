"""Comparing models on the same examples: paired bootstrap, McNemar's exact test, the gap
closed with an interval, and a chi-square test of the predicted label distribution.

Every model in a benchmark answers the same held-out questions, so their results are
paired. Questions differ far more in difficulty than the models do, and that variation is
shared: a hard question tends to be wrong for both. Two independent (Wilson) intervals
carry all of it, so they overlap even when one model is clearly better; the difference
measured question by question cancels it, and its variance is much smaller. Hence:

* `paired_bootstrap` resamples questions, keeping each question's pair of outcomes
  together, and reads the interval of the accuracy difference off the resampled
  differences (percentile bootstrap).
* `mcnemar_exact` tests "no difference" using only the discordant questions (one model
  right, the other wrong), the only ones that carry information about the difference. It
  uses the exact binomial distribution because the discordant counts are often small
  (tens), where the chi-square approximation of the classic McNemar test is poor.
* `gap_closed_interval` bootstraps the share of the teacher-student gap the distilled
  student closed, resampling the same questions for all three models.

Seed scheme (so results are reproducible and checkable by a plain loop): resample r uses
the indices `rng.integers(0, n, size=n)` of the r-th such draw from
`numpy.random.default_rng(seed)`. The draws are made in chunks of whole resamples to bound
memory; numpy's stream is the same however it is chunked.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# At most this many resampled indices are held at once (32 MiB of int64).
_CHUNK_CELLS = 1 << 22


def _check_lengths(**named: Sequence[Any]) -> int:
    """The common length of the named sequences; ValueError naming every length otherwise."""
    lengths = {name: len(seq) for name, seq in named.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ValueError(f"paired results need equal lengths: {shown}")
    return next(iter(lengths.values()), 0)


def _check_options(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")


def _resampled_means(columns: FloatArray, n_resamples: int, seed: int) -> FloatArray:
    """Means of each column row under the same bootstrap resamples of the examples.

    `columns` has shape (k, n): k outcomes per example, n examples. Returns (k, n_resamples).
    """
    n = columns.shape[1]
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_CELLS // n)
    out = np.empty((columns.shape[0], n_resamples))
    for start in range(0, n_resamples, per_chunk):
        rows = min(per_chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(rows, n))
        out[:, start : start + rows] = columns[:, idx].mean(axis=2)
    return out


def _bounds(values: FloatArray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_bootstrap(
    a: Sequence[bool] | Sequence[float],
    b: Sequence[bool] | Sequence[float],
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """(accuracy of a - accuracy of b, low, high): a percentile bootstrap over examples.
    Scores (floats) work the same way: the difference of their means.

    `a[i]` and `b[i]` are the two models' outcomes on the same example i; each resample
    draws examples with replacement and keeps both outcomes of an example together, so the
    interval reflects only how the models disagree, not how hard the examples are.
    All NaN for no examples.

    >>> paired_bootstrap([True, True, False, True], [False, True, False, False])[0]
    0.5
    """
    n = _check_lengths(a=a, b=b)
    _check_options(n_resamples, confidence)
    if n == 0:
        return math.nan, math.nan, math.nan
    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    means = _resampled_means(x[np.newaxis, :], n_resamples, seed)[0]
    return (float(x.mean()), *_bounds(means, confidence))


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test: b01 = a wrong and b right, b10 = a right and b wrong."""

    b01: int
    b10: int
    p_value: float


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """Exact McNemar test: two-sided binomial test of the discordant pairs against 1/2.

    Questions both models got right (or both wrong) say nothing about which is better, so
    only the b01 + b10 discordant ones count; under "no difference" each is equally likely
    to go either way. p = min(1, 2 * P(Binomial(b01 + b10, 1/2) <= min(b01, b10))), the same
    as statsmodels' `mcnemar(table, exact=True)`; 1.0 when there are no discordant pairs.

    >>> mcnemar_exact([True] * 10 + [False] * 2, [False] * 10 + [True] * 2).p_value < 0.05
    True
    """
    _check_lengths(a=a, b=b)
    b01 = sum(1 for x, y in zip(a, b, strict=True) if not x and y)
    b10 = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    n = b01 + b10
    if n == 0:
        return McNemar(0, 0, 1.0)
    from scipy.stats import binom

    return McNemar(b01, b10, min(1.0, 2.0 * float(binom.cdf(min(b01, b10), n, 0.5))))


def gap_closed_interval(
    teacher: Sequence[bool],
    base: Sequence[bool],
    distilled: Sequence[bool],
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float | None, float | None, float | None]:
    """The share of the teacher-student gap closed, (d - s) / (t - s), with an interval.

    A ratio of differences of correlated accuracies has no simple standard error, so the
    interval is a paired percentile bootstrap: each resample draws the same examples for
    all three models. Resamples where the teacher and base accuracies are equal (no gap to
    close) are skipped. (None, None, None) when the observed gap is zero; the interval is
    (None, None) when every resample was skipped.

    >>> gap_closed_interval([True, True], [False, False], [True, False], n_resamples=10)[0]
    0.5
    """
    n = _check_lengths(teacher=teacher, base=base, distilled=distilled)
    _check_options(n_resamples, confidence)
    if n == 0:
        return None, None, None
    cols = np.asarray([teacher, base, distilled], dtype=float)
    t, s, d = (float(v) for v in cols.mean(axis=1))
    gap = t - s
    if abs(gap) < 1e-12:
        return None, None, None
    point = (d - s) / gap
    rt, rs, rd = _resampled_means(cols, n_resamples, seed)
    gaps = rt - rs
    keep = np.abs(gaps) > 1e-12
    if not keep.any():
        return point, None, None
    return (point, *_bounds((rd[keep] - rs[keep]) / gaps[keep], confidence))


@dataclass(frozen=True)
class ChiSquare:
    """Goodness of fit of a model's predicted labels to the gold label distribution.

    statistic and p_value are None when fewer than two labels could be tested or nothing
    was answered. `tested` are the labels in the test (those with gold examples);
    `not_answered` counts failed or unparseable predictions (None) and `outside_gold`
    predictions of a label with no gold example (or not among the labels at all): both
    are left out of the test.
    """

    statistic: float | None
    dof: int
    p_value: float | None
    predicted_counts: dict[str, int]
    gold_counts: dict[str, int]
    not_answered: int = 0
    outside_gold: int = 0
    tested: tuple[str, ...] = field(default_factory=tuple)


def chi_square_labels(
    predicted: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]
) -> ChiSquare:
    """Does the model predict each label about as often as it occurs in gold?

    A model that answers the majority label to everything can still score well on a
    skewed test set; this catches it. Observed = the model's prediction counts; expected =
    the gold proportions x the number of answered predictions (scipy.stats.chisquare,
    dof = tested labels - 1).

    Zero expected counts: a label with no gold example has an expected count of zero, for
    which the statistic is undefined (infinite for any prediction of it), and merging it
    into another label would invent a relation between the two. Such labels are dropped
    from the test and their predictions counted in `outside_gold`, which is itself worth
    reading: any value above zero means the model predicts labels the gold never uses.
    Gold labels not among `labels` do not count towards the gold proportions. As usual
    for the chi-square approximation, treat p-values with expected counts below ~5 as rough.

    >>> chi_square_labels(["a", "a", "a", "a"], ["a", "b", "a", "b"], ["a", "b"]).statistic
    4.0
    """
    _check_lengths(predicted=predicted, gold=gold)
    gold_n = Counter(str(g) for g in gold)
    answered = [str(p) for p in predicted if p is not None]
    pred_n = Counter(answered)
    tested = tuple(lab for lab in dict.fromkeys(labels) if gold_n[lab] > 0)
    observed = [pred_n[lab] for lab in tested]
    n = sum(observed)
    result = ChiSquare(
        statistic=None,
        dof=max(0, len(tested) - 1),
        p_value=None,
        predicted_counts={lab: pred_n[lab] for lab in labels},
        gold_counts={lab: gold_n[lab] for lab in labels},
        not_answered=len(predicted) - len(answered),
        outside_gold=len(answered) - n,
        tested=tested,
    )
    if n == 0 or len(tested) < 2:
        return result
    from scipy.stats import chisquare

    total = sum(gold_n[lab] for lab in tested)
    expected = [gold_n[lab] / total * n for lab in tested]
    res = chisquare(observed, expected)
    return replace(result, statistic=float(res.statistic), p_value=float(res.pvalue))


PAIRS = (
    ("distilled", "student"),
    ("distilled", "teacher"),
    ("distilled-verified", "student"),
    ("distilled-verified", "teacher"),
    ("distilled", "distilled-verified"),
    ("teacher", "student"),
)


def compare_pairs(
    rows: Sequence[Mapping[str, Any]],
    roles: Sequence[str] | None = None,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Paired comparisons of distilled vs student, distilled vs teacher and teacher vs
    student, for each pair whose roles both have rows (and are in `roles`, when given).

    `rows` are per-example rows as `evaluate` returns them (role, example_id, correct). The
    two roles are aligned by example id, over the ids both have; a pair with none in common
    is left out. Each entry: a, b, n, accuracy_a, accuracy_b, diff (a - b) with its paired
    bootstrap interval diff_low..diff_high, and McNemar's exact test (mcnemar_b01: a wrong
    and b right; mcnemar_b10: a right and b wrong; mcnemar_p).
    """
    wanted = None if roles is None else set(roles)
    by_role: dict[str, dict[str, bool]] = {}
    for r in rows:
        role = str(r["role"])
        if wanted is None or role in wanted:
            by_role.setdefault(role, {})[str(r["example_id"])] = bool(r["correct"])
    out: list[dict[str, Any]] = []
    for a, b in PAIRS:
        if a not in by_role or b not in by_role:
            continue
        ids = [i for i in by_role[a] if i in by_role[b]]
        if not ids:
            continue
        xa = [by_role[a][i] for i in ids]
        xb = [by_role[b][i] for i in ids]
        diff, low, high = paired_bootstrap(xa, xb, n_resamples=n_resamples, seed=seed)
        m = mcnemar_exact(xa, xb)
        out.append(
            {
                "a": a,
                "b": b,
                "n": len(ids),
                "accuracy_a": sum(xa) / len(ids),
                "accuracy_b": sum(xb) / len(ids),
                "diff": diff,
                "diff_low": low,
                "diff_high": high,
                "mcnemar_b01": m.b01,
                "mcnemar_b10": m.b10,
                "mcnemar_p": m.p_value,
            }
        )
    return out


def compare_scores(
    rows: Sequence[Mapping[str, Any]],
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The graders' mean score per role, and paired differences between roles: what the
    pass rate hides when graders give partial credit (a reward, a judge's 1-10, a
    similarity). `rows` are `evaluate`'s, with `score` (the mean of the top-level graders'
    scores of one answer; a row without one is left out).

    Returns:
        {"roles": [{role, n, mean, ci_low, ci_high}], "paired": [{a, b, n, mean_a,
        mean_b, diff, diff_low, diff_high}]}: each role's mean with its percentile
        bootstrap interval, and for each of `PAIRS` whose roles both have scores the
        difference a - b over their shared examples with its paired bootstrap interval.
    """
    _check_options(n_resamples, confidence)
    by_role: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.get("score") is not None:
            by_role.setdefault(str(r["role"]), {})[str(r["example_id"])] = float(r["score"])
    roles = []
    for role, scores in by_role.items():
        x = np.asarray(list(scores.values()), dtype=float)
        means = _resampled_means(x[np.newaxis, :], n_resamples, seed)[0]
        low, high = _bounds(means, confidence)
        roles.append(
            {"role": role, "n": len(x), "mean": float(x.mean()), "ci_low": low, "ci_high": high}
        )
    paired = []
    for a, b in PAIRS:
        if a not in by_role or b not in by_role:
            continue
        ids = [i for i in by_role[a] if i in by_role[b]]
        if not ids:
            continue
        xa = [by_role[a][i] for i in ids]
        xb = [by_role[b][i] for i in ids]
        diff, low, high = paired_bootstrap(
            xa, xb, n_resamples=n_resamples, seed=seed, confidence=confidence
        )
        paired.append({
            "a": a, "b": b, "n": len(ids), "mean_a": sum(xa) / len(ids),
            "mean_b": sum(xb) / len(ids), "diff": diff, "diff_low": low, "diff_high": high,
        })  # fmt: skip
    return {"roles": roles, "paired": paired}
