"""Prompt templates: strict Jinja2, where a missing field is an error naming itself.

A template that refers to a field the data does not have would, in plain Jinja2, render
an empty string and quietly send every model a broken prompt. Here it raises
`TemplateError` naming the variable, the template (e.g. `prompts.teacher.template`), its
line, and the fields that are available.

What a template sees is built by `role_context`: the example's fields, `labels` and
`fewshot`, but never the example's own reference answer.

Templates render in Jinja2's `SandboxedEnvironment`: a task file is configuration, and a
template is data in it, not code. Plain Jinja2 lets `{{ cycler.__init__.__globals__.os }}`
reach the `os` module and run anything in this process; the sandbox refuses any attribute
starting with `_` and any unsafe callable, so such a template fails with `TemplateError`
naming itself. Ordinary field access, filters, loops and string methods still work.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.sandbox

from still.errors import StillError
from still.tasks._example import Example

_ENV = jinja2.sandbox.SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False
)
_NO_ATTRIBUTE = re.compile(r"has no attribute '(?P<name>[^']+)'$")


class TemplateError(StillError):
    """A template cannot be compiled or rendered; the message names template and variable."""


@lru_cache(maxsize=256)
def _compile(template: str) -> jinja2.Template:
    return _ENV.from_string(template)


def check_syntax(template: str, *, name: str) -> None:
    """Compile a template, so a syntax error fails when the task is loaded, not mid-run.

    Raises:
        TemplateError: The template does not parse; the message names it and its line.
    """
    _parsed(template, name)


def _parsed(template: str, name: str) -> jinja2.Template:
    try:
        return _compile(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{name}: syntax error (line {exc.lineno}): {exc.message}") from exc


def render(template: str, context: dict[str, Any], *, name: str) -> str:
    """Render a prompt template strictly.

    Compiled templates are cached by their text. Blank lines left at either end (by block
    tags such as `{% for %}`) are removed; other whitespace is kept.

    Args:
        template: Jinja2 source.
        context: The variables, usually from `role_context`.
        name: Where the template comes from, for messages (`prompts.teacher.template`).

    Returns:
        The rendered text.

    Raises:
        TemplateError: A syntax error (with its line), an undefined variable or
            attribute (naming it, the line, and the available fields), or an access the
            sandbox refuses (an attribute starting with `_`, an unsafe call).
    """
    tmpl = _parsed(template, name)
    try:
        return tmpl.render(context).strip("\r\n")
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(
            f"{name}: refused by the template sandbox: {exc}{_line(exc)}; templates may "
            "use fields, filters and loops, not Python internals"
        ) from exc
    except jinja2.UndefinedError as exc:
        raise TemplateError(_undefined_message(exc, context, name)) from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{name}: {exc.message or exc}{_line(exc)}") from exc
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateError(f"{name}: {type(exc).__name__}: {exc}{_line(exc)}") from exc


def _line(exc: BaseException) -> str:
    """ " (line N)" of the template frame in a rendering error's traceback, if any."""
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line is not None else ""


def _undefined_message(exc: jinja2.UndefinedError, context: dict[str, Any], name: str) -> str:
    message = exc.message or str(exc)
    fields = sorted(k for k in context if k not in ("labels", "fewshot"))
    available = f"available fields: {', '.join(fields) or '(none)'}; also `labels`, `fewshot`"
    where = _line(exc)
    if _NO_ATTRIBUTE.search(message):
        shots = context.get("fewshot") or []
        keys = sorted(shots[0]) if shots and isinstance(shots[0], dict) else []
        also = f"; few-shot items have: {', '.join(keys)}" if keys else ""
        return f"{name}: {message}{where}; {available}{also}"
    return f"{name}: {message}{where}; {available}"


def role_context(
    example: Example, labels: Sequence[str] | None, fewshot: Sequence[Example]
) -> dict[str, Any]:
    """What a prompt template sees for one example.

    The example's own reference answer is deliberately absent: `Example.fields` never
    holds it and no `answer` variable is set, so no template can leak it to the model.
    Few-shot examples are demonstrations and carry theirs as `answer`.

    Args:
        example: The example being asked.
        labels: The task's label set, or None.
        fewshot: Demonstrations to show (already cut to the role's `fewshot` count).

    Returns:
        The example's fields, plus `labels` (a list, or None) and `fewshot` (a list of
        dicts, each a demonstration's fields plus `answer`).
    """
    ctx: dict[str, Any] = dict(example.fields)
    ctx["labels"] = list(labels) if labels is not None else None
    ctx["fewshot"] = [{**shot.fields, "answer": shot.answer} for shot in fewshot]
    return ctx
