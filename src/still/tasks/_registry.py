"""The names a task file may use for a grader `type` and a `train.recipe`.

The grader and recipe registries live above this package (`still.graders`, `still.train`
import `still.tasks`), but a task file is validated here, before any grader or trainer is
built. So those registries write down here what a task file may name: `register_grader`
registers its spec type (`register_grader_spec`), `register_recipe` its name
(`register_recipe_name`). Built-ins and plugins go through the same calls; a name not
known yet loads the plugins (`still.plugins`) and is looked up again, so a typo fails with
the list of known names and a plugin's name works as soon as its package is installed.
"""

from __future__ import annotations

from typing import Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict

from still.plugins import load_plugins


class BaseGraderSpec(BaseModel):
    """What every grader spec has, a built-in's or a plugin's: the `type` a task file names
    it by (declare it as `type: Literal["<name>"]`) and the name its grades carry. A
    subclass adds the grader's own options as typed fields; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    name: str


S = TypeVar("S", bound=BaseGraderSpec)

_GRADER_TYPES: dict[str, type[BaseGraderSpec]] = {}
"""Grader spec types by their `type` tag, in registration order (the built-ins first)."""

_RECIPES: list[str] = []
"""Names `train.recipe` accepts, in registration order (the built-ins first)."""


def grader_tag(spec_type: type[BaseGraderSpec]) -> str:
    """The `type` a task file writes for `spec_type`: its `type` field's one Literal value,
    or that field's default.

    Raises:
        TypeError: the spec declares no such `type` field (a programming error in the
            grader's module, not the user's).
    """
    field = spec_type.model_fields.get("type")
    if field is not None:
        args = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
        if len(args) == 1 and isinstance(args[0], str):
            return args[0]
        if isinstance(field.default, str):
            return field.default
    raise TypeError(
        f"{spec_type.__name__} needs a field `type: Literal['<its type>']`, the name task "
        "files use for the grader"
    )


def register_grader_spec(spec_type: type[S]) -> type[S]:
    """Let task files name `spec_type` by its `type` tag (a later registration of the same
    tag replaces the earlier one). `still.graders.register_grader` calls this.

    Raises:
        TypeError: `spec_type` is not a `BaseGraderSpec` (a plugin's programming error).
    """
    if not (isinstance(spec_type, type) and issubclass(spec_type, BaseGraderSpec)):
        raise TypeError(f"{spec_type!r}: a grader spec subclasses still.tasks.BaseGraderSpec")
    _GRADER_TYPES[grader_tag(spec_type)] = spec_type
    return spec_type


def grader_spec_type(tag: str) -> type[BaseGraderSpec] | None:
    """The spec type registered for `tag` (plugins loaded first if it is unknown), or None."""
    if tag not in _GRADER_TYPES:
        load_plugins()
    return _GRADER_TYPES.get(tag)


def grader_types() -> list[str]:
    """Every grader `type` a task file may name (built-ins and plugins')."""
    load_plugins()
    return list(_GRADER_TYPES)


def register_recipe_name(name: str) -> None:
    """Let task files name the recipe `name` in `train.recipe`. `still.train.register_recipe`
    calls this."""
    if name not in _RECIPES:
        _RECIPES.append(name)


def recipe_names(name: str | None = None) -> list[str]:
    """Every recipe name a task file may use; plugins are loaded first unless `name` is
    already one of them."""
    if name is None or name not in _RECIPES:
        load_plugins()
    return list(_RECIPES)
