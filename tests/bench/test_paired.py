"""Paired statistics, checked against plain reference loops, scipy and statsmodels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from still.bench import _paired
from still.bench._paired import (
    chi_square_labels,
    compare_pairs,
    gap_closed_interval,
    mcnemar_exact,
    paired_bootstrap,
)

RNG = np.random.default_rng(7)
A = [bool(x) for x in RNG.random(300) < 0.6]
B = [bool(x) for x in RNG.random(300) < 0.45]


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default method)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _reference_bootstrap(
    a: Sequence[bool], b: Sequence[bool], n_resamples: int, seed: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """One resample at a time, in plain Python: the documented seed scheme."""
    n = len(a)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        diffs.append(sum(int(a[i]) - int(b[i]) for i in idx) / n)
    alpha = (1 - confidence) / 2
    point = (sum(a) - sum(b)) / n
    return point, _percentile(diffs, alpha), _percentile(diffs, 1 - alpha)


def _table(a: Sequence[bool], b: Sequence[bool]) -> list[list[int]]:
    pairs = list(zip(a, b, strict=True))
    both = sum(x and y for x, y in pairs)
    only_a = sum(x and not y for x, y in pairs)
    only_b = sum(not x and y for x, y in pairs)
    return [[both, only_a], [only_b, len(pairs) - both - only_a - only_b]]


# McNemar


@pytest.mark.parametrize(
    ("b01", "b10"), [(0, 0), (1, 0), (3, 3), (2, 9), (9, 2), (12, 30), (40, 41), (0, 25)]
)
def test_mcnemar_matches_statsmodels(b01: int, b10: int) -> None:
    ct = pytest.importorskip("statsmodels.stats.contingency_tables")
    # 20 both right, 15 both wrong, then the discordant pairs
    a = [True] * 20 + [False] * 15 + [False] * b01 + [True] * b10
    b = [True] * 20 + [False] * 15 + [True] * b01 + [False] * b10
    m = mcnemar_exact(a, b)
    assert (m.b01, m.b10) == (b01, b10)
    ref = ct.mcnemar(_table(a, b), exact=True).pvalue
    assert m.p_value == pytest.approx(ref, rel=1e-12, abs=1e-15)


def test_mcnemar_on_random_data_and_without_discordant_pairs() -> None:
    ct = pytest.importorskip("statsmodels.stats.contingency_tables")
    m = mcnemar_exact(A, B)
    assert m.p_value == pytest.approx(ct.mcnemar(_table(A, B), exact=True).pvalue, rel=1e-12)
    assert m.p_value < 0.05  # 60% vs 45% on 300 questions
    assert mcnemar_exact([True, False], [True, False]) == _paired.McNemar(0, 0, 1.0)
    assert mcnemar_exact([], []).p_value == 1.0


# paired bootstrap


def test_paired_bootstrap_matches_the_reference_loop() -> None:
    got = paired_bootstrap(A, B, n_resamples=2000, seed=3)
    ref = _reference_bootstrap(A, B, n_resamples=2000, seed=3)
    assert got == pytest.approx(ref, abs=1e-12)
    got90 = paired_bootstrap(A[:101], B[:101], n_resamples=500, seed=11, confidence=0.9)
    ref90 = _reference_bootstrap(A[:101], B[:101], n_resamples=500, seed=11, confidence=0.9)
    assert got90 == pytest.approx(ref90, abs=1e-12)


def test_paired_bootstrap_does_not_depend_on_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = paired_bootstrap(A, B, n_resamples=1000, seed=5)
    monkeypatch.setattr(_paired, "_CHUNK_CELLS", 7 * len(A) + 3)  # 7 resamples a chunk
    assert paired_bootstrap(A, B, n_resamples=1000, seed=5) == whole
    monkeypatch.setattr(_paired, "_CHUNK_CELLS", 1)  # one resample a chunk
    assert paired_bootstrap(A, B, n_resamples=1000, seed=5) == whole


def test_paired_bootstrap_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    diff, low, high = paired_bootstrap(A, B)
    a, b = np.asarray(A, float), np.asarray(B, float)
    ref = stats.bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=10_000,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert diff == pytest.approx(a.mean() - b.mean())
    assert low == pytest.approx(ref.low, abs=0.01)
    assert high == pytest.approx(ref.high, abs=0.01)


def test_paired_bootstrap_contains_the_point_is_seeded_and_narrows_with_n() -> None:
    diff, low, high = paired_bootstrap(A, B)
    assert low < diff < high
    assert paired_bootstrap(A, B) == (diff, low, high)
    assert paired_bootstrap(A, B, seed=1) != (diff, low, high)
    # the same proportions on 4x the examples: the interval about halves (1/sqrt(4))
    _, low4, high4 = paired_bootstrap(A * 4, B * 4)
    assert (high4 - low4) < 0.6 * (high - low)
    # a higher confidence gives a wider interval
    _, low99, high99 = paired_bootstrap(A, B, confidence=0.99)
    assert low99 < low and high < high99


def test_paired_is_narrower_than_unpaired() -> None:
    """Correlated outcomes (b right mostly where a is right): the paired interval is much
    narrower than the width implied by two independent accuracies."""
    a = A
    b = [x and i % 4 != 0 for i, x in enumerate(A)]  # b = a, minus a quarter of a's hits
    _, low, high = paired_bootstrap(a, b)
    pa, pb, n = np.mean(a), np.mean(b), len(a)
    unpaired = 2 * 1.96 * math.sqrt(pa * (1 - pa) / n + pb * (1 - pb) / n)
    assert (high - low) < 0.6 * unpaired


def test_paired_bootstrap_edge_cases() -> None:
    assert paired_bootstrap(A, A) == (0.0, 0.0, 0.0)  # never disagree: no uncertainty
    assert all(math.isnan(v) for v in paired_bootstrap([], []))
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(A, B, confidence=1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap(A, B, n_resamples=0)


def test_unequal_lengths_are_refused_naming_both() -> None:
    with pytest.raises(ValueError, match="equal lengths: a has 1, b has 2"):
        paired_bootstrap([True], [True, False])
    with pytest.raises(ValueError, match="a has 3, b has 2"):
        mcnemar_exact([True] * 3, [True] * 2)
    with pytest.raises(ValueError, match="teacher has 2, base has 2, distilled has 1"):
        gap_closed_interval([True, False], [False, False], [True])
    with pytest.raises(ValueError, match="predicted has 1, gold has 2"):
        chi_square_labels(["a"], ["a", "b"], ["a", "b"])


# gap closed


def test_gap_closed_interval_contains_the_point() -> None:
    n = 200
    teacher = [i < 120 for i in range(n)]  # 60%
    base = [i < 60 for i in range(n)]  # 30%
    distilled = [i < 90 for i in range(n)]  # 45%
    point, low, high = gap_closed_interval(teacher, base, distilled, n_resamples=4000)
    assert point == pytest.approx(0.5)
    assert low is not None and high is not None
    assert 0.3 < low < 0.5 < high < 0.7
    assert gap_closed_interval(teacher, base, distilled, n_resamples=4000) == (point, low, high)


def test_gap_closed_interval_matches_the_reference_loop() -> None:
    t, s, d = A, B, [x or i % 5 == 0 for i, x in enumerate(B)]
    n, n_resamples, seed = len(t), 1000, 4
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        gap = sum(int(t[i]) - int(s[i]) for i in idx)
        if gap:
            ratios.append(sum(int(d[i]) - int(s[i]) for i in idx) / gap)
    point, low, high = gap_closed_interval(t, s, d, n_resamples=n_resamples, seed=seed)
    assert point == pytest.approx((sum(d) - sum(s)) / (sum(t) - sum(s)))
    assert low == pytest.approx(_percentile(ratios, 0.025), abs=1e-12)
    assert high == pytest.approx(_percentile(ratios, 0.975), abs=1e-12)


def test_gap_closed_interval_without_a_gap() -> None:
    assert gap_closed_interval(B, B, A) == (None, None, None)
    assert gap_closed_interval([], [], []) == (None, None, None)
    # resamples without a gap are skipped: the point and interval still come out finite
    point, low, high = gap_closed_interval(
        [True, False, False], [False, False, False], [True, False, False], n_resamples=500
    )
    assert point == 1.0 and low == 1.0 and high == 1.0


# chi-square of the label distribution


def test_chi_square_labels_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    gold = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    predicted: list[str | None] = ["a"] * 70 + ["b"] * 15 + ["c"] * 10 + [None] * 5
    r = chi_square_labels(predicted, gold, ["a", "b", "c"])
    ref = stats.chisquare([70, 15, 10], [50 / 100 * 95, 30 / 100 * 95, 20 / 100 * 95])
    assert r.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert r.dof == 2 and r.not_answered == 5 and r.outside_gold == 0
    assert r.predicted_counts == {"a": 70, "b": 15, "c": 10}
    assert r.gold_counts == {"a": 50, "b": 30, "c": 20}
    assert r.p_value is not None and r.p_value < 1e-3  # over-predicts "a"


def test_chi_square_labels_drops_labels_without_gold() -> None:
    stats = pytest.importorskip("scipy.stats")
    gold = ["a"] * 6 + ["b"] * 4 + ["a"] * 2
    predicted: list[str | None] = [*["a"] * 5, *["b"] * 3, "c", "c", "zzz", None]
    r = chi_square_labels(predicted, gold, ["a", "b", "c"])
    assert r.tested == ("a", "b") and r.dof == 1
    assert r.gold_counts == {"a": 8, "b": 4, "c": 0}
    assert r.predicted_counts == {"a": 5, "b": 3, "c": 2}
    assert r.not_answered == 1 and r.outside_gold == 3  # two "c" (no gold) and "zzz"
    ref = stats.chisquare([5, 3], [8 / 12 * 8, 4 / 12 * 8])
    assert r.statistic == pytest.approx(ref.statistic) and r.p_value == pytest.approx(ref.pvalue)


def test_chi_square_labels_when_nothing_can_be_tested() -> None:
    r = chi_square_labels([None, None], ["a", "b"], ["a", "b"])
    assert r.statistic is None and r.p_value is None and r.not_answered == 2
    r = chi_square_labels(["a", "b"], ["a", "a"], ["a", "b"])  # one gold label only
    assert r.statistic is None and r.dof == 0 and r.outside_gold == 1


# compare_pairs


def _rows(role: str, correct: dict[str, bool]) -> list[dict[str, object]]:
    return [{"role": role, "example_id": i, "correct": c} for i, c in correct.items()]


def test_compare_pairs_aligns_by_example() -> None:
    student = {str(i): i % 3 == 0 for i in range(30)}
    distilled = {str(i): i % 3 != 1 for i in reversed(range(32))}  # other order, 2 extra ids
    rows = _rows("student", student) + _rows("distilled", distilled)
    (pair,) = compare_pairs(rows, ["teacher", "student", "distilled"])
    assert (pair["a"], pair["b"], pair["n"]) == ("distilled", "student", 30)
    assert pair["accuracy_a"] == pytest.approx(20 / 30)
    assert pair["accuracy_b"] == pytest.approx(10 / 30)
    assert pair["diff"] == pytest.approx(20 / 30 - 10 / 30)
    assert pair["diff_low"] < pair["diff"] < pair["diff_high"]
    assert pair["mcnemar_b10"] == 10 and pair["mcnemar_b01"] == 0
    assert pair["mcnemar_p"] == pytest.approx(2 * 0.5**10)


def test_compare_pairs_all_roles_and_restriction() -> None:
    ids = [str(i) for i in range(40)]
    rows = (
        _rows("teacher", {i: int(i) % 5 != 0 for i in ids})
        + _rows("student", {i: int(i) % 2 == 0 for i in ids})
        + _rows("distilled", {i: int(i) % 4 != 0 for i in ids})
        + _rows("control", {i: True for i in ids})
    )
    pairs = compare_pairs(rows, ["teacher", "student", "distilled", "control"])
    assert [(p["a"], p["b"]) for p in pairs] == [
        ("distilled", "student"),
        ("distilled", "teacher"),
        ("teacher", "student"),
    ]
    assert [(p["a"], p["b"]) for p in compare_pairs(rows, ["teacher", "student"])] == [
        ("teacher", "student")
    ]
    assert compare_pairs(rows, ["distilled"]) == []
    assert compare_pairs(rows) == pairs  # roles default to all present
    # no example in common: nothing to compare
    assert compare_pairs(_rows("teacher", {"x": True}) + _rows("student", {"y": True})) == []


def test_compare_scores_means_with_intervals_and_paired_differences() -> None:
    """Partial credit: each role's mean score with a bootstrap interval, and paired
    differences by example (the same resampling as the accuracy's, on floats)."""
    rng = np.random.default_rng(3)
    base = rng.random(200)
    student = {str(i): float(x) for i, x in enumerate(base)}
    distilled = {str(i): min(1.0, float(x) + 0.1) for i, x in enumerate(base)}
    rows = [
        {"role": role, "example_id": i, "score": s}
        for role, scores in (("student", student), ("distilled", distilled))
        for i, s in scores.items()
    ] + [{"role": "teacher", "example_id": "0", "score": None}]  # no score: left out
    out = _paired.compare_scores(rows, n_resamples=2000)
    by = {r["role"]: r for r in out["roles"]}
    assert set(by) == {"student", "distilled"} and by["student"]["n"] == 200
    assert by["student"]["mean"] == pytest.approx(float(base.mean()))
    assert by["student"]["ci_low"] < by["student"]["mean"] < by["student"]["ci_high"]
    (pair,) = out["paired"]
    expected = float(np.mean([distilled[i] - student[i] for i in student]))
    assert (pair["a"], pair["b"], pair["n"]) == ("distilled", "student", 200)
    assert pair["diff"] == pytest.approx(expected)
    # every example moves the same way: the paired interval is narrow and above zero
    assert 0 < pair["diff_low"] <= expected <= pair["diff_high"] < 0.1
    independent = by["distilled"]["ci_high"] - by["distilled"]["ci_low"]
    assert pair["diff_high"] - pair["diff_low"] < independent / 3
