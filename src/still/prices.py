"""The built-in price table and the lookup every stage uses: which price a model has.

The table is dated and small on purpose: prices change, so a task overrides or extends it
in YAML (`prices: {openai:gpt-4o: {input: 2.5, output: 10}}`). A model without a price
(every local model, unless the task gives one) has no cost, shown as n/a, never $0. Plain
data beside `still.types`: the task schema and the store read prices without loading
token counters or models (`still.cost` does the counting).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from still.types import Price

PRICES_AS_OF = "2024-10-16"
"""When the built-in prices were published (the OpenAI distillation cookbook's figures)."""


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
