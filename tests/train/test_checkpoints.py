"""Checkpoints that resume, on the tiny model: a training SIGKILLed after a checkpoint and
run again ends with the weights an uninterrupted run has; a corrupt newest checkpoint
falls back to the one before; another configuration's checkpoint is refused; the data
position replays exactly; the new train options leave the model's content address alone.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from still.preference import PreferencePair, write_dpo
from still.tasks import TrainSpec
from still.train import CheckpointMismatch, train_sft
from still.train._common import batches
from still.train.dpo import train_dpo
from test_helpers.training import write_chat_data

# 16 rows in batches of 4 for 6 epochs: 24 steps, a checkpoint every 4; fp32 on any device
SPEC: dict[str, Any] = {"epochs": 6, "learning_rate": 5e-3, "batch_size": 4, "save_every": 4,
                        "precision": "fp32"}  # fmt: skip
TOLERANCE = 1e-5  # resumed against uninterrupted weights; on CPU they come out equal


class Stop(Exception):
    """Stands for a crash at a given step (raised from on_step)."""


def _crash_at(step: int) -> Any:
    def on_step(n: int, total: int, loss: float) -> None:
        if n == step:
            raise Stop

    return on_step


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def _steps(out: Path) -> list[str]:
    folder = out.with_name(out.name + ".checkpoints")
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def reference(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted runs, LoRA and full, without checkpoints."""
    root = tmp_path_factory.mktemp("reference")
    data = write_chat_data(root)
    out = {}
    for method in ("lora", "full"):
        out[method] = root / method
        train_sft(tiny_model, data, out[method], TrainSpec(**{**SPEC, "save_every": 0},
                                                          method=method))  # fmt: skip
    return out


def test_batches_resume_where_they_stopped() -> None:
    rows = list(range(10))
    spec = TrainSpec(batch_size=4, seed=3)
    whole = list(batches(rows, spec, 9))
    assert whole[0] != whole[3]  # epochs are reshuffled, so a skip must replay them
    for start in (0, 1, 5, 9):
        assert list(batches(rows, spec, 9, start)) == whole[start:]


SCRIPT = """
import json, sys, time
from pathlib import Path
from still.tasks import TrainSpec
from still.train import train_sft

model, data, out, spec = sys.argv[1:]
slow = lambda *step: time.sleep(0.3)  # time for the test to kill it between checkpoints
train_sft(Path(model), Path(data), Path(out), TrainSpec(**json.loads(spec)), on_step=slow)
"""


@pytest.mark.parametrize("method", ["lora", "full"])
def test_sigkilled_training_resumes_to_the_uninterrupted_weights(
    tiny_model: Path,
    tmp_path: Path,
    reference: dict[str, Path],
    method: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, out = write_chat_data(tmp_path), tmp_path / "student"
    spec = {**SPEC, "method": method}
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tiny_model), str(data), str(out), json.dumps(spec)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not _steps(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _steps(out), "the training wrote no checkpoint"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not out.exists(), "killed before the end: no final model yet"
    killed_at = _steps(out)
    caplog.set_level(logging.INFO, logger="still.train")
    result = train_sft(tiny_model, data, out, TrainSpec(**spec))
    assert result.resumed_from == int(killed_at[-1].removeprefix("step-")) > 0
    assert f"resuming from step {result.resumed_from}" in caplog.text
    assert len(result.losses) == result.steps == 24
    assert _max_diff(out, reference[method]) <= TOLERANCE
    uninterrupted = json.loads((reference[method] / "train.json").read_text())["losses"]
    assert result.losses == pytest.approx(uninterrupted, abs=TOLERANCE)
    assert not out.with_name("student.checkpoints").exists(), "kept after the final save"


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(
    tiny_model: Path, tmp_path: Path, reference: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    data, out = write_chat_data(tmp_path), tmp_path / "student"
    spec = TrainSpec(**SPEC, method="full")
    with pytest.raises(Stop):
        train_sft(tiny_model, data, out, spec, on_step=_crash_at(14))
    assert _steps(out) == ["step-12", "step-8"], "the newest two are kept"
    state = out.with_name("student.checkpoints") / "step-12" / "state.pt"
    state.write_bytes(state.read_bytes()[:-100])  # a truncated write
    caplog.set_level(logging.INFO, logger="still.train")
    result = train_sft(tiny_model, data, out, spec)
    assert "step-12 is corrupt" in caplog.text and "falling back" in caplog.text
    assert result.resumed_from == 8
    assert _max_diff(out, reference["full"]) <= TOLERANCE


def test_a_checkpoint_of_another_configuration_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    data, out = write_chat_data(tmp_path), tmp_path / "student"
    with pytest.raises(Stop):
        train_sft(tiny_model, data, out, TrainSpec(**SPEC), on_step=_crash_at(5))
    steps: list[int] = []
    other = TrainSpec(**{**SPEC, "learning_rate": 1e-3})
    with pytest.raises(CheckpointMismatch, match="another training configuration") as info:
        train_sft(tiny_model, data, out, other, on_step=lambda n, *_: steps.append(n))
    assert "\n" not in str(info.value) and "delete" in str(info.value)
    assert steps == [], "refused before any step"
    data.write_text(data.read_text().replace("human", "person"))  # other data: refused too
    with pytest.raises(CheckpointMismatch):
        train_sft(tiny_model, data, out, TrainSpec(**SPEC))


def test_dpo_resumes_through_the_same_loop(tiny_model: Path, tmp_path: Path) -> None:
    def prompt(q: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": "Classify."}, {"role": "user", "content": q}]

    rows = [
        ("Who wrote the play?", "human", "location"),
        ("Where is the river?", "location", "number"),
        ("How many days?", "number", "human"),
        ("What does NASA stand for?", "abbreviation", "entity description"),
    ]
    pairs = [PreferencePair(f"ex{i}", prompt(q), c, r) for i, (q, c, r) in enumerate(rows)] * 3
    data = tmp_path / "dpo-trl.jsonl"
    write_dpo(pairs, data, "trl")
    spec = TrainSpec(method="full", epochs=4, batch_size=4, save_every=3, precision="fp32")
    whole = train_dpo(
        tiny_model, data, tmp_path / "whole", spec.model_copy(update={"save_every": 0})
    )
    out = tmp_path / "resumed"
    with pytest.raises(Stop):
        train_dpo(tiny_model, data, out, spec, on_step=_crash_at(8))
    result = train_dpo(tiny_model, data, out, spec)
    assert result.resumed_from == 6 and result.recipe == "dpo"
    assert result.losses == pytest.approx(whole.losses, abs=TOLERANCE)
    assert _max_diff(out, tmp_path / "whole") <= TOLERANCE


def test_how_to_train_leaves_the_content_address_alone() -> None:
    """precision, save_every, processes, sharding and micro_batch_size say how a model is
    trained, not which: the model folder's hash (a dump of the spec) ignores them."""
    plain = TrainSpec()
    tuned = TrainSpec(precision="bf16", save_every=50, processes=2, micro_batch_size=2)
    assert tuned.model_dump_json() == plain.model_dump_json()
    assert tuned.save_every == 50 and tuned.processes == 2


def test_bf16_on_cpu_trains_and_auto_is_fp32(
    tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if torch.cuda.is_available():
        pytest.skip("auto is bf16 on a GPU with bf16")
    data = write_chat_data(tmp_path)
    caplog.set_level(logging.INFO, logger="still.train")
    spec = TrainSpec(method="full", epochs=4, learning_rate=5e-3, batch_size=4)
    auto = train_sft(tiny_model, data, tmp_path / "auto", spec)
    assert auto.precision == "fp32" and "training in fp32 on cpu" in caplog.text
    bf16 = train_sft(
        tiny_model, data, tmp_path / "bf16", spec.model_copy(update={"precision": "bf16"})
    )
    assert "training in bf16 mixed precision" in caplog.text
    info = json.loads((tmp_path / "bf16" / "train.json").read_text())
    assert info["precision"] == "bf16"
    assert bf16.last_loss < bf16.first_loss * 0.5, bf16.losses
    assert bf16.losses != auto.losses, "bf16 autocast changed nothing: it did not run"
    assert bf16.first_loss == pytest.approx(auto.first_loss, rel=0.01)  # same model, bf16 math
    weights = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert all(w.dtype == torch.float32 for w in weights.values()), "fp32 master weights"
