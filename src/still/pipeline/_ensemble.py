"""Teacher ensembles: several teacher prompts (and models) vote on every answer.

A few-shot teacher's answer depends on which demonstrations it is shown and in what order
(Zhao et al. 2021; Lu et al. 2022), so each prompt is a noisy teacher whose errors are
partly its own. An ensemble (`ensemble:` in the task, `still.tasks.EnsembleSpec`) asks
several: member 0 is the task's teacher prompt, each other member shows few-shot examples
of its own from the training split (and may ask another model). The majority of their
parsed answers is the hard label; the mean of their label probabilities is the soft one
that label KD learns.

Every member's answer is an ordinary request through `Run.capture`, stored and tagged
`member=<i>`, priced and within the budget; member 0's requests are the plain teacher's,
so its answers are shared with them, and a member's few-shot draw depends on its index
alone, so adding a member asks only that member. The combined answer is a reading of the
stored ones, never stored itself: `Run.stored` and `capture_role` make it for the teacher
role when the task declares an ensemble, so every stage reads the ensemble as the teacher.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from still.bench import evaluate
from still.capture import CaptureStats, build_request
from still.cost import Budget, require_prices
from still.graders import answer_of
from still.pipeline._calibrate import (
    Calibration,
    label_logprobs,
)
from still.pipeline._run import Run, StageError
from still.tasks import Example, balanced
from still.types import Completion, Request, Usage

VOTES = "ensemble_votes"
"""Metadata key of a combined answer: how many members voted for it."""

VOTERS = "ensemble_voters"
"""Metadata key of a combined answer: how many members gave a parseable answer."""


@dataclass(frozen=True)
class Member:
    """One teacher prompt of the ensemble.

    Attributes:
        index: 0 for the task's own teacher prompt; 1, 2, ... for the others.
        model: the model it asks.
        fewshot: the demonstrations its prompt shows, in order.
        shown: the training examples among them: the member is not asked those.
    """

    index: int
    model: str
    fewshot: tuple[Example, ...]
    shown: frozenset[str]


def members(run: Run) -> list[Member]:
    """The task's ensemble members (one, the teacher, without `ensemble:`).

    Member i > 0 draws `prompts.teacher.fewshot` examples from the training part (train
    and the split's few-shot examples), ordered by a hash of (`ensemble.seed`, i, id) and
    balanced across answers (`still.tasks.balanced`); it asks `ensemble.models[(i - 1) %
    len(models)]`, the teacher's model when none are listed.
    """
    task, teacher = run.task, run.model_for("teacher")
    first = Member(0, teacher, tuple(run.split.fewshot), frozenset())
    spec = task.ensemble
    if spec is None:
        return [first]
    shots = task.prompt_for("teacher").fewshot
    pool = run.split.train + run.split.fewshot
    train_ids = {e.id for e in run.split.train}
    models = spec.models or [teacher]
    out = [first]
    for i in range(1, spec.members):
        order = sorted(pool, key=lambda e: _digest(f"{spec.seed}:{i}:{e.id}"))
        drawn = tuple(balanced(order, shots))
        shown = frozenset(e.id for e in drawn if e.id in train_ids)
        out.append(Member(i, models[(i - 1) % len(models)], drawn, shown))
    return out


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def member_requests(
    run: Run, member: Member, split: str, limit: int | None = None
) -> dict[str, Request]:
    """A member's teacher requests on a split (none for the examples its prompt shows)."""
    return {
        e.id: build_request(run.task, "teacher", member.model, e, member.fewshot)
        for e in run.examples(split)[:limit]
        if e.id not in member.shown
    }


def combine(
    answers: Sequence[Completion | None], labels: Sequence[str] | None
) -> Completion | None:
    """The members' answers to one example as one answer.

    The text is the majority of the parseable answers (a tie goes to the answer with the
    higher mean label probability, then to the lower member); the label scores are the
    log of the members' mean label probabilities, when every voter has scores over the
    same labels. Usage and cost add up (every member was asked), latency is the slowest
    member's (they answer in parallel). With no parseable answer, the first member's
    answer as it is (its error, or its unparseable text); None when no member answered.

    Args:
        answers: each member's answer, None where it has none (not asked, not stored).
        labels: the task's label set, if any.
    """
    present = [c for c in answers if c is not None]
    if not present:
        return None
    parsed = [(i, c, answer_of(c, labels).answer) for i, c in enumerate(answers) if c is not None]
    voters = [(i, c, a) for i, c, a in parsed if a is not None]
    if not voters:
        return present[0]
    counts = Counter(a for _, _, a in voters)
    probs = _mean_probabilities([c for _, c, _ in voters])
    first: dict[str, int] = {}
    for i, _, a in voters:
        first.setdefault(a, i)
    winner = max(counts, key=lambda a: (counts[a], (probs or {}).get(a, 0.0), -first[a]))
    costs = [c.cost for c in present if c.cost is not None]
    key = _digest("\0".join(c.id for c in present))
    return Completion(
        id=f"ens-{key[:24]}",
        request=present[0].request,
        request_hash=f"ensemble:{key}",
        text=winner,
        finish_reason="stop",
        usage=Usage(
            prompt_tokens=sum(c.usage.prompt_tokens for c in present),
            completion_tokens=sum(c.usage.completion_tokens for c in present),
        ),
        latency_s=max(c.latency_s for c in present),
        cost=sum(costs) if costs else None,
        label_logprobs=None
        if probs is None
        else {y: math.log(max(p, 1e-30)) for y, p in probs.items()},
        metadata={VOTES: str(counts[winner]), VOTERS: str(len(voters))},
        created_at=max(c.created_at for c in present),
        cached=all(c.cached for c in present),
    )


def _mean_probabilities(voters: Sequence[Completion]) -> dict[str, float] | None:
    """The mean of the voters' label probabilities (None: one has no scores, or scores
    over another label set)."""
    scores = [c.label_logprobs for c in voters]
    if not scores or any(not s or set(s) != set(scores[0] or {}) for s in scores):
        return None
    lps = [label_logprobs(s) for s in scores if s]
    return {y: sum(math.exp(lp[y]) for lp in lps) / len(lps) for y in sorted(lps[0])}


def agreement(completion: Completion | None) -> float | None:
    """The share of voting members that gave a combined answer (None: not an ensemble's)."""
    if completion is None:
        return None
    votes, voters = completion.metadata.get(VOTES), completion.metadata.get(VOTERS)
    if votes is None or not voters:
        return None
    return int(votes) / int(voters)


def _calibration(
    run: Run, member: Member, budget: Budget | None, call: bool
) -> tuple[Calibration | None, CaptureStats]:
    """A member's contextual calibration (`prompts.teacher.calibrate`), from content-free
    requests with its own few-shot examples: asked through the store when `call`."""
    return run.calibration(
        "teacher", member.model, budget, call, fewshot=member.fewshot, member=member.index
    )


def _read(cal: Calibration | None, comps: dict[str, Completion]) -> dict[str, Completion]:
    return comps if cal is None else {k: cal.apply(c) for k, c in comps.items()}


def _combined(
    run: Run,
    split: str,
    limit: int | None,
    team: Sequence[Member],
    answers: Sequence[Mapping[str, Completion]],
) -> dict[str, Completion]:
    """The ensemble's answer to each example every member asked has answered."""
    out = {}
    for ex in run.examples(split)[:limit]:
        asked = [ex.id not in m.shown for m in team]
        if any(a and ex.id not in got for a, got in zip(asked, answers, strict=True)):
            continue  # a member's answer is missing: so is the ensemble's
        votes = [got.get(ex.id) if a else None for a, got in zip(asked, answers, strict=True)]
        one = combine(votes, run.task.labels)
        if one is not None:
            out[ex.id] = one
    return out


def capture_ensemble(
    run: Run, split: str, limit: int | None = None, budget: Budget | None = None
) -> CaptureStats:
    """Stage (`capture_role` for the teacher of an ensemble task): every member answers
    a split (stored, tagged `member=<i>`, within `budget`), its content-free requests
    too when calibrated; the stats count every member's requests, and their completions
    are the combined answers (`combine`)."""
    team = members(run)
    if budget is not None:
        require_prices([m.model for m in team], run.task.prices)
    stats = CaptureStats()
    answers = []
    for m in team:
        tags = {"role": "teacher", "split": split, "member": str(m.index)}
        desc = f"teacher {m.index + 1}/{len(team)} on {split}"
        got = run.capture(m.model, member_requests(run, m, split, limit), tags, desc, budget)
        cal, cf = _calibration(run, m, budget, call=True)
        for s in (got, cf):
            stats.total += s.total
            stats.from_store += s.from_store
            stats.called += s.called
            stats.failed += s.failed
        answers.append(_read(cal, got.completions))
    stats.completions = _combined(run, split, limit, team, answers)
    if run.task.labels:
        stats.unparseable = sum(
            answer_of(c, run.task.labels).why == "unparseable" for c in stats.completions.values()
        )
    return stats


def member_answers(
    run: Run, split: str, include_failed: bool = False
) -> list[tuple[Member, dict[str, Completion]]]:
    """Each member's stored answers on a split, read as the ensemble reads them
    (calibrated when the teacher's prompt is); no model is called.

    Raises:
        StageError: a calibrated member's content-free answer is not stored.
    """
    out = []
    for m in members(run):
        cal, _ = _calibration(run, m, None, call=False)
        out.append((m, _read(cal, run.lookup(member_requests(run, m, split), include_failed))))
    return out


def stored_ensemble(run: Run, split: str, include_failed: bool = False) -> dict[str, Completion]:
    """`Run.stored` for the teacher of an ensemble task: the combined answer of every
    example all its members have answered (failed answers too, if asked)."""
    got = member_answers(run, split, include_failed)
    return _combined(run, split, None, [m for m, _ in got], [a for _, a in got])


def ensemble_report(run: Run) -> dict[str, Any] | None:
    """Each member's and the ensemble's accuracy on validation and the test split, from
    the store alone (an answer never stored counts as a failure; a split no member has
    answered is left out), for reports. None without an ensemble (or when a calibrated
    member's content-free answers are not stored yet).
    """
    spec = run.task.ensemble
    if spec is None:
        return None
    rows: list[dict[str, Any]] = []
    team: list[Member] = []
    judge = run.judge(call=False)
    for split in ("validation", "heldout"):
        examples = run.examples(split)
        try:
            got = member_answers(run, split, include_failed=True)
        except StageError:
            return None
        if not examples or not any(a for _, a in got):
            continue
        team = [m for m, _ in got]
        combined = _combined(run, split, None, team, [a for _, a in got])
        for name, model, comps in [
            *((str(m.index), m.model, a) for m, a in got),
            ("ensemble", "vote", combined),
        ]:
            res, _, _ = evaluate(
                name, model, examples, comps, run.graders, run.task.labels, capture=judge
            )
            rows.append(
                {
                    "split": split,
                    "member": name,
                    "model": model,
                    "n": res.n,
                    "answered": len(comps),
                    "accuracy": res.accuracy,
                    "ci_low": res.ci_low,
                    "ci_high": res.ci_high,
                }
            )
    return {
        "members": spec.members,
        "seed": spec.seed,
        "fewshot": {str(m.index): [e.id for e in m.fewshot] for m in team},
        "rows": rows,
    }
