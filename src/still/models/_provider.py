"""The Provider protocol and the model registry.

Anything that answers chat requests is a Provider: a batch of `Request`s in, one
`Completion` per request out, in order. A provider never raises for one bad request: it
returns a failed Completion (with `error`) so the batch goes on and the failure is counted.

Providers register a factory per reference scheme (`local:`, `scripted:`); factories import
heavy libraries only when called, so `still --help` stays instant. Plugins register theirs
the same way (entry points in the group `still`, loaded on the first lookup).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from still.errors import ModelError
from still.plugins import load_plugins
from still.types import Completion, Request


@runtime_checkable
class Provider(Protocol):
    """A model that answers chat requests in batches."""

    name: str

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        """Answer every request; failures come back as completions with `error` set."""
        ...


ProviderFactory = Callable[[str], Provider]


@dataclass(frozen=True)
class _Scheme:
    factory: ProviderFactory
    help: str


_SCHEMES: dict[str, _Scheme] = {}


def register_provider(scheme: str, help: str) -> Callable[[ProviderFactory], ProviderFactory]:
    """Register a factory for references `<scheme>:<rest>`; built-ins use this too."""

    def deco(factory: ProviderFactory) -> ProviderFactory:
        _SCHEMES[scheme] = _Scheme(factory, help)
        return factory

    return deco


def schemes() -> dict[str, str]:
    """Registered reference schemes and what each one means."""
    _load_builtins()
    return {k: v.help for k, v in sorted(_SCHEMES.items())}


def get_model(ref: str) -> Provider:
    """Resolve a model reference into a Provider.

    Args:
        ref: `local:<bundled name>`, `local:<path to a Hugging Face model dir>`, a bare path
            to such a directory, or `scripted:<mode>` (offline test provider).

    Raises:
        ModelError: the reference matches nothing; the message lists what is known.
    """
    _load_builtins()
    scheme, sep, rest = ref.partition(":")
    if sep and scheme in _SCHEMES:
        return _SCHEMES[scheme].factory(ref)
    if os.path.isfile(os.path.join(ref, "config.json")):
        return _SCHEMES["local"].factory("local:" + ref)
    raise ModelError(f"unknown model {ref!r}. Known: {', '.join(known_models())}")


def known_models() -> list[str]:
    """Every reference that resolves without a path: bundled models and scheme patterns."""
    from still.models._bundled import BUNDLED

    _load_builtins()
    names = [f"local:{n}" for n in BUNDLED]
    names += [f"{s}:..." for s in _SCHEMES]
    return names


def _load_builtins() -> None:
    # Importing the modules runs their @register_provider decorators (cheap: no torch);
    # plugins then register theirs through the same decorator (still.plugins).
    from still.models import _local, _openai, _scripted, _vllm  # noqa: F401

    load_plugins()
