"""Plugins: other packages add providers, graders and training recipes to still.

A plugin is an installed package that declares an entry point in the group `still`:

    [project.entry-points.still]
    my_grader = "my_package.still_plugin"

The entry point names a module (importing it runs its registrations) or a function taking
no arguments (called once). Either way it registers through the same calls the built-ins
use: `still.models.register_provider`, `still.graders.register_grader` and
`still.train.register_recipe`. Plugins load once, lazily, the first time a registry is
consulted (a model, grader or recipe looked up), never at import, so `still --help` stays
fast and a broken plugin only matters to a run that needs a registry.

Modelled on llm's plugins.py, which registers its default plugins through the same hook
as third-party ones and then loads the `llm` entry points.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from types import ModuleType

from still.errors import StillError

GROUP = "still"
"""The entry-point group plugins declare."""

log = logging.getLogger(__name__)

_loaded: list[str] | None = None
_lock = threading.RLock()


class PluginError(StillError, RuntimeError):
    """An installed plugin failed to load."""


def load_plugins() -> list[str]:
    """Load every `still` entry point once, in name order; later calls return at once.

    Returns:
        The names of the loaded plugins.

    Raises:
        PluginError: a plugin failed to import or to register (it names the plugin).
    """
    global _loaded
    with _lock:  # a registry consulted from two threads loads plugins once
        if _loaded is not None:
            return list(_loaded)
        _loaded = []
        for ep in sorted(importlib.metadata.entry_points(group=GROUP), key=lambda e: e.name):
            try:
                target = ep.load()
                if callable(target) and not isinstance(target, ModuleType):
                    target()
            except Exception as exc:  # any error in third-party code: name the plugin
                _loaded = None  # the next lookup fails the same way, not half-loaded
                raise PluginError(
                    f"plugin {ep.name!r} ({ep.value}) failed to load: {exc!r}; fix or "
                    "uninstall the package that provides it"
                ) from exc
            _loaded.append(ep.name)
            log.debug("loaded plugin %s (%s)", ep.name, ep.value)
        return list(_loaded)


def reset_plugins() -> None:
    """Forget which plugins were loaded, so the next lookup loads them again (tests)."""
    global _loaded
    with _lock:
        _loaded = None
