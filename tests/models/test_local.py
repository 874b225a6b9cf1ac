"""The local provider on tiny random models: scoring is exact, generation is complete."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch

from still.errors import ModelError
from still.models import get_model
from still.models._local import LocalProvider, padded_passes
from still.types import Message, Request, SamplingParams

LABELS = ("human", "location", "number", "abbreviation")
PREFIX = "Classify the question by the type of its answer. " * 4


def _req(model: str, q: str, labels: tuple[str, ...] | None = LABELS, **kw: object) -> Request:
    msgs = (Message(role="system", content=PREFIX), Message(role="user", content=q))
    return Request(model=model, messages=msgs, labels=labels, **kw)  # type: ignore[arg-type]


def _naive(p: LocalProvider, req: Request, label: str) -> float:
    """Log-likelihood of a label from one full forward pass, no cache, no tricks."""
    prompt = p.render(req.messages)
    ids, lab = p.prompt_ids(req.messages), p.label_ids(prompt, label)
    with torch.no_grad():
        logits = p.model(torch.tensor([ids + lab])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(lab))


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_base_model"])
def test_scoring_matches_naive_forward(fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(fixture)
    p = get_model(f"local:{path}")
    assert isinstance(p, LocalProvider)
    qs = ["Who wrote the play?", "Where is the river?", "How many days?"]
    reqs = [_req(p.name, q) for q in qs]
    outs = p.complete(reqs)
    assert p._prefix is not None, "the shared system prompt should be cached"
    for req, c in zip(reqs, outs, strict=True):
        assert c.ok and c.label_logprobs is not None
        assert c.text == max(c.label_logprobs, key=lambda k: c.label_logprobs[k])  # type: ignore[index]
        for lab in LABELS:
            assert c.label_logprobs[lab] == pytest.approx(_naive(p, req, lab), abs=1e-4)
        assert c.usage.prompt_tokens == len(p.prompt_ids(req.messages))
    # a second batch reuses the cached prefix and still scores exactly
    again = p.complete([_req(p.name, "What does NASA stand for?")])[0]
    assert again.label_logprobs["number"] == pytest.approx(  # type: ignore[index]
        _naive(p, _req(p.name, "What does NASA stand for?"), "number"), abs=1e-4
    )


def test_generation_batched_with_usage_and_logprobs(tiny_model: Path) -> None:
    p = get_model(f"local:{tiny_model}")
    params = SamplingParams(max_tokens=5)
    reqs = [
        _req(p.name, q, labels=None, params=params, logprobs=True)
        for q in ["Who?", "Where is the long river of the north?"]
    ]
    outs = p.complete(reqs)
    for c in outs:
        assert c.ok, c.error
        assert c.finish_reason in ("stop", "length")
        assert 0 < c.usage.completion_tokens <= 5
        assert c.token_logprobs is not None and len(c.token_logprobs) == c.usage.completion_tokens
        assert all(lp <= 0 for lp in c.token_logprobs)
    # left padding must not change the answer: alone, the short prompt answers the same
    alone = p.complete([reqs[0]])[0]
    assert alone.text == outs[0].text


def test_sampling_with_seed_is_reproducible(tiny_model: Path) -> None:
    p = get_model(f"local:{tiny_model}")
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=7)
    req = _req(p.name, "Who?", labels=None, params=params)
    assert p.complete([req])[0].text == p.complete([req])[0].text


def test_a_failing_batch_becomes_failed_completions(tiny_model: Path) -> None:
    p = get_model(f"local:{tiny_model}")
    outs = p.complete([_req(p.name, "Who?", labels=("human", "")), _req(p.name, "Where?")])
    assert not outs[0].ok and "tokenizes to nothing" in (outs[0].error or "")
    assert outs[1].ok, "a bad request must not fail the rest of its batch"


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(ModelError, match="local:smollm2-135m-instruct"):
        get_model("nonsense-model")
    with pytest.raises(ModelError, match="local:gemma3-270m"):
        get_model("local:not-a-model")


def test_requests_with_different_label_sets_share_a_batch(tiny_model: Path) -> None:
    p = get_model(f"local:{tiny_model}")
    assert isinstance(p, LocalProvider)
    reqs = [_req(p.name, "Who?", labels=("human", "number")), _req(p.name, "Where?")]
    outs = p.complete(reqs)
    assert set(outs[0].label_logprobs or {}) == {"human", "number"}
    assert set(outs[1].label_logprobs or {}) == set(LABELS)
    for req, c in zip(reqs, outs, strict=True):
        for lab in req.labels or ():
            assert c.label_logprobs[lab] == pytest.approx(_naive(p, req, lab), abs=1e-4)  # type: ignore[index]


def test_stream_stops_at_a_stop_sequence_and_reports_usage(tiny_model: Path) -> None:
    from still.types import Usage

    p = LocalProvider("tiny", tiny_model)
    msgs = (Message(role="user", content="tell me about the river"),)
    full_req = Request(model="tiny", messages=msgs, params=SamplingParams(max_tokens=24))
    usage: list[Usage] = []
    full = "".join(p.stream(full_req, usage))
    assert usage[0].completion_tokens == p.complete([full_req])[0].usage.completion_tokens
    assert usage[0].prompt_tokens == len(p.prompt_ids(msgs))
    words = full.split()
    assert len(words) >= 3, full  # the tiny model babbles for all 24 tokens
    stop = words[len(words) // 2]
    stopped_req = full_req.model_copy(
        update={"params": SamplingParams(max_tokens=24, stop=(stop,))}
    )
    usage2: list[Usage] = []
    text = "".join(p.stream(stopped_req, usage2))
    assert text == full[: full.index(stop)]
    # decoding stopped with the stream, not at max_tokens
    assert usage2[0].completion_tokens < usage[0].completion_tokens


def test_batched_generation_stops_decoding_at_a_stop_string(tiny_model: Path) -> None:
    p = LocalProvider("tiny", tiny_model)
    msgs = (Message(role="user", content="tell me about the river"),)
    full = p.complete([Request(model="tiny", messages=msgs, params=SamplingParams(max_tokens=24))])[
        0
    ]
    # a plain-letters stop string in the second half (the random model also emits stray
    # bytes, which no stop string can match)
    import re

    half = full.text[len(full.text) // 2 :]
    match = re.search(r"[A-Za-z]{3,}", half)
    assert match, full.text
    stop = match.group()
    cut = p.complete(
        [Request(model="tiny", messages=msgs, params=SamplingParams(max_tokens=24, stop=(stop,)))]
    )[0]
    assert cut.text == full.text[: full.text.index(stop)].strip()
    assert cut.finish_reason == "stop"
    assert cut.usage.completion_tokens < full.usage.completion_tokens  # decoding stopped early


STEP_S = 0.25
"""Sleep added to every forward pass of the timing tests: the passes dominate the clock."""


def _slow_passes(p: LocalProvider, monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """Make every forward pass of `p` take STEP_S longer; returns when each pass began and
    ended."""
    passes: list[tuple[float, float]] = []
    real = p.model.forward

    def slow(*args: Any, **kw: Any) -> Any:
        began = time.perf_counter()
        time.sleep(STEP_S)
        out = real(*args, **kw)
        passes.append((began, time.perf_counter()))
        return out

    monkeypatch.setattr(p.model, "forward", slow)
    return passes


def test_generated_ttft_is_each_requests_wait_for_the_batch_prefill(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of 4 generations: every request waited for the whole prefill before its first
    token (not a quarter of it), and got it before the second pass ended (its first token,
    not its whole answer). latency_s stays the batch's cost shared per example."""
    p = LocalProvider("tiny", tiny_model)
    passes = _slow_passes(p, monkeypatch)
    params = SamplingParams(max_tokens=4)
    qs = ["Who?", "Where is it?", "How many rivers?", "What is the longest river?"]
    start = time.perf_counter()
    outs = p.complete([_req(p.name, q, labels=None, params=params) for q in qs])
    wall = time.perf_counter() - start
    assert len(passes) >= 2, "a prefill, then at least one decoding step"
    prefill = passes[0][1] - passes[0][0]
    for c in outs:
        assert c.ok and c.ttft_s is not None, c.error
        assert prefill <= c.ttft_s < passes[1][1] - start
        assert c.latency_s == pytest.approx(wall / len(qs), rel=0.2)


def test_scored_ttft_is_the_batch_wall_time(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scored answer exists only when the batch's scoring passes end: each of 4 requests
    has that whole wall time as its ttft_s (latency_s is a quarter of it)."""
    p = LocalProvider("tiny", tiny_model)
    passes = _slow_passes(p, monkeypatch)
    qs = ["Who wrote the play?", "Where is the river?", "How many days?", "What is NASA?"]
    outs = p.complete([_req(p.name, q) for q in qs])
    for c in outs:
        assert c.ok and c.ttft_s is not None, c.error
        assert c.ttft_s >= passes[-1][1] - passes[0][0]  # from the first pass to the last
        assert c.ttft_s == pytest.approx(len(qs) * c.latency_s)


def test_different_seeds_sample_different_answers(tiny_model: Path) -> None:
    """At temperature 1 the same seed samples the same answers and another seed different
    ones (under greedy decoding every seed would give the same answers)."""
    p = get_model(f"local:{tiny_model}")
    qs = ["Who?", "Where is the river?", "How many days?", "What is a cat?"]

    def answers(seed: int) -> list[str]:
        params = SamplingParams(max_tokens=8, temperature=1.0, seed=seed)
        return [c.text for c in p.complete([_req(p.name, q, None, params=params) for q in qs])]

    first = answers(1)
    assert answers(1) == first
    assert answers(2) != first


def test_padded_passes_give_an_outlier_a_pass_of_its_own() -> None:
    """Rows are grouped shortest first while rows x longest row fits the budget: seven short
    rows share a pass, a row that would make it pad to its length goes alone, and a row
    longer than the budget is still answered, alone."""
    lengths = [100, 9000, 90, 110, 95, 4700, 105, 99]
    passes = padded_passes(lengths, 16384)
    assert passes == [[2, 4, 7, 0, 6, 3], [5], [1]]
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    for p in passes:
        assert len(p) == 1 or len(p) * max(lengths[i] for i in p) <= 16384
    assert padded_passes([50] * 8, 16384) == [list(range(8))]  # a typical batch stays whole
    assert padded_passes([], 100) == []


def test_a_long_prompt_is_scored_in_its_own_pass(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One prompt far longer than the rest gets a forward pass of its own (the short ones
    are not padded to it), and every request is scored as it is alone."""
    p = LocalProvider("tiny", tiny_model)
    qs = ["Who wrote the play?", "Where? " * 60, "How many days?", "What is NASA?"]
    reqs = [_req(p.name, q) for q in qs]
    short = max(len(p.prompt_ids(r.messages)) for i, r in enumerate(reqs) if i != 1)
    p.pass_tokens = 3 * short  # the three short ones fit
    sizes: list[int] = []
    score = p._score

    def counted(batch: list[Request]) -> list[Any]:
        sizes.append(len(batch))
        return score(batch)

    monkeypatch.setattr(p, "_score", counted)
    outs = p.complete(reqs)
    assert sorted(sizes) == [1, 3]
    for req, c in zip(reqs, outs, strict=True):
        assert c.ok and c.label_logprobs is not None, c.error
        assert c.label_logprobs["human"] == pytest.approx(_naive(p, req, "human"), abs=1e-4)
