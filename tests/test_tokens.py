"""Token counts before a run: each model's own tokenizer, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from still.errors import ModelError
from still.tokens import (
    JSON_ANSWER_OVERHEAD,
    REPLY_PRIMING,
    TOKENS_PER_MESSAGE,
    counter_for,
    estimate,
)
from still.types import Message, Request, SamplingParams


def test_openai_models_use_their_bpe_encoding_offline() -> None:
    c = counter_for("openai:gpt-4o-mini")
    assert c.name == "o200k_base" and c.exact
    # A worked value: o200k_base encodes this as [13225, 2375, 11, 1495, 553, 481, 30].
    assert c.text("Hello world, how are you?") == 7
    msgs = (Message(role="system", content="Be brief."), Message(role="user", content="Hi"))
    expected = sum(TOKENS_PER_MESSAGE + c.text(m.role) + c.text(m.content) for m in msgs)
    assert c.prompt(msgs) == expected + REPLY_PRIMING
    assert counter_for("openai:gpt-4").name == "cl100k_base"


def test_unknown_models_fall_back_to_o200k_marked_approximate() -> None:
    for ref in ("azure:my-deployment", "http://127.0.0.1:9/v1#x", "scripted:echo"):
        c = counter_for(ref)
        assert c.name == "o200k_base" and not c.exact, ref


def test_local_models_count_exactly_what_the_provider_feeds(tiny_model: Path) -> None:
    from still.models._local import LocalProvider

    ref = f"local:{tiny_model}"
    msgs = (Message(role="user", content="where is the river bank?"),)
    c = counter_for(ref)
    assert c.exact and c.name == tiny_model.name
    assert c.prompt(msgs) == len(LocalProvider(ref, tiny_model).prompt_ids(msgs))


def test_task_overrides_name_a_tokenizer(tiny_model: Path) -> None:
    ref = "http://127.0.0.1:9/v1#student"
    assert counter_for(ref, {ref: "cl100k_base"}).name == "cl100k_base"
    assert counter_for(ref, {ref: f"local:{tiny_model}"}).exact
    with pytest.raises(ModelError, match="neither a local model .* nor an OpenAI encoding"):
        counter_for(ref, {ref: "no-such-tokenizer"})


def test_estimate_bounds_answers_by_label_or_max_tokens() -> None:
    c = counter_for("openai:gpt-4o")
    msgs = (Message(role="user", content="Is this spam?"),)
    scored = Request(model="openai:gpt-4o", messages=msgs, labels=("ham", "spam", "unsure"))
    longest = max(c.text(x) for x in ("ham", "spam", "unsure"))
    assert estimate(c, scored).output_max == longest + JSON_ANSWER_OVERHEAD
    free = Request(model="openai:gpt-4o", messages=msgs, params=SamplingParams(max_tokens=40))
    est = estimate(c, free)
    assert est.output_max == 40 and est.prompt == c.prompt(msgs)
