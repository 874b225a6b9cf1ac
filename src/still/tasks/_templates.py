"""Prompt templates (Jinja2, strict): a missing field names itself and its template."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jinja2

from still.tasks._example import Example

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


class TemplateError(ValueError):
    """A template could not be rendered; the message names template and field."""


@lru_cache(maxsize=256)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


def render(template: str, context: dict[str, Any], *, name: str) -> str:
    """Render a template; a missing variable raises TemplateError naming it and `name`."""
    try:
        return _compile(template).render(**context).strip()
    except jinja2.UndefinedError as exc:
        fields = ", ".join(sorted(k for k in context if k not in ("fewshot", "labels")))
        raise TemplateError(f"{name}: {exc.message}; available fields: {fields}") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{name}: syntax error on line {exc.lineno}: {exc.message}") from exc


def role_context(
    example: Example, labels: Sequence[str] | None, fewshot: Sequence[Example]
) -> dict[str, Any]:
    """What a prompt template sees: the example's fields, `labels` and `fewshot`.

    The example's own reference answer is deliberately absent (it would leak into the
    prompt); few-shot examples carry theirs as `answer`.
    """
    ctx: dict[str, Any] = dict(example.fields)
    ctx["labels"] = list(labels) if labels else None
    ctx["fewshot"] = [{**e.fields, "answer": e.answer} for e in fewshot]
    return ctx
