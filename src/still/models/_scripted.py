"""A scripted provider: deterministic answers with no model, for tests and docs.

It is a real registered provider, so the store, graders, exports and reports run offline
against it. References:

- `scripted:echo` answers with the last user message;
- `scripted:const=<text>` always answers `<text>`;
- `scripted:first-label` picks the first label (or echoes without labels);
- `scripted:fail` fails every request (stored as failed completions).

Options follow `?`: `delay=<seconds>` per request; `fail_every=<n>` fails every n-th call;
`bias=<label>:<nats>` adds a constant to one label's score in every scored request and
answers the best-scored label (a scorer with a label bias, as few-shot prompts make);
`wrong=<i>/<m>` answers the label after the right one (in label order) to the questions
whose last user message hashes into bucket i of m, scoring it only just above the right
one (a noisy scorer, unsure when it errs): two providers with different buckets are wrong
on disjoint questions.
Every call appends one line to the file in `$STILL_SCRIPTED_LOG`, if set, so tests can count
model calls across processes (a SIGKILLed capture and its resume).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl

from still.errors import ModelError
from still.models._provider import register_provider
from still.types import Completion, Request, Usage

Answer = Callable[[Request], str]


class ScriptedProvider:
    """Answers from a function of the request; counts its calls."""

    def __init__(
        self,
        name: str,
        answer: Answer,
        delay: float = 0.0,
        fail_every: int = 0,
        bias: tuple[str, float] | None = None,
        wrong: tuple[int, int] | None = None,
    ) -> None:
        self.name = name
        self.answer = answer
        self.delay = delay
        self.fail_every = fail_every
        self.bias = bias  # (label, nats) added to that label's score
        self.wrong = wrong  # (bucket, buckets): questions answered wrong
        self.calls = 0

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        out = []
        for req in requests:
            self.calls += 1
            log = os.environ.get("STILL_SCRIPTED_LOG")
            if log:
                with open(log, "a") as f:
                    f.write(req.key() + "\n")
            start = time.perf_counter()
            if self.delay:
                time.sleep(self.delay)
            try:
                if self.fail_every and self.calls % self.fail_every == 0:
                    raise RuntimeError(f"scripted failure on call {self.calls}")
                text = self.answer(req)
            except Exception as exc:  # noqa: BLE001 - a failed request is a stored completion
                out.append(
                    Completion(
                        request=req,
                        request_hash=req.key(),
                        error=f"{type(exc).__name__}: {exc}",
                        latency_s=time.perf_counter() - start,
                    )
                )
                continue
            scores = _label_scores(text, req.labels, self.bias) if req.labels else None
            if scores and self.bias is not None:
                text = max(scores, key=scores.__getitem__)
            wrong = self.wrong
            if scores and wrong is not None and _bucket(req, wrong[1]) == wrong[0]:
                text, scores = _wrong(scores)
            prompt_words = sum(len(m.content.split()) for m in req.messages)
            out.append(
                Completion(
                    request=req,
                    request_hash=req.key(),
                    text=text,
                    finish_reason="stop",
                    usage=Usage(prompt_tokens=prompt_words, completion_tokens=len(text.split())),
                    latency_s=time.perf_counter() - start,
                    label_logprobs=scores,
                )
            )
        return out


def _label_scores(
    text: str, labels: Sequence[str], bias: tuple[str, float] | None = None
) -> dict[str, float]:
    """Scores a scorer would give: high for the label the answer names (the exact label, or
    the first one its text contains: `echo` answers with the whole question), low for the
    others; plus the `bias` of its label."""
    picked = text if text in labels else next((lab for lab in labels if lab in text), None)
    scores = {lab: (0.0 if lab == picked else -10.0) for lab in labels}
    if bias is not None and bias[0] in scores:
        scores[bias[0]] += bias[1]
    return scores


def _bucket(req: Request, buckets: int) -> int:
    """Which of `buckets` the request's question (its last user message) hashes into."""
    digest = hashlib.sha256(_last_user(req).encode()).hexdigest()
    return int(digest, 16) % buckets


def _wrong(scores: dict[str, float]) -> tuple[str, dict[str, float]]:
    """The label after the best-scored one, scored just above it (0.5 nats: unsure)."""
    labels = list(scores)
    best = max(labels, key=lambda lab: scores[lab])
    wrong = labels[(labels.index(best) + 1) % len(labels)]
    moved = {lab: -10.0 for lab in labels}
    moved[best], moved[wrong] = -0.5, 0.0
    return wrong, moved


def _last_user(req: Request) -> str:
    return next((m.content for m in reversed(req.messages) if m.role == "user"), "")


def _fail(req: Request) -> str:
    raise RuntimeError("scripted provider configured to fail")


@register_provider(
    "scripted", "deterministic offline answers: echo, const=<text>, first-label, fail"
)
def scripted_factory(ref: str) -> ScriptedProvider:
    """Build a ScriptedProvider from
    `scripted:<mode>[?delay=..&fail_every=..&bias=<label>:<nats>&wrong=<i>/<m>]`."""
    body = ref.partition(":")[2]
    mode, _, query = body.partition("?")
    opts = dict(parse_qsl(query))
    answer: Answer
    if mode == "echo":
        answer = _last_user
    elif mode.startswith("const="):
        const = mode.removeprefix("const=")
        answer = lambda req: const  # noqa: E731
    elif mode == "first-label":
        answer = lambda req: req.labels[0] if req.labels else _last_user(req)  # noqa: E731
    elif mode == "fail":
        answer = _fail
    else:
        raise ModelError(
            f"unknown scripted mode {mode!r}: use echo, const=<text>, first-label, fail"
        )
    bias = None
    if "bias" in opts:
        label, _, nats = opts["bias"].rpartition(":")
        bias = (label, float(nats))
    wrong = None
    if "wrong" in opts:
        bucket, _, buckets = opts["wrong"].partition("/")
        if not (bucket.isdigit() and buckets.isdigit() and int(bucket) < int(buckets)):
            raise ModelError(f"wrong={opts['wrong']}: use wrong=<i>/<m> with 0 <= i < m")
        wrong = (int(bucket), int(buckets))
    return ScriptedProvider(
        ref,
        answer,
        delay=float(opts.get("delay", 0)),
        fail_every=int(opts.get("fail_every", 0)),
        bias=bias,
        wrong=wrong,
    )
