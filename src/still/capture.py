"""Capture: run a model over examples and store every completion as it arrives.

Requests are content-addressed, so an example whose request is already in the store is
answered from it: a killed capture resumes where it stopped, and a rerun calls no model.
Completions are written as they arrive, never held until the end: one by one from an
endpoint (a kill loses only the requests in flight), batch by batch from a local model
(whose batch is one forward pass, so its answers arrive together).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from still.cost import Budget, BudgetExceeded, CostModel, UnpricedModel, is_free
from still.models import Provider
from still.store import Store
from still.tasks import Example, Task, render, role_context
from still.types import Completion, Message, Request, SamplingParams

log = logging.getLogger("still.capture")


def build_messages(
    task: Task, role: str, example: Example, fewshot: Sequence[Example]
) -> tuple[Message, ...]:
    """Render a role's prompt for one example (system message first, if any); an example
    of imported traffic gets its recorded conversation, as it was sent."""
    if example.messages is not None:
        return example.messages
    spec = task.prompt_for(role)
    shots = list(fewshot[: spec.fewshot])
    ctx = role_context(example, task.labels, shots)
    msgs = []
    if spec.system:
        msgs.append(
            Message(role="system", content=render(spec.system, ctx, name=f"prompts.{role}.system"))
        )
    msgs.append(
        Message(role="user", content=render(spec.template, ctx, name=f"prompts.{role}.template"))
    )
    return tuple(msgs)


def build_request(
    task: Task, role: str, model: str, example: Example, fewshot: Sequence[Example]
) -> Request:
    """The request a role's model gets for an example: scored over labels or generated
    (the teacher's with its top-k token logprobs when `generation.top_logprobs` is set: an
    endpoint teacher's label distribution is read off them, still.models._openai)."""
    gen = task.generation
    scored = task.scoring and bool(task.labels)
    soft = role == "teacher" and gen.top_logprobs > 0
    return Request(
        model=model,
        messages=build_messages(task, role, example, fewshot),
        params=SamplingParams(
            temperature=gen.temperature, max_tokens=gen.max_tokens, stop=tuple(gen.stop)
        ),
        labels=tuple(task.labels) if scored and task.labels else None,
        json_schema=task.output_schema,
        logprobs=soft,
        top_logprobs=gen.top_logprobs if soft else 0,
    )


@dataclass
class CaptureStats:
    """What one capture did: how much came from the store, how much was called, what failed."""

    total: int = 0
    from_store: int = 0
    called: int = 0
    failed: int = 0
    unparseable: int | None = None  # answers naming no label (None: no label set to check)
    completions: dict[str, Completion] = field(default_factory=dict)  # example id -> completion

    def summary(self) -> str:
        text = (
            f"{self.total} requests: {self.from_store} from the store, {self.called} "
            f"model calls, {self.failed} failed"
        )
        if self.unparseable is not None:
            text += f", {self.unparseable} unparseable"
        return text


def capture(
    provider: Provider | Callable[[], Provider],
    requests: dict[str, Request],
    store: Store,
    *,
    metadata: dict[str, str] | None = None,
    batch_size: int = 8,
    desc: str = "capture",
    cost_model: CostModel | None = None,
    budget: Budget | None = None,
) -> CaptureStats:
    """Answer every request (keyed by example id), from the store when already answered.

    Args:
        provider: the model, or a function that loads it (only called if a request is new,
            so a fully stored capture never loads the model).
        requests: example id -> request.
        store: where completions are looked up and written (one commit per completion
            from a provider with `complete_each`, an endpoint; per batch otherwise).
        metadata: tags stored with new completions (run, role, split...).
        batch_size: requests per provider call, unless the provider sets its own
            `batch_size` (an endpoint wants as many requests in flight as its concurrency
            allows; a local model wants what fits one forward pass).
        desc: progress bar label.
        cost_model: the model's price and tokenizer; new completions are stored with
            their cost, and the budget is checked with it.
        budget: a spending limit shared across captures. Requests go out only while the
            spent dollars plus the next request's upper-bound cost fit in it; then the
            capture stops with BudgetExceeded, after storing every answer it got. Needs a
            cost_model, unless the model is local (`still.cost.is_free`: it spends nothing).

    Raises:
        UnpricedModel: a budget is given, there is no cost_model and the model may cost
            money (an endpoint without a price): raised before the store is read or any
            request sent, naming the model and the task's `prices:` fix.
        BudgetExceeded: the budget ran out before every request was sent.
    """
    _refuse_unpriced(requests.values(), cost_model, budget)  # before the store or the model
    stats = CaptureStats(total=len(requests))
    todo: list[tuple[str, Request]] = []
    for ex_id, req in requests.items():
        hit = store.lookup(req.key())
        if hit is not None:
            stats.from_store += 1
            stats.completions[ex_id] = hit
        else:
            todo.append((ex_id, req))
    if not todo:
        return stats
    model = provider if isinstance(provider, Provider) else provider()
    batch_size = getattr(model, "batch_size", None) or batch_size
    # Similar lengths batch with less padding; a shared prefix stays cached across batches.
    todo.sort(key=lambda t: sum(len(m.content) for m in t[1].messages))
    tags = dict(metadata or {})
    with tqdm(total=len(todo), desc=desc, unit="req", leave=False) as bar:
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            chunk = batch[: _affordable(batch, cost_model, budget)]
            if chunk:
                stored = _answer(model, [r for _, r in chunk], tags, store, cost_model, budget, bar)
                for (ex_id, _), c in zip(chunk, stored, strict=True):
                    stats.completions[ex_id] = c
                    stats.called += 1
                    stats.failed += c.error is not None
            if budget is not None and len(chunk) < len(batch):
                raise BudgetExceeded(
                    f"{desc}: stopped with {len(todo) - stats.called} of {len(todo)} requests "
                    f"unsent: the next would take spending past --max-cost "
                    f"${budget.limit:.4f} (spent ${budget.spent:.4f}). The answers so far "
                    "are stored; rerun with a larger --max-cost to go on."
                )
    if stats.failed:
        log.warning(
            "%s: %d of %d requests failed (stored as failed completions)",
            desc,
            stats.failed,
            stats.called,
        )
    return stats


def _affordable(
    chunk: Sequence[tuple[str, Request]], cost_model: CostModel | None, budget: Budget | None
) -> int:
    """How many requests of a batch, in order, fit in what is left of the budget (all of
    them without a budget, or for a free model without a price)."""
    if budget is None:
        return len(chunk)
    if cost_model is None:
        _refuse_unpriced((r for _, r in chunk), cost_model, budget)
        return len(chunk)
    left = budget.remaining
    for n, (_, req) in enumerate(chunk):
        left -= cost_model.estimate(req)
        if left < 0:
            return n
    return len(chunk)


def _refuse_unpriced(
    requests: Iterable[Request], cost_model: CostModel | None, budget: Budget | None
) -> None:
    """Raise UnpricedModel if a budget must hold but a request's model has no cost model
    and may cost money: its spending could not be counted, so the limit would not apply."""
    if budget is None or cost_model is not None:
        return
    paid = sorted({r.model for r in requests if not is_free(r.model)})
    if paid:
        raise UnpricedModel(paid[0])


def _answer(
    model: Provider,
    requests: list[Request],
    tags: dict[str, str],
    store: Store,
    cost_model: CostModel | None,
    budget: Budget | None,
    bar: tqdm[object],
) -> list[Completion]:
    """Send a batch and store each completion as soon as the model hands it over.

    A provider with `complete_each(requests, on_results)` (an endpoint) hands completions
    over as they arrive, and each handover is committed there and then; any other answers
    the batch at once, stored in one transaction. Returns the stored completions, in
    request order.
    """
    # tags travel with the request too, for backends that store completions
    sent = [r.model_copy(update={"metadata": {**r.metadata, **tags}}) for r in requests]

    def keep(outs: Sequence[Completion]) -> list[Completion]:
        priced = [_priced(c, cost_model) for c in outs]
        if budget is not None:
            budget.spent += sum(c.cost or 0.0 for c in priced)
        stored = store.put_many(
            [c.model_copy(update={"metadata": {**c.metadata, **tags}}) for c in priced]
        )
        bar.update(len(stored))
        return stored

    each = getattr(model, "complete_each", None)
    if not callable(each):
        return keep(model.complete(sent))
    kept: dict[int, Completion] = {}

    def on_results(done: list[tuple[int, Completion]]) -> None:
        stored = keep([c for _, c in done])
        kept.update(zip((i for i, _ in done), stored, strict=True))

    each(sent, on_results)
    return [kept[i] for i in range(len(sent))]


def _priced(c: Completion, cost_model: CostModel | None) -> Completion:
    """The completion with its cost (a failed call reports no usage: it costs 0 here)."""
    if cost_model is None or c.cost is not None:
        return c
    return c.model_copy(update={"cost": cost_model.actual(c)})
