"""Plugins: an installed package's `still` entry point adds providers, graders and recipes
through the calls the built-ins use, loaded once, on the first lookup; a task file names
the plugin's grader (with its own options) and its recipe like built-in ones."""

from __future__ import annotations

import importlib.metadata
import json
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field

from still import plugins
from still.errors import GraderError, TrainError
from still.graders import build_grader, grade, grader_specs, register_grader
from still.graders._registry import _FACTORIES
from still.models import get_model, register_provider, schemes
from still.models._provider import _SCHEMES
from still.pipeline import capture_role, export_stage, grade_stage, open_run, train_stage
from still.plugins import PluginError, load_plugins
from still.tasks import BaseGraderSpec, Example, TaskError, TrainSpec, load_task
from still.tasks._registry import _GRADER_TYPES, _RECIPES
from still.train import RECIPES, Recipe, get_recipe, register_recipe
from still.types import Completion, Grade, Request
from test_helpers import write_task


class ShoutSpec(BaseGraderSpec):
    """A plugin's own grader spec: passes answers written in capitals."""

    type: Literal["shout"] = "shout"
    name: str


class ContainsSpec(BaseGraderSpec):
    """A plugin grader with options of its own, validated when a task file is loaded."""

    type: Literal["contains"]
    name: str
    word: str
    at_least: int = Field(1, ge=1)


@dataclass(frozen=True)
class Contains:
    """Passes answers that hold `word` at least `at_least` times."""

    name: str
    spec: ContainsSpec

    def grade(
        self,
        sample: Mapping[str, Any],
        item: Mapping[str, Any],
        example_id: str,
        completion_id: str | None,
    ) -> Grade:
        found = sample["output_text"].count(self.spec.word) >= self.spec.at_least
        return Grade(grader=self.name, example_id=example_id, completion_id=completion_id,
                     score=float(found), passed=found)  # fmt: skip


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

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        return [Completion(request=r, text="YES", latency_s=0.0) for r in requests]


def _train_shout(*args: Any, **kwargs: Any) -> None:  # never called: only looked up
    raise AssertionError


CALLS: list[str] = []
TRAINED: list[dict[str, Any]] = []


def _train_memorise(
    base_model: Path,
    data: Path,
    out_dir: Path,
    spec: TrainSpec,
    on_step: Callable[[int, int, float], None] | None = None,
) -> None:
    """A plugin trainer: "learns" each row's answer by heart, one step per row, and saves
    what the train stage reads back (train.json), as every trainer does."""
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    answers = [row["messages"][-1]["content"] for row in rows]
    for step, _ in enumerate(answers, 1):
        if on_step is not None:
            on_step(step, len(answers), 0.0)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "answers.json").write_text(json.dumps(answers))
    info = {"recipe": spec.recipe, "steps": len(answers), "examples": len(answers),
            "seconds": 0.0, "losses": [0.0]}  # fmt: skip
    (out_dir / "train.json").write_text(json.dumps(info))
    TRAINED.append({"base": base_model, "data": data, "out": out_dir, "recipe": spec.recipe})


def _register() -> None:
    """The plugin's entry point: registers one of each, as built-ins do."""
    CALLS.append("register")
    register_grader(ShoutSpec)(lambda spec, name: Shout(name))
    register_grader(ContainsSpec)(lambda spec, name: Contains(name, spec))
    register_recipe("shout", Recipe(data="shout.jsonl", trainer=_train_shout))
    register_recipe("memorise", Recipe(data="train.jsonl", trainer=_train_memorise))
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
    monkeypatch.setattr("still.tasks._registry._GRADER_TYPES", dict(_GRADER_TYPES))
    monkeypatch.setattr("still.tasks._registry._RECIPES", list(_RECIPES))
    CALLS.clear()
    TRAINED.clear()
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
    with pytest.raises(TrainError, match="unknown recipe 'shout'; known: sft, kd"):
        get_recipe("shout")
    with pytest.raises(GraderError, match="no grader is registered for ShoutSpec"):
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


def _task(tmp_path: Path, **task: Any) -> Path:
    """A free-text task (the echo teacher answers with the question) with these fields."""
    return write_task(tmp_path, student="scripted:echo", labels=None, **task)


def test_a_task_file_names_a_plugin_grader_with_its_options_and_it_grades(
    plugin_installed: None, tmp_path: Path
) -> None:
    path = _task(tmp_path, graders=[{"type": "contains", "name": "human", "word": "human"}])
    assert load_task(path).graders == [ContainsSpec(type="contains", name="human", word="human")]

    run = open_run(path, tmp_path / "run")
    capture_role(run, "teacher", "train")
    grade_stage(run, "teacher", "train")

    answers = {c.request.messages[-1].content: c for c in run.stored("teacher", "train").values()}
    passed = {g.example_id for g in run.store.grades("human") if g.passed}
    expected = {e.id for e in run.examples("train") if "human" in e.fields["text"]}
    assert passed == expected and 0 < len(passed) < len(answers)


def test_a_plugin_graders_options_are_validated_by_its_own_spec(
    plugin_installed: None, tmp_path: Path
) -> None:
    bad = {"type": "contains", "name": "human", "word": "human", "at_least": "many"}
    with pytest.raises(TaskError, match=r"graders\.0\.at_least \(line \d+\): .*valid integer"):
        load_task(_task(tmp_path, graders=[bad]))
    typo = {"type": "contains", "name": "human", "wrod": "human"}
    with pytest.raises(TaskError, match=r"graders\.0\.word \(line \d+\): required"):
        load_task(_task(tmp_path, graders=[typo]))


def test_an_unknown_grader_type_lists_the_plugin_ones_too(
    plugin_installed: None, tmp_path: Path
) -> None:
    with pytest.raises(TaskError, match=r"graders\.0\.type .*unknown type 'contain'; .*"
                       r"'string_check', .*'label_model', 'shout', 'contains'"):  # fmt: skip
        load_task(_task(tmp_path, graders=[{"type": "contain", "name": "x", "word": "y"}]))


def test_without_the_plugin_a_task_cannot_name_its_grader_or_recipe(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=r"unknown type 'contains'; use one of 'string_check'"):
        load_task(_task(tmp_path, graders=[{"type": "contains", "name": "x", "word": "y"}]))
    with pytest.raises(TaskError, match=r"train\.recipe .*unknown recipe 'memorise'; "
                       r"use one of sft, kd, kd-tokens, kd-topk, dpo"):  # fmt: skip
        load_task(_task(tmp_path, train={"recipe": "memorise"}))


def test_a_task_file_names_a_plugin_recipe_and_train_runs_its_trainer(
    plugin_installed: None, tmp_path: Path
) -> None:
    student = tmp_path / "student"  # a model folder: train_stage hands it to the trainer
    student.mkdir()
    (student / "config.json").write_text("{}")
    path = write_task(tmp_path, student=str(student), train={"recipe": "memorise"})
    assert load_task(path).train.recipe == "memorise"

    run = open_run(path, tmp_path / "run")
    capture_role(run, "teacher", "train")
    export_stage(run)
    info = train_stage(run)

    (call,) = TRAINED
    assert call == {"base": student, "data": run.train_file(), "out": run.distilled_dir(),
                     "recipe": "memorise"}  # fmt: skip
    rows = run.train_file().read_text().splitlines()
    assert info["recipe"] == "memorise" and info["examples"] == len(rows) > 0
    answers = json.loads((run.distilled_dir() / "answers.json").read_text())
    assert answers == [json.loads(r)["messages"][-1]["content"] for r in rows]
    assert train_stage(run)["skipped"] and len(TRAINED) == 1  # trained once: content-addressed
