"""The Provider protocol and the model registry.

Anything that answers chat requests is a Provider: a batch of `Request`s in, one
`Completion` per request out, in order. A provider never raises for one bad request: it
returns a failed Completion (with `error`) so the batch goes on and the failure is counted.

Providers register a factory per reference scheme (`local:`, `scripted:`); factories import
heavy libraries only when called, so `still --help` stays instant. Plugins register theirs
the same way (entry points in the group `still`, loaded on the first lookup).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
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
ERROR_CHARS = 300
"""The most characters of an exception's text kept in a failed completion's `error`."""

FOLDER_SCHEMES = ("local:", "vllm:")
"""Schemes whose reference may be a model folder's path (both engines load the same one)."""


def model_folder(ref: str) -> Path | None:
    """The Hugging Face model folder a reference names (`local:<dir>`, `vllm:<dir>` or a bare
    directory), known by its config.json; None for bundled names, endpoints and scripted
    models. The one test of "is this a folder", so a reference is read the same way by the
    providers, the task check and the run folder's fingerprints."""
    target = ref
    for scheme in FOLDER_SCHEMES:
        target = target.removeprefix(scheme)
    folder = Path(target)  # `openai:gpt-4o` names no folder with a config.json either
    return folder if (folder / "config.json").is_file() else None


def isolate_failures(
    batch: Sequence[Request],
    answer: Callable[[list[Request]], list[Completion]],
    give_up: Callable[[BaseException], bool] = lambda exc: False,
) -> list[Completion]:
    """Answer `batch` with `answer` in one call; if that raises, answer each request alone,
    so one bad request (a prompt too long, a label that tokenizes to nothing) becomes one
    failed completion and its neighbours are answered.

    Args:
        batch: The requests, answered together when nothing fails.
        answer: Answers a list of requests, one completion each, in order; may raise.
        give_up: Called with the exception of a failed call; when true (an engine that
            died cannot answer any request alone either), every request of that call fails
            with it, unretried.

    Returns:
        One completion per request, in order; a failed one has `error` set to the
        exception's type and its text on one line (`ERROR_CHARS` at most), and the failed
        call's wall time shared out as its `latency_s`.
    """
    requests = list(batch)
    start = time.perf_counter()
    try:
        return answer(requests)
    except Exception as exc:  # noqa: BLE001 - stored as failed completions; the run goes on
        if not give_up(exc) and len(requests) > 1:
            return [c for r in requests for c in isolate_failures([r], answer, give_up)]
        err = f"{type(exc).__name__}: {' '.join(str(exc).split())[:ERROR_CHARS]}"
        wall = time.perf_counter() - start
        return [
            Completion(request=r, request_hash=r.key(), error=err, latency_s=wall / len(requests))
            for r in requests
        ]


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
    if model_folder(ref) is not None:
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
