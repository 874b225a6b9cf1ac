"""Costs and budgets: dollars per request from a model's price and its token counts.

Prices themselves (`Price`, the built-in table, `price_for`) are plain data in the
vocabulary layer (`still.types`, `still.prices`), re-exported here; this module adds what
needs token counting (`CostModel`) and the `--max-cost` budget. A model without a price
(every local model, unless the task gives one) has no cost, shown as n/a, never $0.

`--max-cost` must hold for every model, so a budget refuses to start with a model that may
cost money but has no price (`UnpricedModel`): an endpoint (`openai:`, `azure:`, `http(s)://`
...) without a price would otherwise run unlimited. Local models (`local:`, `scripted:`, a
model folder) run on this machine and are free under a budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from still.errors import StillError
from still.prices import BUILTIN, PRICES_AS_OF, price_for
from still.tokens import estimate
from still.types import Completion, Price, Request

if TYPE_CHECKING:
    from still.tokens import TokenCounter

__all__ = [
    "BUILTIN",
    "PRICES_AS_OF",
    "Budget",
    "BudgetExceeded",
    "CostModel",
    "Price",
    "UnpricedModel",
    "cost_model_for",
    "is_free",
    "price_for",
    "require_prices",
]



FREE_SCHEMES = frozenset({"local", "scripted", "vllm"})
"""Model reference schemes that run on this machine: free under `--max-cost`."""


def is_free(model: str) -> bool:
    """Whether a model reference runs on this machine and so costs no dollars: `local:`,
    `vllm:`, `scripted:`, or a model folder's path (no scheme). Every other scheme may cost money.

    >>> is_free("local:smollm2-135m-instruct"), is_free("runs/t/distilled-1a2b")
    (True, True)
    >>> is_free("openai:gpt-4.1"), is_free("http://127.0.0.1:8000/v1#m")
    (False, False)
    """
    scheme, sep, _ = model.partition(":")
    return not sep or scheme in FREE_SCHEMES


class UnpricedModel(StillError):
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
