"""Plugins: an installed package's `still` entry point adds providers, graders and recipes
through the calls the built-ins use, loaded once, on the first lookup."""

from __future__ import annotations

import importlib.metadata
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from still import plugins
from still.graders import build_grader, grade, grader_specs, register_grader
from still.graders._registry import _FACTORIES
from still.models import get_model, register_provider, schemes
from still.models._provider import _SCHEMES
from still.plugins import PluginError, load_plugins
from still.tasks import Example
from still.train import RECIPES, Recipe, get_recipe, register_recipe
from still.types import Completion, Grade, Request


class ShoutSpec(BaseModel):
    """A plugin's own grader spec: passes answers written in capitals."""

    type: str = "shout"
    name: str


@dataclass(frozen=True)
class Shout:
    name: str

    def grade(
        self,
        sample: Mapping[str, Any],
        item: Mapping[str, Any],
        example_id: str,
        completion_id: str | None,
    ) -> Grade:
        loud = sample["output_text"].isupper()
        return Grade(grader=self.name, example_id=example_id, completion_id=completion_id,
                     score=float(loud), passed=loud)  # fmt: skip


class Loud:
    """A plugin provider: answers every request in capitals."""

    name = "loud"

    def complete(self, requests: list[Request]) -> list[Completion]:
        return [Completion(request=r, text="YES", latency_s=0.0) for r in requests]


def _train_shout(*args: Any, **kwargs: Any) -> None:  # never called: only looked up
    raise AssertionError


CALLS: list[str] = []


def _register() -> None:
    """The plugin's entry point: registers one of each, as built-ins do."""
    CALLS.append("register")
    register_grader(ShoutSpec)(lambda spec, name: Shout(name))
    register_recipe("shout", Recipe(data="shout.jsonl", trainer=_train_shout))
    register_provider("loud", "answers in capitals")(lambda ref: Loud())


@pytest.fixture
def plugin_installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An installed package `still_shout` whose entry point `shout` is `_register`."""
    module = types.ModuleType("still_shout")
    module.register = _register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "still_shout", module)
    ep = importlib.metadata.EntryPoint("shout", "still_shout:register", plugins.GROUP)

    def entry_points(**select: Any) -> importlib.metadata.EntryPoints:
        assert select == {"group": plugins.GROUP}
        return importlib.metadata.EntryPoints([ep])

    schemes()  # the built-in providers register first (lazily), into the real registry
    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    # what the plugin registers is forgotten afterwards, like the plugin itself
    monkeypatch.setattr("still.graders._registry._FACTORIES", dict(_FACTORIES))
    monkeypatch.setattr("still.train._recipes.RECIPES", dict(RECIPES))
    monkeypatch.setattr("still.models._provider._SCHEMES", dict(_SCHEMES))
    CALLS.clear()
    plugins.reset_plugins()
    yield
    plugins.reset_plugins()


def test_the_builtin_providers_outlive_a_plugin_test(plugin_installed: None) -> None:
    assert "scripted" in schemes()


def test_after_a_plugin_test_the_builtins_are_still_registered() -> None:
    assert {"local", "openai", "scripted"} <= set(schemes())
    assert get_recipe("sft").data == "train.jsonl"


def test_an_entry_point_adds_a_grader_a_recipe_and_a_provider(plugin_installed: None) -> None:
    g = build_grader(ShoutSpec(name="loud"))
    ex = Example(id="e", fields={}, answer="x", source="t:1")
    comp = get_model("loud:any").complete([Request(model="loud:any", messages=[])])[0]
    (verdict,) = grade([g], ex, comp, None)
    assert verdict.grader == "loud" and verdict.passed
    assert get_recipe("shout").data == "shout.jsonl"
    assert ShoutSpec in grader_specs()
    assert load_plugins() == ["shout"]
    assert CALLS == ["register"]  # loaded once, however many lookups


def test_without_the_plugin_its_names_are_unknown() -> None:
    with pytest.raises(ValueError, match="unknown recipe 'shout'; known: sft, kd"):
        get_recipe("shout")
    with pytest.raises(ValueError, match="no grader is registered for ShoutSpec"):
        build_grader(ShoutSpec(name="loud"))


def test_a_broken_plugin_is_named_and_fails_every_lookup(
    plugin_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise ImportError("needs numpy 9")

    monkeypatch.setattr(sys.modules["still_shout"], "register", broken)
    for _ in range(2):
        with pytest.raises(PluginError, match=r"plugin 'shout' \(still_shout:register\).*numpy 9"):
            get_recipe("sft")
