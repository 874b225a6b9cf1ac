"""Answer parsing: map a model's free text onto the task's label set.

Scored answers are labels by construction. Generated ones are free text ("The answer is
LOCATION."): the parser finds the label they name, or returns None so the answer is counted
as unparseable instead of being silently graded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def _norm(text: str) -> str:
    return re.sub(r"[^\w\s]", " ", text.lower()).strip()


def parse_label(text: str, labels: Sequence[str]) -> str | None:
    """Return the label a free-text answer names, or None when it names none or several.

    Exact (case- and punctuation-insensitive) match wins; otherwise the label must appear
    as a whole word, and only one label may appear.

    >>> parse_label("Location.", ["human", "location"])
    'location'
    >>> parse_label("I think it is HUMAN", ["human", "location"])
    'human'
    >>> parse_label("human or location", ["human", "location"]) is None
    True
    """
    norm = _norm(text)
    by_norm = {_norm(lab): lab for lab in labels}
    if norm in by_norm:
        return by_norm[norm]
    found = [
        lab for key, lab in by_norm.items() if key and re.search(rf"\b{re.escape(key)}\b", norm)
    ]
    return found[0] if len(found) == 1 else None
