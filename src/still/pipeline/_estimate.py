"""`still estimate`: what a run will send and cost, before any model is called.

Every request a full run makes (the teacher on the train split; each role on the held-out
split) is built exactly as the run would build it and counted with its model's tokenizer
(`still.tokens`). Requests already in the store are free and shown apart. Prompt tokens are
counted; answer tokens are bounded (the longest label, or `max_tokens`), so the dollar
figure is an upper bound: the number to give `--max-cost`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from still.pipeline._run import Run, StageError
from still.prices import price_for
from still.tokens import counter_for, estimate

PLAN: tuple[tuple[str, str], ...] = (
    ("teacher", "train"),
    ("teacher", "heldout"),
    ("student", "heldout"),
    ("distilled", "heldout"),
    ("distilled-verified", "heldout"),
    ("control", "heldout"),
)
"""The (role, split) captures of `still run`, in order, with both distilled students."""


@dataclass
class StageEstimate:
    """One capture of a run: its requests, their tokens and their cost bound."""

    role: str
    split: str
    model: str
    tokenizer: str
    exact: bool  # counted with the model's own tokenizer
    requests: int
    stored: int  # already answered: no call, no cost
    prompt_tokens: int  # of the requests still to send
    output_tokens_max: int
    input_cost: float | None  # dollars; None: the model has no price
    output_cost_max: float | None

    @property
    def to_send(self) -> int:
        return self.requests - self.stored

    @property
    def cost_max(self) -> float | None:
        if self.input_cost is None or self.output_cost_max is None:
            return None
        return self.input_cost + self.output_cost_max

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "to_send": self.to_send, "cost_max": self.cost_max}


def estimate_run(
    run: Run, plan: tuple[tuple[str, str], ...] | None = None, limit: int | None = None
) -> list[StageEstimate]:
    """Count the tokens and bound the cost of each capture in `plan` (default: `still
    run`'s: the teacher check on validation included, with every distilled student the
    task's `curate.students` trains).

    A distilled student does not exist before training: its requests are built with
    the base student (same tokenizer, same prompt) and priced as the task prices
    `distilled` (by default, not at all: it is a local model).
    """
    task = run.task
    if plan is None:  # the teacher check before training reads validation, when there is one
        check = (("teacher", "validation"), ("student", "validation"))
        plan = (
            ("teacher", "train"),
            *(check if run.split.validation else ()),
            *((r, "heldout") for r in run.roles()),
        )
    out = []
    for role, split in plan:
        trained = True
        try:
            reqs = run.requests(role, split, limit)
        except StageError:  # the distilled student is not trained yet
            trained = False
            reqs = run.requests("student", split, limit)
        distilled = role.startswith("distilled")
        model = task.models.student if distilled else run.model_for(role)
        counter = counter_for(model, task.tokenizers)
        stored = prompt = output = 0
        for req in reqs.values():
            if trained and run.store.lookup(req.key()) is not None:
                stored += 1
                continue
            est = estimate(counter, req)
            prompt += est.prompt
            output += est.output_max
        price = price_for("distilled" if distilled else model, task.prices)
        out.append(
            StageEstimate(
                role=role,
                split=split,
                model=f"{model} (fine-tuned)" if distilled else model,
                tokenizer=counter.name,
                exact=counter.exact,
                requests=len(reqs),
                stored=stored,
                prompt_tokens=prompt,
                output_tokens_max=output,
                input_cost=None if price is None else price.cost(prompt, 0),
                output_cost_max=None if price is None else price.cost(0, output),
            )
        )
    return out


def total_cost(stages: list[StageEstimate]) -> float:
    """Upper bound of the dollars still to spend (unpriced stages count 0)."""
    return sum(s.cost_max or 0.0 for s in stages)
