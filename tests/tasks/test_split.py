"""Splits: deterministic by seed and id, disjoint, stable when rows are appended."""

from __future__ import annotations

from collections import Counter

import pytest

from still.tasks import Example, Split, SplitSpec, TaskError, example_id, split_examples

LABELS = ["human", "location", "number"]


def make(n: int, start: int = 0, labels: list[str] = LABELS) -> list[Example]:
    out = []
    for i in range(start, start + n):
        fields = {"text": f"question {i}"}
        answer = labels[i % len(labels)]
        out.append(
            Example(
                id=example_id({**fields, "label": answer}),
                fields=fields,
                answer=answer,
                source=f"data.jsonl:{i + 1}",
            )
        )
    return out


def ids(examples: list[Example]) -> set[str]:
    return {e.id for e in examples}


def parts(split: Split) -> tuple[set[str], set[str], set[str]]:
    return ids(split.train), ids(split.heldout), ids(split.fewshot)


def test_same_seed_same_split_whatever_the_row_order() -> None:
    examples = make(100)
    a = split_examples(examples, SplitSpec(seed=3, heldout=20), fewshot=4)
    b = split_examples(list(reversed(examples)), SplitSpec(seed=3, heldout=20), fewshot=4)
    assert a == b


def test_different_seed_different_split() -> None:
    examples = make(100)
    a = split_examples(examples, SplitSpec(seed=0, heldout=20))
    b = split_examples(examples, SplitSpec(seed=1, heldout=20))
    assert ids(a.heldout) != ids(b.heldout)


def test_parts_are_disjoint_and_cover_everything() -> None:
    examples = make(60)
    split = split_examples(examples, SplitSpec(seed=0, heldout=10, validation=8), fewshot=6)
    train, held, shots = parts(split)
    val = ids(split.validation)
    assert len(held) == 10 and len(shots) == 6 and len(val) == 8 and len(train) == 36
    assert not train & held and not train & shots and not held & shots
    assert not val & (train | held | shots)
    assert train | held | shots | val == ids(examples)


def test_validation_zero_means_none_and_leaves_train_as_before() -> None:
    split = split_examples(make(60), SplitSpec(seed=0, heldout=10, validation=0), fewshot=6)
    assert split.validation == [] and len(split.train) == 44


def test_a_validation_fraction_is_about_that_share_and_never_touches_heldout() -> None:
    examples = make(1000)
    split = split_examples(examples, SplitSpec(seed=0, heldout=100, validation=0.1))
    assert 60 <= len(split.validation) <= 140
    assert not ids(split.validation) & ids(split.heldout)
    # the test part is the same whatever the validation size: choosing never moves it
    other = split_examples(examples, SplitSpec(seed=0, heldout=100, validation=0.3))
    assert ids(other.heldout) == ids(split.heldout)


def test_appended_rows_never_move_an_old_example_out_of_validation_by_fraction() -> None:
    old, new = make(300), make(300) + make(100, start=300)
    a = split_examples(old, SplitSpec(seed=2, heldout=0.2, validation=0.15))
    b = split_examples(new, SplitSpec(seed=2, heldout=0.2, validation=0.15))
    held_b = ids(b.heldout)
    moved = [e for e in a.validation if e.id not in ids(b.validation) and e.id not in held_b]
    assert not moved
    assert not ids(a.train) & ids(b.validation)


def test_fraction_heldout_is_about_the_fraction_and_at_least_one() -> None:
    assert 160 <= len(split_examples(make(1000), SplitSpec(seed=0, heldout=0.2)).heldout) <= 240
    assert len(split_examples(make(3), SplitSpec(seed=0, heldout=0.01)).heldout) == 1


def test_train_cap() -> None:
    split = split_examples(make(100), SplitSpec(seed=0, heldout=10, train=25), fewshot=3)
    assert len(split.train) == 25 and len(split.fewshot) == 3


def test_count_heldout_appending_rows_never_moves_train_into_heldout() -> None:
    old = make(100)
    new = old + make(30, start=100)
    a = split_examples(old, SplitSpec(seed=0, heldout=20))
    b = split_examples(new, SplitSpec(seed=0, heldout=20))
    old_ids = ids(old)
    assert (ids(b.heldout) & old_ids) <= ids(a.heldout)
    assert not ids(a.train) & ids(b.heldout)


def test_fraction_heldout_appending_rows_moves_no_old_example() -> None:
    old = make(400)
    new = old + make(100, start=400)
    a = split_examples(old, SplitSpec(seed=5, heldout=0.25))
    b = split_examples(new, SplitSpec(seed=5, heldout=0.25))
    moved = ids(a.heldout) ^ (ids(b.heldout) & ids(old))
    assert not moved, "each example's side depends on its own id only"


def test_fewshot_covers_every_label_and_each_prefix_is_balanced() -> None:
    split = split_examples(make(60), SplitSpec(seed=0, heldout=10), fewshot=6)
    answers = [e.answer for e in split.fewshot]
    assert Counter(answers) == {label: 2 for label in LABELS}
    assert set(answers[:3]) == set(LABELS)


def test_fewshot_with_a_rare_label_still_shows_it() -> None:
    examples = make(40, labels=["common"]) + make(2, start=40, labels=["rare"])
    split = split_examples(examples, SplitSpec(seed=0, heldout=1), fewshot=4)
    assert "rare" in {e.answer for e in split.fewshot}


def test_fewshot_examples_are_removed_from_train() -> None:
    split = split_examples(make(30), SplitSpec(seed=0, heldout=5), fewshot=5)
    train, held, shots = parts(split)
    assert len(shots) == 5 and not shots & train and not shots & held


def test_impossible_splits_are_errors() -> None:
    with pytest.raises(TaskError, match="no training examples"):
        split_examples(make(5), SplitSpec(heldout=5))
    with pytest.raises(TaskError, match="no training examples"):
        split_examples(make(5), SplitSpec(heldout=2), fewshot=3)
    with pytest.raises(ValueError, match="whole count"):
        split_examples(make(5), SplitSpec(heldout=1.5))
    with pytest.raises(ValueError, match="duplicate ids"):
        split_examples(make(5) + make(1), SplitSpec(heldout=1))
    with pytest.raises(TaskError, match="no examples"):
        split_examples([], SplitSpec())
