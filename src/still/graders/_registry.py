"""The grader registry: each kind of grader spec names the factory that builds its grader.

Every grader module registers its factory with `@register_grader(SpecType)`, keyed by the
spec type the task file parses into (`StringCheckSpec` -> `StringCheck`, ...); a plugin
does the same for its own spec type (see `still.plugins`). Registering also tells the task
schema the spec's `type` (`still.tasks.register_grader_spec`), so a task file can name the
grader and have its options validated by the spec. `build_grader` looks the spec's type
up, so adding a grader adds a module (its spec, grader and factory), never a branch here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from still.errors import GraderError
from still.plugins import load_plugins
from still.tasks import BaseGraderSpec, register_grader_spec
from still.types import Grade


class Grader(Protocol):
    """What every grader is: a name, and a verdict on one completion of one example."""

    @property
    def name(self) -> str: ...

    def grade(
        self,
        sample: Mapping[str, Any],
        item: Mapping[str, Any],
        example_id: str,
        completion_id: str | None,
    ) -> Grade: ...


S = TypeVar("S", bound=BaseGraderSpec)
GraderFactory = Callable[[Any, str], Grader]
"""(spec, name) -> grader; `name` is the spec's name unless a multi grader renames it."""

_FACTORIES: dict[type[BaseGraderSpec], GraderFactory] = {}


def register_grader(
    spec_type: type[S],
) -> Callable[[Callable[[S, str], Grader]], Callable[[S, str], Grader]]:
    """Register the factory that builds a grader from a `spec_type` spec, and the spec's
    `type` with the task schema; built-ins use this too. A later registration for the same
    type replaces the earlier one.

    Args:
        spec_type: a `still.tasks.BaseGraderSpec` subclass with `type: Literal["<name>"]`
            and the grader's options as fields.
    """

    def deco(factory: Callable[[S, str], Grader]) -> Callable[[S, str], Grader]:
        register_grader_spec(spec_type)
        _FACTORIES[spec_type] = factory
        return factory

    return deco


def grader_specs() -> list[type[BaseGraderSpec]]:
    """The spec types a grader can be built from (built-ins and plugins')."""
    load_plugins()
    return list(_FACTORIES)


def build_grader(spec: BaseGraderSpec, name: str | None = None) -> Grader:
    """Turn a task's grader spec (OpenAI grader JSON) into a grader.

    Args:
        spec: the spec (a registered spec type, or a subclass of one).
        name: overrides the spec's name (a multi grader's sub-graders are named by their
            key, the variable its formula uses).

    Raises:
        GraderError: a configuration error (unknown metric, bad formula...), at build time,
            or a spec type no grader is registered for.
    """
    load_plugins()
    for cls in type(spec).__mro__:
        factory = _FACTORIES.get(cls)
        if factory is not None:
            return factory(spec, name or spec.name)
    known = ", ".join(sorted(t.__name__ for t in _FACTORIES))
    raise GraderError(f"no grader is registered for {type(spec).__name__} (known: {known})")
