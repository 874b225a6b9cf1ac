"""Examples: one row of a task's data, with a stable id derived from its content.

The id is a hash of the row's content, never of its position, so the same question keeps
the same id when the data file is re-sorted or grows. Everything keyed by example (the
split, stored completions, grades, exports) relies on that. Two rows with the same content
get the same id and are one example: `dedupe` keeps the first and counts the others.

An `Example` keeps its reference answer apart from its other fields: `fields` never holds
the answer, so a prompt built from `fields` cannot leak it (see `role_context`). An example
of imported traffic (a `store:` source) also carries the conversation that was sent, which
every role gets as it was instead of a rendered prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from still.types import Message


class Example(BaseModel):
    """One example of a task.

    Attributes:
        id: Stable content id, see `example_id` (computed over the fields *and* the answer).
        fields: The row's fields after renaming, as strings, without the answer field.
        answer: The reference answer, after `data.label_map`.
        source: Where the row came from, `"file:line"` (`"file:row N"` for Parquet;
            `"store#completion id"` for imported traffic), for error messages and audits.
        messages: The recorded conversation of an imported completion (a `store:`
            source), sent to every role as it was; None for an example from a data file,
            whose prompts are rendered from its fields.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    fields: dict[str, str]
    answer: str
    source: str
    messages: tuple[Message, ...] | None = None


def example_id(fields: Mapping[str, str]) -> str:
    """A stable id: the first 16 hex digits of the SHA-256 of the canonical JSON of `fields`.

    Canonical means `json.dumps(fields, sort_keys=True, ensure_ascii=False)`, so key order
    does not matter (changing this form would change every id, and so every split).
    Pass the answer among the fields (under the answer field's name), so that two rows
    with the same text but different answers remain two examples.

    Args:
        fields: The row's fields, answer included.

    Returns:
        16 lowercase hex characters.

    >>> example_id({"q": "Who?", "a": "HUM"}) == example_id({"a": "HUM", "q": "Who?"})
    True
    """
    blob = json.dumps(dict(fields), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def dedupe(examples: Iterable[Example]) -> tuple[list[Example], int]:
    """Drop examples whose id was already seen, keeping the first occurrence.

    Args:
        examples: Examples in file order.

    Returns:
        The unique examples, in their original order, and how many duplicates were dropped.
    """
    seen: set[str] = set()
    out: list[Example] = []
    dropped = 0
    for ex in examples:
        if ex.id in seen:
            dropped += 1
            continue
        seen.add(ex.id)
        out.append(ex)
    return out, dropped
