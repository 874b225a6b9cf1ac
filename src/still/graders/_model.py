"""Model graders (judges): `score_model` and `label_model`, as OpenAI defines them.

A judge is a model asked, through templated messages, to score an answer in a `range` or to
pick one of `labels`. Judge calls are ordinary requests: they go through the same providers,
are stored in the run's store with `role=judge` and `grader=<name>` tags, and are answered
from the store when repeated, so grading is resumable and a re-grade calls no model.

Judges are run in one batch per grader (`prepare`) before the per-example `grade` calls,
which only read the answers back. The output is constrained where the judge allows it:

- `label_model`: the judge's answer is scored over the label set (local models) or sent
  with a one-enum json_schema (endpoints), so it is always one of the labels;
- `score_model`: the judge answers `{"score": <number>}` under a json_schema (constrained
  decoding locally, structured outputs on endpoints); a judge that ignores the schema is
  parsed leniently (the first number in range), and no number is a failed grade, never a
  pass or a default score.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from still.errors import GraderError
from still.graders._registry import register_grader
from still.graders._string_check import fill
from still.tasks import LabelModelSpec, ScoreModelSpec
from still.types import Completion, Grade, Message, Request, SamplingParams

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

CACHE_SIZE = 4096
"""Judge answers `prepare` keeps for the `grade` calls that follow (least recently asked
dropped first; the last `prepare` call's answers are kept whole). A GRPO run prepares every
sampled group, so an unbounded cache would grow with every step; a dropped answer is still
in the store, and the next `prepare` that needs it reads it back without a model call."""

Job = tuple[Mapping[str, Any], Mapping[str, Any]]
"""(sample, item): what a grader sees of one completion of one example."""

Capture = Callable[[dict[str, Request], str], Mapping[str, Completion]]
"""Answers requests (keyed by an id) through the store: `still.graders.prepare_graders`
passes one bound to the run's store and the judge's provider."""


@dataclass
class ModelGrader:
    """A configured score_model or label_model grader.

    Args:
        name: the grade's name in reports and filters.
        kind: `score` (a number in `range`) or `label` (one of `labels`).
        model: the judge's model reference (any provider).
        input: the judge's messages, each `{"role", "content"}` with `{{sample.*}}` and
            `{{item.*}}` templates.
        range: the score range (score_model).
        pass_threshold: a score at or above it passes (score_model; default: the middle of
            the range).
        labels: the labels the judge picks from (label_model).
        passing_labels: the labels that pass (label_model).
        params: the judge's sampling parameters.
        cache_size: judge answers kept from `prepare` (see `CACHE_SIZE`).
    """

    name: str
    kind: Literal["score", "label"]
    model: str
    input: tuple[Mapping[str, str], ...]
    range: tuple[float, float] = (0.0, 1.0)
    pass_threshold: float | None = None
    labels: tuple[str, ...] = ()
    passing_labels: tuple[str, ...] = ()
    params: SamplingParams = SamplingParams(max_tokens=16)
    cache_size: int = CACHE_SIZE
    _answers: OrderedDict[str, Completion] = field(
        default_factory=OrderedDict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.kind == "label":
            if not self.labels:
                raise GraderError(f"label_model grader {self.name!r} needs labels")
            extra = set(self.passing_labels) - set(self.labels)
            if extra:
                raise GraderError(
                    f"label_model grader {self.name!r}: passing_labels {sorted(extra)} are "
                    "not among its labels"
                )
        lo, hi = self.range
        if not lo < hi:
            raise GraderError(f"score_model grader {self.name!r}: range must be [low, high]")
        if not self.input:
            raise GraderError(f"model grader {self.name!r} needs input messages")

    @property
    def threshold(self) -> float:
        lo, hi = self.range
        return self.pass_threshold if self.pass_threshold is not None else (lo + hi) / 2

    def request(self, sample: Mapping[str, Any], item: Mapping[str, Any]) -> Request:
        """The judge's request for one completion (KeyError for an unknown template path)."""
        ctx = {"sample": sample, "item": item}
        messages = tuple(
            Message(role=m.get("role", "user"), content=fill(m["content"], ctx)) for m in self.input
        )
        if self.kind == "label":
            return Request(
                model=self.model, messages=messages, params=self.params, labels=self.labels
            )
        return Request(
            model=self.model,
            messages=messages,
            params=self.params,
            json_schema=score_schema(*self.range),
        )

    def prepare(self, jobs: Iterable[Job], capture: Capture) -> None:
        """Ask the judge about every job at once (answers come from the store when it has
        them). A job whose template fails is left out: its grade fails with the reason."""
        reqs: dict[str, Request] = {}
        for sample, item in jobs:
            try:
                req = self.request(sample, item)
            except KeyError:
                continue
            reqs[req.key()] = req
        if not reqs:
            return
        for key, answer in capture(reqs, self.name).items():
            self._answers[key] = answer
            self._answers.move_to_end(key)
        while len(self._answers) > max(self.cache_size, len(reqs)):
            self._answers.popitem(last=False)

    def grade(
        self,
        sample: Mapping[str, Any],
        item: Mapping[str, Any],
        example_id: str,
        completion_id: str | None,
    ) -> Grade:
        """The judge's verdict, read from what `prepare` got; a missing, failed or
        unreadable judge answer is a failed grade, never a pass."""

        def verdict(score: float, passed: bool, error: str | None = None) -> Grade:
            return Grade(
                grader=self.name,
                example_id=example_id,
                completion_id=completion_id,
                score=score,
                passed=passed and error is None,
                error=error,
            )

        try:
            req = self.request(sample, item)
        except KeyError as exc:
            return verdict(0.0, False, str(exc))
        c = self._answers.get(req.key())
        if c is None:
            return verdict(0.0, False, "judge not asked (run prepare_graders first)")
        if c.error:
            return verdict(0.0, False, f"judge error: {c.error}")
        if self.kind == "label":
            label = c.text.strip()
            if label not in self.labels:
                return verdict(0.0, False, f"judge answered {label[:40]!r}, not a label")
            ok = label in self.passing_labels
            return verdict(1.0 if ok else 0.0, ok)
        score = parse_score(c.text, self.range)
        if score is None:
            return verdict(0.0, False, f"no score in {self.range} in {c.text[:60]!r}")
        return verdict(score, score >= self.threshold)


def score_schema(low: float, high: float) -> dict[str, Any]:
    """`{"score": n}` with n in [low, high]: integers when both bounds are integers (judges
    such as "rate 1 to 10" answer in whole numbers, and a grammar over digits is tighter)."""
    whole = float(low).is_integer() and float(high).is_integer()
    lo: float = int(low) if whole else low
    hi: float = int(high) if whole else high
    return {
        "type": "object",
        "properties": {
            "score": {"type": "integer" if whole else "number", "minimum": lo, "maximum": hi}
        },
        "required": ["score"],
        "additionalProperties": False,
    }


def parse_score(text: str, rng: Sequence[float]) -> float | None:
    """The judge's score: `{"score": n}`, else the first number in the text, if in range.

    >>> parse_score('{"score": 7}', (1, 10)), parse_score("I'd say 8/10.", (1, 10))
    (7.0, 8.0)
    >>> parse_score("eleven", (1, 10)) is None, parse_score("42", (1, 10)) is None
    (True, True)
    """
    value: Any = None
    try:
        obj = json.loads(text)
        value = obj.get("score") if isinstance(obj, dict) else obj
    except json.JSONDecodeError:
        m = _NUMBER.search(text)
        value = m.group() if m else None
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    lo, hi = rng
    return score if math.isfinite(score) and lo <= score <= hi else None


def _messages(spec: ScoreModelSpec | LabelModelSpec) -> tuple[dict[str, str], ...]:
    """The judge's messages; OpenAI's `developer` role is a system message to any model."""
    return tuple(
        {"role": "system" if m.role == "developer" else m.role, "content": m.content}
        for m in spec.input
    )


@register_grader(LabelModelSpec)
def label_model(spec: LabelModelSpec, name: str) -> ModelGrader:
    """`label_model`: a judge picks a label; the passing labels pass."""
    return ModelGrader(
        name=name,
        kind="label",
        model=spec.model,
        input=_messages(spec),
        labels=tuple(spec.labels),
        passing_labels=tuple(spec.passing_labels),
    )


@register_grader(ScoreModelSpec)
def score_model(spec: ScoreModelSpec, name: str) -> ModelGrader:
    """`score_model`: a judge gives a score in the range, with its sampling parameters."""
    sp = spec.sampling_params
    return ModelGrader(
        name=name,
        kind="score",
        model=spec.model,
        input=_messages(spec),
        range=spec.range,
        pass_threshold=spec.pass_threshold,
        params=SamplingParams(
            temperature=sp.temperature,
            top_p=sp.top_p,
            max_tokens=sp.max_completions_tokens,
            seed=sp.seed,
        ),
    )
