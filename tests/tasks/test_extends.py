"""`extends:` a variant task file says only what differs from its base task file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from still.tasks import TaskError, load_task
from test_helpers import write_task


def _variant(tmp_path: Path, body: dict[str, object], name: str = "variant.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return path


def test_variant_merges_mappings_and_replaces_the_rest(tmp_path: Path) -> None:
    base = write_task(tmp_path, student="local:smollm2-135m-instruct")
    original = load_task(base)
    variant = _variant(
        tmp_path,
        {
            "extends": base.name,
            "name": "toy-vllm",
            "models": {"teacher": "vllm:gemma3-270m"},
            "labels": list(reversed(original.labels or [])),
        },
    )
    task = load_task(variant)
    assert task.name == "toy-vllm"
    assert task.models.teacher == "vllm:gemma3-270m"
    assert task.models.student == original.models.student  # merged, not replaced
    assert task.labels == list(reversed(original.labels or []))  # a list is replaced whole
    assert task.prompts == original.prompts and task.split == original.split
    assert task.base_dir == tmp_path.resolve()


def test_variant_of_a_variant(tmp_path: Path) -> None:
    base = write_task(tmp_path, student="local:smollm2-135m-instruct")
    _variant(tmp_path, {"extends": base.name, "name": "one"}, "one.yaml")
    two = _variant(tmp_path, {"extends": "one.yaml", "split": {"heldout": 5}}, "two.yaml")
    task = load_task(two)
    assert task.name == "one"
    assert task.split.heldout == 5 and task.split.seed == load_task(base).split.seed


def test_cycle_and_missing_base_are_one_line_errors(tmp_path: Path) -> None:
    _variant(tmp_path, {"extends": "b.yaml"}, "a.yaml")
    _variant(tmp_path, {"extends": "a.yaml"}, "b.yaml")
    with pytest.raises(TaskError, match="extends itself"):
        load_task(tmp_path / "a.yaml")
    missing = _variant(tmp_path, {"extends": "nowhere.yaml"}, "c.yaml")
    with pytest.raises(TaskError, match=r"no task file .*nowhere\.yaml"):
        load_task(missing)


def test_a_field_wrong_in_the_variant_is_still_named(tmp_path: Path) -> None:
    base = write_task(tmp_path, student="local:smollm2-135m-instruct")
    variant = _variant(tmp_path, {"extends": base.name, "models": {"studnet": "x"}})
    with pytest.raises(TaskError, match="studnet"):
        load_task(variant)


def test_the_vllm_demo_variant_is_the_demo_on_vllm() -> None:
    demo = load_task(Path("examples/trec/task.yaml"))
    variant = load_task(Path("examples/trec/vllm.yaml"))
    assert variant.models.teacher == "vllm:" + demo.models.teacher.removeprefix("local:")
    assert variant.models.student == "vllm:" + demo.models.student.removeprefix("local:")
    assert (variant.prompts, variant.split, variant.train) == (demo.prompts, demo.split, demo.train)
    assert variant.name != demo.name  # its own run folder
