"""Paired statistics, checked against scipy and statsmodels on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest

from still.bench._paired import compare_pairs, gap_closed_interval, mcnemar_exact, paired_bootstrap

RNG = np.random.default_rng(7)
A = list(RNG.random(300) < 0.6)
B = list(RNG.random(300) < 0.45)


def test_mcnemar_matches_statsmodels() -> None:
    sm = pytest.importorskip("statsmodels.stats.contingency_tables")
    m = mcnemar_exact(A, B)
    both = sum(x and y for x, y in zip(A, B, strict=True))
    neither = sum(not x and not y for x, y in zip(A, B, strict=True))
    table = [[both, m.b10], [m.b01, neither]]
    assert m.p_value == pytest.approx(sm.mcnemar(table, exact=True).pvalue, rel=1e-9)
    assert mcnemar_exact([True, False], [True, False]).p_value == 1.0


def test_paired_bootstrap_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    diff, low, high = paired_bootstrap(A, B, n_resamples=5000)
    x = np.asarray(A, float) - np.asarray(B, float)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=5000, method="percentile", random_state=0
    ).confidence_interval
    assert diff == pytest.approx(x.mean())
    assert low == pytest.approx(ref.low, abs=0.01) and high == pytest.approx(ref.high, abs=0.01)
    assert low < diff < high
    assert paired_bootstrap(A, B, n_resamples=5000) == (diff, low, high)  # seeded


def test_gap_closed_interval_contains_the_point() -> None:
    n = 200
    teacher = [i < 120 for i in range(n)]  # 60%
    base = [i < 60 for i in range(n)]  # 30%
    distilled = [i < 90 for i in range(n)]  # 45%
    point, low, high = gap_closed_interval(teacher, base, distilled, n_resamples=2000)
    assert point == pytest.approx(0.5)
    assert low is not None and high is not None and low <= 0.5 <= high
    assert gap_closed_interval(base, base, distilled) == (None, None, None)


def test_unequal_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([True], [True, False])


def test_compare_pairs_aligns_by_example() -> None:
    rows = [{"role": "student", "example_id": str(i), "correct": i % 3 == 0} for i in range(30)]
    rows += [{"role": "distilled", "example_id": str(i), "correct": i % 3 != 1} for i in range(30)]
    (pair,) = compare_pairs(rows)
    assert (pair["a"], pair["b"], pair["n"]) == ("distilled", "student", 30)
    assert pair["diff"] == pytest.approx(20 / 30 - 10 / 30)
    assert pair["mcnemar_b10"] == 10 and pair["mcnemar_b01"] == 0
