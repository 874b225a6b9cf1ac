"""Prices and costs: dollars per million input and output tokens, per model.

The built-in table is dated and small on purpose: prices change, so a task overrides or
extends it in YAML (`prices: {openai:gpt-4o: {input: 2.5, output: 10}}`). A model without a
price (every local model, unless the task gives one) has no cost, shown as n/a, never $0.

`--max-cost` must hold for every model, so a budget refuses to start with a model that may
cost money but has no price (`UnpricedModel`): an endpoint (`openai:`, `azure:`, `http(s)://`
...) without a price would otherwise run unlimited. Local models (`local:`, `scripted:`, a
model folder) run on this machine and are free under a budget.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from still.errors import StillError
from still.tokens import estimate
from still.types import Completion, Request

if TYPE_CHECKING:
    from still.tokens import TokenCounter

PRICES_AS_OF = "2024-10-16"
"""When the built-in prices were published (the OpenAI distillation cookbook's figures)."""


class Price(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, description="Dollars per million prompt tokens.")
    output: float = Field(ge=0, description="Dollars per million completion tokens.")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Dollars for one request."""
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1e6


BUILTIN: dict[str, Price] = {
    "gpt-4o": Price(input=2.50, output=10.00),
    "gpt-4o-mini": Price(input=0.15, output=0.60),
}


def price_for(model: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of a model reference: the task's override, else the built-in table
    (matched on the model name after `openai:`/`azure:`, a dated snapshot such as
    `gpt-4o-mini-2024-07-18` priced as its model), else None.

    >>> price_for("openai:gpt-4o-mini").output
    0.6
    >>> price_for("openai:gpt-4o-2024-08-06").input
    2.5
    >>> price_for("local:smollm2-135m-instruct") is None
    True
    """
    if overrides and model in overrides:
        return overrides[model]
    scheme, sep, name = model.partition(":")
    if sep and scheme in ("openai", "azure"):
        return BUILTIN.get(name) or BUILTIN.get(_DATED.sub("", name))
    return None


_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")


FREE_SCHEMES = frozenset({"local", "scripted"})
"""Model reference schemes that run on this machine: free under `--max-cost`."""


def is_free(model: str) -> bool:
    """Whether a model reference runs on this machine and so costs no dollars: `local:`,
    `scripted:`, or a model folder's path (no scheme). Every other scheme may cost money.

    >>> is_free("local:smollm2-135m-instruct"), is_free("runs/t/distilled-1a2b")
    (True, True)
    >>> is_free("openai:gpt-4.1"), is_free("http://127.0.0.1:8000/v1#m")
    (False, False)
    """
    scheme, sep, _ = model.partition(":")
    return not sep or scheme in FREE_SCHEMES


class UnpricedModel(StillError, ValueError):
    """`--max-cost` was given for a model that may cost money but has no price."""

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(
            f"--max-cost cannot limit {model}: it has no price, so its spending could not "
            f"be counted. Add its price to the task (dollars per million tokens; 0 for a free "
            f'server), e.g. prices: {{"{model}": {{input: 2.0, output: 8.0}}}}, or drop --max-cost'
        )


def require_prices(models: Iterable[str], prices: Mapping[str, Price] | None = None) -> None:
    """Refuse a budget before anything is sent if any of `models` cannot be counted
    against it: call at the start of a command given `--max-cost`, with every model
    reference it may call (teacher, student, control, judges).

    Raises:
        UnpricedModel: The first model that is not free (`is_free`) and has no price.
    """
    for model in models:
        if not is_free(model) and price_for(model, prices) is None:
            raise UnpricedModel(model)


class BudgetExceeded(StillError, RuntimeError):
    """The next requests would take a run past its `--max-cost`; what was answered is stored."""


class Budget:
    """A spending limit for one command (`--max-cost`), shared by all its stages.

    Requests are sent only while the dollars already spent plus an upper bound of the next
    request's cost stay within the limit, so the limit is never exceeded (up to the
    estimate: the prompt is counted with the model's tokenizer, the answer bounded by
    `max_tokens` or the longest label). Answers already in the store cost nothing and are
    not counted; a rerun with a larger limit resumes where this one stopped.
    """

    def __init__(self, limit: float) -> None:
        if limit < 0:
            raise ValueError(f"--max-cost must be >= 0, got {limit}")
        self.limit = limit
        self.spent = 0.0

    @property
    def remaining(self) -> float:
        return self.limit - self.spent

    def __repr__(self) -> str:
        return f"Budget(${self.spent:.4f} of ${self.limit:.4f})"


class CostModel:
    """One model's price and tokenizer: the upper-bound cost of a request before it is
    sent, and the real cost of its completion after."""

    def __init__(self, price: Price, counter: TokenCounter) -> None:
        self.price = price
        self.counter = counter

    def estimate(self, req: Request) -> float:
        """Dollars a request costs at most."""
        est = estimate(self.counter, req)
        return self.price.cost(est.prompt, est.output_max)

    def actual(self, completion: Completion) -> float:
        """Dollars a completion cost, from the usage the backend reported."""
        u = completion.usage
        return self.price.cost(u.prompt_tokens, u.completion_tokens)


def cost_model_for(
    model: str,
    prices: Mapping[str, Price] | None = None,
    tokenizers: Mapping[str, str] | None = None,
) -> CostModel | None:
    """The cost model of a model reference, or None when it has no price (it costs
    nothing that `still` can know: local models, unless the task prices them)."""
    price = price_for(model, prices)
    if price is None:
        return None
    from still.tokens import counter_for

    return CostModel(price, counter_for(model, tokenizers))
