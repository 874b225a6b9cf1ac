"""Examples: one row of a task's data with a stable, content-derived id."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict


class Example(BaseModel):
    """One row: its fields, its reference answer, a stable id and where it came from."""

    model_config = ConfigDict(frozen=True)

    id: str
    fields: dict[str, str]
    answer: str
    source: str  # "file:line", for error messages and audits


def example_id(fields: dict[str, str]) -> str:
    """A stable id: the same content always gets the same id, whatever its row number.

    >>> example_id({"q": "Who?", "a": "HUM"}) == example_id({"a": "HUM", "q": "Who?"})
    True
    """
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
