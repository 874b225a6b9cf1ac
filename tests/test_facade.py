"""The `import still` facade: every public name resolves, and no name shadows a module of
the package (`import still.capture` must give the module, with its `capture` function)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import still
import still.capture


def test_import_still_capture_gives_the_module_and_its_function() -> None:
    assert isinstance(still.capture, ModuleType)
    assert still.capture is importlib.import_module("still.capture")
    assert callable(still.capture.capture) and still.capture.capture.__name__ == "capture"


def test_no_public_name_of_still_shadows_one_of_its_modules() -> None:
    for info in pkgutil.iter_modules(still.__path__):
        if hasattr(still, info.name):
            module = importlib.import_module(f"still.{info.name}")
            assert getattr(still, info.name) is module, f"still.{info.name} is not the module"


def test_every_name_in_all_resolves() -> None:
    assert still.__all__ and all(hasattr(still, name) for name in still.__all__)
