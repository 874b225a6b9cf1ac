"""Grade the grader: kappa, confusion and accuracy by hand, checked against scikit-learn."""

from __future__ import annotations

import json
import math
import random

import pytest

from still.bench import (
    FAILED,
    Agreement,
    GraderNotTrusted,
    agreement,
    check_trust,
    cohen_kappa,
    wilson,
)


def _wikipedia() -> tuple[list[str], list[str]]:
    """Wikipedia's Cohen's kappa example: 50 proposals read by two readers, A and B.

    20 both yes, 15 both no, 5 A yes / B no, 10 A no / B yes: p_o = 0.7, p_e = 0.5,
    kappa = 0.4."""
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    return [a for a, _ in pairs], [b for _, b in pairs]


def test_worked_example_has_kappa_0_4() -> None:
    gold, pred = _wikipedia()
    a = agreement(gold, pred)
    assert a.n == 50
    assert a.labels == ["no", "yes"]
    assert a.confusion == [[15, 10], [5, 20]]  # rows gold (A), columns predicted (B)
    assert a.accuracy == pytest.approx(0.7)
    assert a.kappa == pytest.approx(0.4)
    assert cohen_kappa([[20, 5], [10, 15]]) == pytest.approx(0.4)
    assert a.accuracy_ci == wilson(35, 50)
    assert a.accuracy_ci[0] < 0.7 < a.accuracy_ci[1]


INPUTS = [
    # (gold, predicted): binary, multi-class, with failures, skewed
    _wikipedia(),
    (
        ["cat", "dog", "bird", "cat", "dog", "bird", "cat", "cat"],
        ["cat", "dog", "cat", "cat", "bird", "bird", "dog", "cat"],
    ),
    (
        ["pass", "fail", "pass", "pass", "fail", "pass", "fail", "pass"],
        ["pass", None, "pass", "fail", "fail", None, "pass", "pass"],
    ),
    (["pass"] * 9 + ["fail"], ["pass"] * 10),
    (["pass", "fail", "pass", "fail"], ["fail", "pass", "fail", "pass"]),
]


@pytest.mark.parametrize("gold,pred", INPUTS)
def test_matches_sklearn(gold: list[str], pred: list[str | None]) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    a = agreement(gold, pred)
    filled = [FAILED if p is None else p for p in pred]
    expected = metrics.confusion_matrix(gold, filled, labels=a.labels)
    assert a.confusion == expected.tolist()
    assert a.kappa == pytest.approx(metrics.cohen_kappa_score(gold, filled), abs=1e-9)
    assert a.accuracy == pytest.approx(metrics.accuracy_score(gold, filled))


def test_matches_sklearn_on_random_labels() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = random.Random(7)
    for _ in range(20):
        gold = [rng.choice("abc") for _ in range(40)]
        pred: list[str | None] = [
            g if rng.random() < 0.6 else rng.choice(["a", "b", "c", None]) for g in gold
        ]
        a = agreement(gold, pred)
        filled = [FAILED if p is None else p for p in pred]
        assert a.kappa == pytest.approx(metrics.cohen_kappa_score(gold, filled), abs=1e-9)
        assert a.confusion == metrics.confusion_matrix(gold, filled, labels=a.labels).tolist()


def test_failed_predictions_are_a_disagreement_column() -> None:
    a = agreement(["pass", "pass", "fail"], ["pass", None, "fail"])
    assert a.labels == ["fail", "pass", FAILED]
    assert a.confusion == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    assert a.accuracy == pytest.approx(2 / 3)  # the failure is not dropped
    assert a.failed == 1
    assert a.kappa < 1.0
    assert FAILED not in agreement(["pass"], ["pass"]).labels


def test_a_grader_that_passes_everything_has_kappa_zero() -> None:
    a = agreement(["pass"] * 9 + ["fail"], ["pass"] * 10)
    assert a.accuracy == pytest.approx(0.9)
    assert a.kappa == 0.0
    assert f"{a.kappa:.2f}" == "0.00"  # rounded: never "-0.00"


def test_perfect_and_inverted_graders() -> None:
    gold = ["pass", "fail"] * 5
    assert agreement(gold, gold).kappa == pytest.approx(1.0)
    flipped = ["fail" if g == "pass" else "pass" for g in gold]
    assert agreement(gold, flipped).kappa == pytest.approx(-1.0)


def test_kappa_undefined_when_everything_is_one_label() -> None:
    a = agreement(["pass"] * 4, ["pass"] * 4)
    assert a.accuracy == 1.0
    assert math.isnan(a.kappa)
    with pytest.raises(GraderNotTrusted, match="undefined"):
        check_trust(a, min_kappa=0.5, force=False)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        agreement(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no items"):
        agreement([], [])
    with pytest.raises(ValueError, match="reserved"):
        agreement([FAILED], ["a"])


def test_table() -> None:
    a = agreement(["pass", "pass", "fail", "fail"], ["pass", None, "fail", "pass"])
    lines = a.table().splitlines()
    assert lines[0].split("|")[1:-1] == [
        " gold \\ predicted ",
        " fail ",
        " pass ",
        " (failed) ",
    ]
    assert set(lines[1]) <= {"|", "-", ":"}
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == ["fail", "1", "1", "0"]
    assert [c.strip() for c in lines[3].split("|")[1:-1]] == ["pass", "0", "1", "1"]
    assert len(lines) == 4  # no row for "(failed)": gold never fails
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_check_trust() -> None:
    gold, pred = _wikipedia()
    a = agreement(gold, pred)
    check_trust(a, min_kappa=0.4, force=False)  # at the minimum: trusted
    with pytest.raises(GraderNotTrusted) as info:
        check_trust(a, min_kappa=0.6, force=False)
    msg = str(info.value)
    assert "kappa 0.40" in msg and "accuracy 70.0%" in msg and "50 items" in msg
    assert "minimum kappa 0.6" in msg and "--force" in msg
    check_trust(a, min_kappa=0.6, force=True)  # forced: no error
    assert isinstance(info.value, RuntimeError)


def test_check_trust_names_the_grader_and_the_command_that_checks_it() -> None:
    a = agreement(["pass", "fail"] * 3, ["pass"] * 6)
    with pytest.raises(GraderNotTrusted, match=r"'verdict' .*check-grader TASK --grader verdict"):
        check_trust(a, min_kappa=0.5, force=False, grader="verdict")
    with pytest.raises(GraderNotTrusted, match="never checked .*--force"):
        check_trust(None, min_kappa=0.5, force=False, grader="verdict")
    check_trust(None, min_kappa=0.5, force=True, grader="verdict")


def test_a_recorded_agreement_reads_back_equal() -> None:
    a = agreement(["pass", "fail", "pass"], [None, "fail", "fail"])
    assert Agreement.from_record(json.loads(json.dumps(a.as_record()))) == a


def test_check_trust_mentions_failures() -> None:
    a = agreement(["pass", "fail", "pass"], [None, "fail", "fail"])
    with pytest.raises(GraderNotTrusted, match="1 failed"):
        check_trust(a, min_kappa=0.9, force=False)


def test_agreement_is_a_plain_dataclass() -> None:
    a = Agreement(n=1, accuracy=1.0, kappa=1.0, labels=["x"], confusion=[[1]], accuracy_ci=(0, 1))
    assert a.failed == 0
