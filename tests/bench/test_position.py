"""Position bias: every rotation of the options, letters scored."""

from __future__ import annotations

import pytest

from still.bench import MCItem, position_bias, rotations
from still.models import get_model

ITEMS = [
    MCItem(id=f"q{i}", question=f"Question {i}?", options=("w", "x", "y", "z"), answer=i % 4)
    for i in range(8)
]


def test_every_option_visits_every_position() -> None:
    for item in ITEMS:
        rots = rotations(item)
        assert sorted(ans for _, ans in rots) == [0, 1, 2, 3]
        assert all(opts[ans] == item.options[item.answer] for opts, ans in rots)


def test_a_model_that_always_says_a_is_maximally_biased() -> None:
    b = position_bias(get_model("scripted:first-label"), ITEMS)
    assert b.accuracy_by_position == {"A": 1.0, "B": 0.0, "C": 0.0, "D": 0.0}
    assert b.accuracy == pytest.approx(0.25)
    assert b.predicted_share["A"] == 1.0
    assert b.consistency == 0.0  # a different option each rotation
    assert b.chi2_p is not None and b.chi2_p < 1e-6
    assert b.n_questions == 8 and b.errors == 0


def test_mixed_option_counts_are_refused() -> None:
    odd = [*ITEMS, MCItem(id="x", question="?", options=("a", "b"), answer=0)]
    with pytest.raises(ValueError, match="same number of options"):
        position_bias(get_model("scripted:first-label"), odd)
