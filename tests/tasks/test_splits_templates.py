"""Splits are deterministic, disjoint and stable; templates fail loudly and never leak."""

from __future__ import annotations

import pytest

from still.tasks import Example, SplitSpec, TemplateError, render, role_context, split_examples
from still.tasks._example import example_id


def _examples(n: int, start: int = 0) -> list[Example]:
    out = []
    for i in range(start, start + n):
        fields = {"text": f"q{i}", "label": ["a", "b", "c"][i % 3]}
        out.append(Example(id=example_id(fields), fields=fields, answer=fields["label"], source=""))
    return out


def test_split_is_deterministic_and_disjoint() -> None:
    exs = _examples(100)
    spec = SplitSpec(seed=3, heldout=20, validation=0)
    one = split_examples(exs, spec, fewshot=6)
    two = split_examples(list(reversed(exs)), spec, fewshot=6)
    assert [e.id for e in one.heldout] == [e.id for e in two.heldout]
    assert len(one.heldout) == 20 and len(one.fewshot) == 6 and len(one.train) == 74
    ids = [{e.id for e in part} for part in (one.train, one.heldout, one.fewshot)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    other = split_examples(exs, SplitSpec(seed=4, heldout=20), fewshot=6)
    assert {e.id for e in other.heldout} != ids[1]


def test_fractions_caps_and_balanced_fewshot() -> None:
    exs = _examples(50)
    split = split_examples(exs, SplitSpec(heldout=0.1, train=10), fewshot=3)
    assert 1 <= len(split.heldout) <= 12 and len(split.train) == 10
    assert sorted(e.answer for e in split.fewshot) == ["a", "b", "c"]


def test_appending_rows_never_moves_heldout_into_train() -> None:
    spec = SplitSpec(seed=0, heldout=0.2)
    before = split_examples(_examples(200), spec)
    after = split_examples(_examples(200) + _examples(50, start=200), spec)
    old_held = {e.id for e in before.heldout}
    assert not old_held & {e.id for e in after.train}


def test_missing_template_variable_names_itself_and_the_template() -> None:
    ex = _examples(1)[0]
    ctx = role_context(ex, ["a", "b"], [])
    assert render("{{ text }} in {{ labels | join(', ') }}", ctx, name="t") == "q0 in a, b"
    with pytest.raises(TemplateError, match=r"prompts.teacher.template: 'question' is undefined"):
        render("{{ question }}", ctx, name="prompts.teacher.template")
    with pytest.raises(TemplateError, match="available fields: label, text"):
        render("{{ question }}", ctx, name="x")


def test_the_reference_answer_is_not_shown_but_fewshot_answers_are() -> None:
    ex, shot = _examples(2)
    ctx = role_context(ex, None, [shot])
    assert "answer" not in ctx
    assert ctx["fewshot"] == [{**shot.fields, "answer": shot.answer}]
