"""Seeded sampling in the local provider is batched, yet a row's answer is its request's alone.

Every row samples from its own generator (`still.models._seeded`): these tests check that a
seeded request answers the same alone and among others, that the seed decides its answer,
that the sampler samples the warped softmax (not merely some deterministic function of the
seed), and that a batch of seeded requests is one generate() call.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from still.models import get_model
from still.models._local import LocalProvider
from still.models._seeded import model_top_k
from still.types import Message, Request, SamplingParams


def _provider(path: Path) -> LocalProvider:
    p = get_model(f"local:{path}")
    assert isinstance(p, LocalProvider)
    return p


def _req(p: LocalProvider, q: str, **params: Any) -> Request:
    sampling = SamplingParams(**{"max_tokens": 8, "temperature": 1.0, **params})
    msgs = (Message(role="user", content=q),)
    return Request(model=p.name, messages=msgs, params=sampling, logprobs=True)


QUESTIONS = [
    "Who?",
    "Where is the long river of the north that runs to the sea?",
    "How many days?",
    "What is a cat, and what does NASA stand for in the end?",
    "the a of to",
]


def test_a_seeded_answer_is_the_same_alone_and_in_any_batch(tiny_model: Path) -> None:
    """Rows of different prompt lengths, seeds, temperatures and top_p share one batch and
    each answers as it does alone (rows sharing one generator would not)."""
    p = _provider(tiny_model)
    reqs = [
        _req(p, q, seed=10 + i, temperature=(1.0, 0.7, 1.5)[i % 3], top_p=(1.0, 0.9)[i % 2])
        for i, q in enumerate(QUESTIONS)
    ]
    batched = p.complete(reqs)
    reversed_ = p.complete(reqs[::-1])[::-1]
    for req, c, r in zip(reqs, batched, reversed_, strict=True):
        alone = p.complete([req])[0]
        assert c.ok and alone.ok, (c.error, alone.error)
        assert c.tokens == alone.tokens == r.tokens
        assert c.text == alone.text
        assert c.token_logprobs is not None and alone.token_logprobs is not None
        assert c.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-4)
        assert all(-math.inf < lp <= 0 for lp in c.token_logprobs)
    # and a streamed seeded request samples the same answer
    assert "".join(p.stream(reqs[1])).strip() == batched[1].text


def test_the_seed_decides_the_answer(tiny_model: Path) -> None:
    p = _provider(tiny_model)
    q = "Where is the river?"
    first = p.complete([_req(p, q, seed=s) for s in range(6)])
    again = p.complete([_req(p, q, seed=s) for s in range(6)])
    assert [c.tokens for c in again] == [c.tokens for c in first]
    # one prompt, six seeds, in one batch: at temperature 1 the answers differ
    assert len({c.tokens for c in first}) >= 4


def test_the_first_token_is_a_sample_of_the_warped_softmax(tiny_model: Path) -> None:
    """Over many seeds the first token's frequencies match softmax(logits / T) (cut to the
    model's top_k, as generate() samples), and not softmax(logits): a chi-square test."""
    p = _provider(tiny_model)
    q, temperature, n = "What is a cat?", 0.7, 3000
    reqs = [_req(p, q, seed=s, temperature=temperature, max_tokens=1) for s in range(n)]
    outs = p.complete(reqs)
    eos = p._eos()
    seen = Counter(c.tokens[0] if c.tokens else "<eos>" for c in outs)

    ids = torch.tensor([p.prompt_ids(reqs[0].messages)])
    with torch.no_grad():
        logits = p.model(ids).logits[0, -1].float()

    def expected(t: float) -> dict[str, float]:
        scaled = logits / t
        kth = scaled.topk(model_top_k(p.model.generation_config)).values[-1]
        probs = torch.softmax(scaled.masked_fill(scaled < kth, -math.inf), -1)
        out: Counter[str] = Counter()
        for i, pr in enumerate(probs.tolist()):
            if pr > 0:
                out["<eos>" if i in eos else p.tokenizer.decode([i])] += pr
        return dict(out)

    def chi2(probs: dict[str, float]) -> tuple[float, int]:
        """The statistic and its degrees of freedom, tokens expected < 5 times lumped."""
        big = {k for k, pr in probs.items() if pr * n >= 5}
        rest_p = 1 - sum(probs[k] for k in big)
        rest_seen = n - sum(seen[k] for k in big)
        stat = sum((seen[k] - n * probs[k]) ** 2 / (n * probs[k]) for k in big)
        if rest_p * n >= 1:
            stat += (rest_seen - n * rest_p) ** 2 / (n * rest_p)
        return stat, len(big)

    stat, df = chi2(expected(temperature))
    assert df >= 5, "the prompt's first token should spread over several tokens"
    # about 4.5 standard deviations above the mean of a chi-square with df degrees
    assert stat < df + 4.5 * math.sqrt(2 * df), (stat, df)
    wrong, wrong_df = chi2(expected(1.0))
    assert wrong > wrong_df + 4.5 * math.sqrt(2 * wrong_df), "the test should tell T apart"
    # each answer's logprob is its token's log-probability under the warped softmax
    # (for tokens that decode to a text no other token decodes to)
    texts = Counter(p.tokenizer.decode([i]) for i in range(logits.shape[0]))
    probs = expected(temperature)
    checked = 0
    for c in outs[:100]:
        if c.tokens and texts[c.tokens[0]] == 1 and c.token_logprobs:
            assert c.token_logprobs[0] == pytest.approx(math.log(probs[c.tokens[0]]), abs=1e-4)
            checked += 1
    assert checked >= 20


def test_seeded_requests_share_generate_calls(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = _provider(tiny_model)
    calls: list[int] = []
    generate = p.model.generate

    def counting(*args: Any, **kw: Any) -> Any:
        calls.append(int(kw["input_ids"].shape[0]))
        return generate(*args, **kw)

    monkeypatch.setattr(p.model, "generate", counting)
    reqs = [_req(p, q, seed=100 + i, temperature=0.5 + 0.2 * i) for i, q in enumerate(QUESTIONS)]
    outs = p.complete(reqs)
    assert all(c.ok for c in outs)
    assert calls == [len(reqs)]
