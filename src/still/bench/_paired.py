"""Comparing two models on the same examples: paired bootstrap and McNemar's exact test.

Both models answered the same held-out questions, so their results are paired: the
variance of the difference is much smaller than two independent intervals suggest
(overlapping Wilson intervals do not mean "no difference"). The paired bootstrap resamples
questions, keeping each question's pair of outcomes together; McNemar's exact test looks
only at the discordant questions (one right, the other wrong), with an exact binomial
p-value because those counts are often small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _check(*seqs: Sequence[Any]) -> None:
    lengths = [len(s) for s in seqs]
    if len(set(lengths)) != 1:
        raise ValueError(f"paired results need equal lengths, got {lengths}")


def paired_bootstrap(
    a: Sequence[bool],
    b: Sequence[bool],
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """(accuracy of a - accuracy of b, low, high): percentile bootstrap over examples."""
    _check(a, b)
    x = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(x) == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
    means = x[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(x.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test: b01 = a wrong and b right, b10 = a right and b wrong."""

    b01: int
    b10: int
    p_value: float


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """Two-sided exact binomial test on the discordant pairs (p = 1 when there are none).

    >>> mcnemar_exact([True] * 10 + [False] * 2, [False] * 10 + [True] * 2).p_value < 0.05
    True
    """
    _check(a, b)
    b01 = sum(1 for x, y in zip(a, b, strict=True) if not x and y)
    b10 = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    n = b01 + b10
    if n == 0:
        return McNemar(0, 0, 1.0)
    from scipy.stats import binomtest

    return McNemar(b01, b10, float(binomtest(min(b01, b10), n, 0.5).pvalue))


def gap_closed_interval(
    teacher: Sequence[bool],
    base: Sequence[bool],
    distilled: Sequence[bool],
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float | None, float | None, float | None]:
    """The share of the teacher-student gap closed, (d - s) / (t - s), with a paired
    bootstrap interval (the same resampled questions for all three models). Resamples with
    no gap are left out; None when the observed gap is zero."""
    _check(teacher, base, distilled)
    t, s, d = (np.asarray(v, dtype=float) for v in (teacher, base, distilled))
    gap = t.mean() - s.mean() if len(t) else 0.0
    if abs(gap) < 1e-12:
        return None, None, None
    point = float((d.mean() - s.mean()) / gap)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(t), size=(n_resamples, len(t)))
    gaps = t[idx].mean(axis=1) - s[idx].mean(axis=1)
    keep = np.abs(gaps) > 1e-12
    ratios = (d[idx].mean(axis=1)[keep] - s[idx].mean(axis=1)[keep]) / gaps[keep]
    if len(ratios) == 0:
        return point, None, None
    alpha = (1 - confidence) / 2
    return point, float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1 - alpha))


PAIRS = (("distilled", "student"), ("distilled", "teacher"), ("teacher", "student"))


def compare_pairs(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Paired comparisons between roles (distilled vs student, distilled vs teacher,
    teacher vs student, when present), aligned by example id."""
    by_role: dict[str, dict[str, bool]] = {}
    for r in rows:
        by_role.setdefault(str(r["role"]), {})[str(r["example_id"])] = bool(r["correct"])
    out = []
    for a, b in PAIRS:
        if a not in by_role or b not in by_role:
            continue
        ids = [i for i in by_role[a] if i in by_role[b]]
        xa = [by_role[a][i] for i in ids]
        xb = [by_role[b][i] for i in ids]
        diff, low, high = paired_bootstrap(xa, xb)
        m = mcnemar_exact(xa, xb)
        out.append(
            {"a": a, "b": b, "n": len(ids), "accuracy_a": float(np.mean(xa)) if ids else 0.0,
             "accuracy_b": float(np.mean(xb)) if ids else 0.0, "diff": diff,
             "diff_low": low, "diff_high": high, "mcnemar_b01": m.b01,
             "mcnemar_b10": m.b10, "mcnemar_p": m.p_value}
        )  # fmt: skip
    return out
