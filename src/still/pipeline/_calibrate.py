"""Contextual calibration (Zhao et al. 2021, "Calibrate Before Use") of label scores.

A few-shot prompt biases a model towards some labels whatever the input (the last
demonstration's label, the most frequent one, a label's prior). Scoring the labels on the
same prompt with every field of the example replaced by a content-free input ("N/A", "",
"[MASK]") measures that bias alone; dividing each answer's label probabilities by its
average over the content-free inputs, and renormalising, takes it out.

Calibration is a reading of stored scores, never another request for an example: the store
keeps each answer's raw label scores, and `Run` applies a role's `Calibration` wherever a
stored answer is read for that role (`Run.stored`, `capture_role`), so the parsed label,
grades, reports and the soft targets of label KD all see the calibrated distribution, and
turning calibration on or off calls no model but for the content-free requests (a few
per role, model and prompt, stored like any request).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from still.tasks import Example
from still.types import Completion

CONTENT_FREE_SPLIT = "content-free"
"""The `split` tag of content-free requests in the store."""


def content_free_examples(fields: Iterable[str], inputs: Sequence[str]) -> list[Example]:
    """One example per content-free input, with that input in every field.

    Args:
        fields: the field names of the task's examples (those its templates read).
        inputs: the content-free inputs, e.g. ["N/A", "", "[MASK]"].
    """
    names = sorted(set(fields))
    return [
        Example(
            id=f"{CONTENT_FREE_SPLIT}-{i}",
            fields=dict.fromkeys(names, text),
            answer="",
            source=f"content-free input {text!r}",
        )
        for i, text in enumerate(inputs)
    ]


def _logsumexp(xs: Iterable[float]) -> float:
    values = list(xs)
    top = max(values)
    if math.isinf(top):
        return top
    return top + math.log(sum(math.exp(x - top) for x in values))


def label_logprobs(scores: Mapping[str, float]) -> dict[str, float]:
    """Label scores (log-likelihoods) as log-probabilities over the label set.

    >>> lp = label_logprobs({"a": 0.0, "b": 0.0})
    >>> round(math.exp(lp["a"]), 3)
    0.5
    """
    z = _logsumexp(scores.values())
    return {label: s - z for label, s in scores.items()}


@dataclass(frozen=True)
class Calibration:
    """A role's label bias on its prompt, and how to take it out of an answer.

    Attributes:
        prior: log p_cf(label): the label probabilities averaged over the content-free
            inputs (the mean of probabilities, not of log-probabilities), in log space.
    """

    prior: dict[str, float]

    @classmethod
    def from_scores(cls, scores: Sequence[Mapping[str, float]]) -> Calibration:
        """The calibration the content-free answers' label scores make.

        Raises:
            ValueError: no scores, or scores over different label sets.
        """
        if not scores:
            raise ValueError("no content-free label scores to calibrate with")
        labels = set(scores[0])
        if any(set(s) != labels for s in scores):
            raise ValueError("content-free answers scored different label sets")
        lps = [label_logprobs(s) for s in scores]
        n = math.log(len(lps))
        return cls({y: _logsumexp(lp[y] for lp in lps) - n for y in sorted(labels)})

    def scores(self, raw: Mapping[str, float]) -> dict[str, float]:
        """Calibrated log-probabilities: log p(y|x) - log p_cf(y), renormalised.

        >>> c = Calibration({"a": math.log(0.8), "b": math.log(0.2)})
        >>> q = c.scores({"a": math.log(0.6), "b": math.log(0.4)})
        >>> round(math.exp(q["b"]), 3)  # 0.4/0.2 against 0.6/0.8
        0.727
        """
        p = label_logprobs(raw)
        return label_logprobs({y: p[y] - self.prior[y] for y in p})

    def apply(self, completion: Completion) -> Completion:
        """The completion as calibration reads it: its label scores calibrated and its
        text the label they favour (unchanged when it has no scores over this label set:
        a failed request, or scores of another label set)."""
        raw = completion.label_logprobs
        if completion.error or not raw or set(raw) != set(self.prior):
            return completion
        q = self.scores(raw)
        best = max(q, key=lambda y: q[y])
        return completion.model_copy(update={"label_logprobs": q, "text": best})

    def as_dict(self) -> dict[str, float]:
        """p_cf by label (probabilities), for reports."""
        return {y: math.exp(v) for y, v in self.prior.items()}
