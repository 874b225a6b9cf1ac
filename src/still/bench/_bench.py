"""Benchmark: several models over the same held-out examples, graded and summarised.

A failed request and an unparseable answer both count as wrong, and each is also shown
on its own column, so a model that errors cannot look accurate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from still.bench._baselines import Baselines
from still.bench._paired import compare_pairs, gap_closed_interval
from still.bench._stats import gap_closed, percentile, wilson
from still.graders import Capture, Grader, answer_of, grade, prepare_graders
from still.tasks import Example
from still.types import Completion, Grade, Price


@dataclass
class ModelResult:
    """One model's summary on the held-out examples."""

    role: str
    model: str
    n: int
    correct: int
    accuracy: float
    ci_low: float
    ci_high: float
    unparseable: int
    errors: int
    mean_latency_s: float
    p95_latency_s: float
    tokens_per_s: float
    prompt_tokens_mean: float
    p50_latency_s: float = math.nan
    p99_latency_s: float = math.nan
    completion_tokens_mean: float = 0.0
    ttft_p50_s: float = math.nan  # time to first token, where measured (streamed, local)
    ttft_p95_s: float = math.nan
    prompt: str = ""  # whose prompt the model got (the control gets the teacher's)
    cost_per_1k: float | None = None  # dollars per 1,000 examples; None: no price known

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    role: str,
    model: str,
    examples: Sequence[Example],
    completions: dict[str, Completion],
    graders: Sequence[Grader],
    labels: Sequence[str] | None,
    price: Price | None = None,
    capture: Capture | None = None,
) -> tuple[ModelResult, list[dict[str, Any]], list[Grade]]:
    """Grade one model's completions and summarise them (with their cost, if priced).

    Judge graders are asked in one batch first, through `capture` (see prepare_graders).

    Returns:
        The summary; one row per example (id, answer, prediction, correct, failure reason,
        latency, tokens) for the per-example results file; and every grade, for the store.
    """
    all_grades: list[Grade] = []
    rows: list[dict[str, Any]] = []
    correct = unparseable = errors = 0
    latencies: list[float] = []
    ttfts: list[float] = []
    tokens = 0
    prompt_tokens = 0
    seconds = 0.0
    prepare_graders(graders, [(ex, completions.get(ex.id)) for ex in examples], labels, capture)
    for ex in examples:
        comp = completions.get(ex.id)
        answer, why = answer_of(comp, labels)
        grades = grade(graders, ex, comp, labels)
        all_grades += grades
        ok = bool(grades) and all(g.passed for g in grades)
        correct += ok
        unparseable += why == "unparseable"
        errors += why in ("error", "missing")
        if comp is not None and comp.ok:
            latencies.append(comp.latency_s)
            if comp.ttft_s is not None:
                ttfts.append(comp.ttft_s)
            seconds += comp.latency_s
            tokens += comp.usage.total_tokens
            prompt_tokens += comp.usage.prompt_tokens
        rows.append(
            {
                "role": role,
                "model": model,
                "example_id": ex.id,
                "reference": ex.answer,
                "prediction": answer,
                "correct": ok,
                # the graders' mean score (partial credit the pass/fail above hides)
                "score": sum(g.score for g in grades) / len(grades) if grades else None,
                "failure": why,
                "latency_s": comp.latency_s if comp else None,
                "ttft_s": comp.ttft_s if comp else None,
                "prompt_tokens": comp.usage.prompt_tokens if comp else None,
                "completion_tokens": comp.usage.completion_tokens if comp else None,
                "completion_id": comp.id if comp else None,
                "input_chars": sum(len(v) for v in ex.fields.values()),
            }
        )
    n = len(examples)
    low, high = wilson(correct, n)
    answered = len(latencies)
    summary = ModelResult(
        role=role,
        model=model,
        n=n,
        correct=correct,
        accuracy=correct / n if n else 0.0,
        ci_low=low,
        ci_high=high,
        unparseable=unparseable,
        errors=errors,
        mean_latency_s=seconds / answered if answered else float("nan"),
        p95_latency_s=percentile(latencies, 95),
        tokens_per_s=tokens / seconds if seconds else 0.0,
        prompt_tokens_mean=prompt_tokens / answered if answered else 0.0,
        p50_latency_s=percentile(latencies, 50),
        p99_latency_s=percentile(latencies, 99),
        completion_tokens_mean=(tokens - prompt_tokens) / answered if answered else 0.0,
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p95_s=percentile(ttfts, 95),
    )
    if price is not None:
        for row in rows:
            row["cost"] = price.cost(row["prompt_tokens"] or 0, row["completion_tokens"] or 0)
        summary.cost_per_1k = 1000 * sum(r["cost"] for r in rows) / n if n else None
    return summary, rows, all_grades


DISTILLED = ("distilled", "distilled-verified")
"""The distilled students' roles: each gets a gap-closed interval."""


@dataclass
class Comparison:
    """The comparison of every role on the same test examples, with what its claims rest
    on: paired tests between roles (`still.bench.compare_pairs`), the share of the gap
    each distilled student closes with its paired interval, and the no-model baselines.
    """

    results: list[ModelResult]
    paired: list[dict[str, Any]] = field(default_factory=list)
    gaps: dict[str, dict[str, Any]] = field(default_factory=dict)  # distilled role -> interval
    baselines: Baselines | None = None
    split: str = "heldout"

    def by_role(self, role: str) -> ModelResult | None:
        return next((r for r in self.results if r.role == role), None)

    def pair(self, a: str, b: str) -> dict[str, Any] | None:
        """The paired comparison a vs b (diff = a - b), if both were compared."""
        return next((p for p in self.paired if p["a"] == a and p["b"] == b), None)

    @property
    def gap_closed(self) -> float | None:
        """The share of the teacher-student gap the (teacher-only) distilled student closes,
        as a point estimate; whether it means anything is `still.report.verdict`'s call."""
        d = self.by_role("distilled") or self.by_role("distilled-verified")
        t, b = self.by_role("teacher"), self.by_role("student")
        if not (t and b and d):
            return None
        return gap_closed(t.accuracy, b.accuracy, d.accuracy)

    def analyse(
        self,
        rows: Sequence[Mapping[str, Any]],
        baselines: Baselines | None = None,
        *,
        n_resamples: int = 10_000,
    ) -> Comparison:
        """Fill in what the claims rest on, from the per-example rows (`evaluate`'s): the
        paired tests between roles and each distilled student's gap closed with its paired
        interval, over the examples the three roles share; and the baselines, if given.

        Returns:
            self, analysed.
        """
        self.paired = compare_pairs(rows, n_resamples=n_resamples)
        by_role: dict[str, dict[str, bool]] = {}
        for r in rows:
            by_role.setdefault(str(r["role"]), {})[str(r["example_id"])] = bool(r["correct"])
        for d in DISTILLED:
            if {"teacher", "student", d} <= set(by_role):
                ids = [i for i in by_role["teacher"] if i in by_role["student"] and i in by_role[d]]
                point, low, high = gap_closed_interval(
                    *([by_role[role][i] for i in ids] for role in ("teacher", "student", d)),
                    n_resamples=n_resamples,
                )
                self.gaps[d] = {"gap_closed": point, "ci_low": low, "ci_high": high}
        self.baselines = baselines
        return self

    def beats(self, a: str, b: str) -> bool:
        """True when a's paired 95% interval against b lies wholly above zero."""
        p = self.pair(a, b)
        return bool(p and p["diff_low"] is not None and p["diff_low"] > 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "results": [r.as_dict() for r in self.results],
            "baselines": None if self.baselines is None else self.baselines.as_dict(),
            "gap_closed": self.gap_closed,
            "gaps": self.gaps,
            "distilled_beats_base_paired": self.beats("distilled", "student"),
        }
