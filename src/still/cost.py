"""Prices and costs: dollars per million input and output tokens, per model.

The built-in table is dated and small on purpose: prices change, so a task overrides or
extends it in YAML (`prices: {openai:gpt-4o: {input: 2.5, output: 10}}`). A model without a
price (every local model, unless the task gives one) has no cost, shown as n/a, never $0.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

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
    (matched on the model name after `openai:`/`azure:`), else None.

    >>> price_for("openai:gpt-4o-mini").output
    0.6
    >>> price_for("local:smollm2-135m-instruct") is None
    True
    """
    if overrides and model in overrides:
        return overrides[model]
    scheme, sep, name = model.partition(":")
    if sep and scheme in ("openai", "azure"):
        return BUILTIN.get(name)
    return None
