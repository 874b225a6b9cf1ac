"""A model folder retrained behind the same reference is refused, not answered for from
the store: the store keys answers by the model's reference, not its weights."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from still.models import model_folder
from still.pipeline import open_run
from still.pipeline._model_folders import RECORD, fingerprint, model_refs
from still.pipeline._run import StageError
from still.tasks import load_task
from test_helpers import write_task


def test_a_changed_teacher_folder_is_refused_and_an_identical_copy_is_not(
    tmp_path: Path, tiny_model: Path
) -> None:
    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_model, teacher)
    task = write_task(tmp_path, student="scripted:first-label", teacher=f"local:{teacher}")
    run_dir = tmp_path / "run"
    open_run(task, run_dir)
    record = json.loads((run_dir / RECORD).read_text())
    assert list(record) == [f"local:{teacher}"]  # scripted: not a folder
    assert record[f"local:{teacher}"]["fingerprint"] == fingerprint(teacher)

    shutil.rmtree(teacher)  # the same weights again (a fresh copy): accepted
    shutil.copytree(tiny_model, teacher)
    weights = next(teacher.glob("*.safetensors"))
    os.utime(weights, (1, 1))  # another file time: hashed again, and found the same
    open_run(task, run_dir)
    assert json.loads((run_dir / RECORD).read_text()) != record  # the new times are kept

    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # retrained: one tensor mid-file, same size and name
    weights.write_bytes(bytes(data))
    with pytest.raises(StageError) as info:
        open_run(task, run_dir)
    message = str(info.value)
    assert "models.teacher" in message and "weights changed" in message
    assert "--run-dir" in message and "\n" not in message
    open_run(task, tmp_path / "fresh")  # a new run folder takes the new teacher


def test_only_folders_are_fingerprinted(tmp_path: Path, tiny_model: Path) -> None:
    assert model_folder(f"local:{tiny_model}") == tiny_model
    assert model_folder(f"vllm:{tiny_model}") == tiny_model
    assert model_folder(str(tiny_model)) == tiny_model
    for ref in ("local:smollm2-135m-instruct", "openai:gpt-4o-mini", "scripted:echo"):
        assert model_folder(ref) is None
    assert model_folder(f"local:{tmp_path}") is None  # no config.json: not a model


def test_judges_and_ensemble_members_are_found(tmp_path: Path, tiny_model: Path) -> None:
    """A model folder as an ensemble member or a judge is fingerprinted like a role's."""
    judge = {"type": "score_model", "name": "judge", "model": f"local:{tiny_model}",
             "input": [{"role": "user", "content": "{{ sample.output_text }}"}]}  # fmt: skip
    task = write_task(tmp_path, student="scripted:echo", graders=[judge],
                      ensemble={"members": 2, "models": [f"local:{tiny_model}"]})  # fmt: skip
    refs = dict(model_refs(load_task(task)))
    assert refs["graders.0.model"] == refs["ensemble.models.0"] == f"local:{tiny_model}"
    assert refs["models.teacher"] == "scripted:echo"
