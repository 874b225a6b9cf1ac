"""A model folder retrained behind the same reference is refused, not answered for from
the store: the store keys answers by the model's reference, not its weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from still.pipeline import open_run
from still.pipeline._model_folders import RECORD, fingerprint, model_folder
from still.pipeline._run import StageError
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
    assert record == {f"local:{teacher}": fingerprint(teacher)}  # scripted: not a folder

    shutil.rmtree(teacher)  # the same weights again (a fresh copy): accepted
    shutil.copytree(tiny_model, teacher)
    open_run(task, run_dir)

    weights = next(teacher.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # retrained: other weights, same size and name
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
