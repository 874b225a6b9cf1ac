"""Training in several processes (accelerate, gloo between CPU processes) on the tiny model:
two processes train as one does at the same global batch; one killed ends the run with a
clear error, and running it again resumes; a recipe's own error comes back as itself;
micro-batches add up to the whole batch; setups the machine cannot run are refused.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # installed with accelerate
import pytest
import torch
from safetensors.torch import load_file

from still.errors import StillError
from still.tasks import TrainSpec
from still.train import TrainingProcessFailed, TrainingSetupError, train_sft
from still.train._parallel import check_setup, shares
from test_helpers.training import write_chat_data

SPEC = TrainSpec(method="full", epochs=4, learning_rate=5e-3, batch_size=4, precision="fp32")
TOLERANCE = 1e-5  # losses and weights, 2 processes against 1 (float sums in another order)
two_processes = pytest.mark.skipif(
    torch.cuda.is_available() and torch.cuda.device_count() < 2,
    reason="with CUDA, two processes need two GPUs",
)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _workers() -> list[psutil.Process]:
    """This test's training processes (not multiprocessing's resource tracker)."""
    found = []
    for child in psutil.Process().children():
        command = " ".join(child.cmdline())
        if "spawn_main" in command and "resource_tracker" not in command:
            found.append(child)
    return sorted(found, key=lambda p: p.pid)


def test_shares_give_every_process_the_same_number_of_micro_batches() -> None:
    batch = list(range(5))
    assert shares(batch, 0, 1, None) == [(batch, 1.0)]  # one process: the batch, as is
    assert shares(batch, 0, 2, None) == [([0, 2, 4], 3 / 5)]
    assert shares(batch, 1, 2, None) == [([1, 3], 2 / 5)]
    assert shares(batch, 0, 2, 2) == [([0, 2], 2 / 5), ([4], 1 / 5)]
    assert shares(batch, 1, 2, 2) == [([1, 3], 2 / 5), ([0], 0.0)]  # a filler at weight 0
    assert shares([7], 1, 2, None) == [([7], 0.0)]  # more processes than rows
    weight = {0: 3.0, 1: 1.0, 2: 2.0, 3: 2.0, 4: 2.0}.__getitem__  # answer tokens, say
    parts = [p for rank in (0, 1) for p in shares(batch, rank, 2, 2, weight)]
    assert sum(w for _, w in parts) == pytest.approx(1.0)
    assert parts[0] == ([0, 2], 5 / 10)


def test_micro_batches_add_up_to_the_whole_batch(tiny_model: Path, tmp_path: Path) -> None:
    data = write_chat_data(tmp_path)
    whole = train_sft(tiny_model, data, tmp_path / "whole", SPEC)
    micro = train_sft(tiny_model, data, tmp_path / "micro", SPEC.model_copy(
        update={"micro_batch_size": 1}))  # fmt: skip
    # answers of different token counts: right only if each row counts by its tokens
    assert micro.losses == pytest.approx(whole.losses, abs=TOLERANCE)


@two_processes
def test_two_processes_train_as_one_and_one_killed_resumes(
    tiny_model: Path, tmp_path: Path
) -> None:
    data = write_chat_data(tmp_path)
    one = train_sft(tiny_model, data, tmp_path / "one", SPEC)
    out = tmp_path / "two"
    spec = SPEC.model_copy(update={"processes": 2, "save_every": 2})
    killed: list[float] = []

    def kill_one(step: int, total: int, loss: float) -> None:
        if step == 3 and not killed:
            workers = _workers()
            assert len(workers) == 2
            workers[-1].kill()
            killed.append(time.monotonic())

    with pytest.raises(TrainingProcessFailed) as info:
        train_sft(tiny_model, data, out, spec, on_step=kill_one)
    assert time.monotonic() - killed[0] < 30, "the run hung on the dead process"
    message = str(info.value)
    assert "\n" not in message and "was killed (SIGKILL)" in message
    assert "of 2" in message and "resume" in message
    assert not out.exists() and not _workers()
    steps: list[float] = []
    two = train_sft(tiny_model, data, out, spec, on_step=lambda n, t, loss: steps.append(loss))
    assert two.processes == 2 and two.resumed_from >= 2
    assert len(steps) == two.steps - two.resumed_from, "progress comes from the processes"
    assert two.losses == pytest.approx(one.losses, abs=TOLERANCE)
    a, b = _weights(tmp_path / "one"), _weights(out)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= TOLERANCE
    info_json = json.loads((out / "train.json").read_text())
    assert info_json["processes"] == 2 and info_json["steps"] == 16


@two_processes
def test_a_recipe_error_in_the_processes_is_raised_as_itself(
    tiny_model: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises((ValueError, StillError), match="no training rows") as info:
        train_sft(tiny_model, empty, tmp_path / "out", SPEC.model_copy(update={"processes": 2}))
    assert not isinstance(info.value, TrainingProcessFailed)


def test_setups_this_machine_cannot_run_are_refused_before_training(
    tiny_model: Path, tmp_path: Path
) -> None:
    fsdp_one = SPEC.model_copy(update={"sharding": "fsdp", "processes": 1})
    with pytest.raises(TrainingSetupError, match="fsdp"):
        check_setup(fsdp_one)
    if torch.cuda.is_available():
        too_many = SPEC.model_copy(update={"processes": torch.cuda.device_count() + 1})
        with pytest.raises(TrainingSetupError, match="GPU"):
            check_setup(too_many)
        return
    fsdp_cpu = SPEC.model_copy(update={"sharding": "fsdp", "processes": 2})
    with pytest.raises(TrainingSetupError, match="fsdp needs GPUs") as info:
        train_sft(tiny_model, write_chat_data(tmp_path), tmp_path / "out", fsdp_cpu)
    assert "\n" not in str(info.value)
    assert not _workers(), "refused before any process started"


def test_still_train_processes_changes_how_not_which_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import still.pipeline
    from still.cli import main
    from still.pipeline import StageError, open_run
    from test_helpers import write_task

    task = write_task(tmp_path, student="scripted:first-label")
    seen: dict[str, object] = {}

    def train_stage(run: still.pipeline.Run, force: bool, keep: str) -> None:
        seen.update(processes=run.task.train.processes, folder=run.distilled_dir())
        raise StageError("stopped before training")

    monkeypatch.setattr(still.pipeline, "train_stage", train_stage)
    run_dir = tmp_path / "run"
    args = ["train", str(task), "--run-dir", str(run_dir), "--processes", "2"]
    result = CliRunner().invoke(main, args)
    assert "stopped before training" in result.output and seen["processes"] == 2
    assert seen["folder"] == open_run(task, run_dir).distilled_dir()
    result = CliRunner().invoke(main, [*args[:-1], "0"])
    assert result.exit_code == 2 and "--processes" in result.output


@two_processes
def test_still_run_processes_trains_the_student_in_that_many_processes(
    tmp_path: Path, tiny_model: Path
) -> None:
    from click.testing import CliRunner

    from still.cli import main
    from still.pipeline import open_run
    from test_helpers import write_task

    task = write_task(tmp_path, student=f"local:{tiny_model}", n=16,
                      split={"seed": 1, "heldout": 4, "validation": 0})  # fmt: skip
    run_dir = tmp_path / "run"
    args = ["run", str(task), "--run-dir", str(run_dir), "--keep", "parsed", "--processes", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    folder = open_run(task, run_dir).distilled_dir()  # the address 1 process gives it too
    assert json.loads((folder / "train.json").read_text())["processes"] == 2
    assert not list(run_dir.glob("**/*.tmp")), "only the first process writes, atomically"


def test_still_curve_processes_reaches_the_trainers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import still.pipeline
    from still.cli import main
    from still.pipeline import StageError
    from test_helpers import write_task

    task = write_task(tmp_path, student="scripted:first-label")
    seen: dict[str, object] = {}

    def learning_curve(run: still.pipeline.Run, *args: object) -> None:
        seen.update(processes=run.task.train.processes)
        raise StageError("stopped before training")

    monkeypatch.setattr(still.pipeline, "learning_curve", learning_curve)
    args = ["curve", str(task), "--run-dir", str(tmp_path / "run"), "--processes", "3"]
    result = CliRunner().invoke(main, args)
    assert "stopped before training" in result.output and seen["processes"] == 3


has_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed"
)


@two_processes
@has_deepspeed
@pytest.mark.parametrize(("sharding", "method"), [("zero2", "full"), ("zero3", "lora")])
def test_deepspeed_zero_trains_as_ddp_does(
    tiny_model: Path, tmp_path: Path, sharding: str, method: str
) -> None:
    """ZeRO partitions the gradients and optimizer state (zero2) and the weights too
    (zero3, gathered whole into the saved model) and trains as DDP does: as one process
    for full fine-tuning; LoRA's dropout draws differ between 1 and 2 processes, so there
    against DDP's 2."""
    data = write_chat_data(tmp_path)
    spec = SPEC.model_copy(update={"method": method})
    if method == "full":
        reference = train_sft(tiny_model, data, tmp_path / "one", spec)
    else:
        ddp = spec.model_copy(update={"processes": 2})
        reference = train_sft(tiny_model, data, tmp_path / "one", ddp)
    zero = spec.model_copy(update={"sharding": sharding, "processes": 2})
    result = train_sft(tiny_model, data, tmp_path / sharding, zero)
    assert result.processes == 2 and result.sharding == sharding, "DeepSpeed's engine ran"
    assert reference.sharding == ("none" if method == "full" else "ddp")
    assert result.losses == pytest.approx(reference.losses, abs=1e-4)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / sharding)
    assert a.keys() == b.keys(), "LoRA merged, the weights whole"
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-4


def test_zero_is_refused_where_it_cannot_run() -> None:
    zero3 = SPEC.model_copy(update={"sharding": "zero3", "processes": 2, "save_every": 2})
    with pytest.raises(TrainingSetupError) as info:
        check_setup(zero3.model_copy(update={"processes": 1}))
    assert "zero3 on one process shards nothing" in str(info.value)
    what = "save_every" if importlib.util.find_spec("deepspeed") else "pip install deepspeed"
    with pytest.raises(TrainingSetupError, match=what) as info:
        check_setup(zero3)
    assert "\n" not in str(info.value)


class Stop(Exception):
    """Stands for a crash of the calling process at a given step."""


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP shards across 2+ GPUs")
@pytest.mark.parametrize("method", ["full", "lora"])
def test_fsdp_trains_as_one_process_and_resumes(
    tiny_model: Path, tmp_path: Path, method: str
) -> None:
    """Sharded weights, gradients and optimizer state (gathered whole into checkpoints and
    the saved model) train as DDP does (as one process for full fine-tuning; LoRA's dropout
    draws differ between 1 and 2 processes, so there against DDP's 2, as for ZeRO); a run
    stopped at step 3 resumes."""
    data = write_chat_data(tmp_path)
    spec = SPEC.model_copy(update={"method": method, "learning_rate": 1e-2, "save_every": 2})
    reference = spec if method == "full" else spec.model_copy(update={"processes": 2})
    one = train_sft(tiny_model, data, tmp_path / "one", reference)
    sharded = spec.model_copy(update={"sharding": "fsdp", "processes": 2})

    def stop_at_3(step: int, total: int, loss: float) -> None:
        if step == 3:
            raise Stop

    out = tmp_path / "fsdp"
    with pytest.raises(Stop):
        train_sft(tiny_model, data, out, sharded, on_step=stop_at_3)
    result = train_sft(tiny_model, data, out, sharded)
    assert result.resumed_from >= 2 and result.processes == 2
    assert result.losses == pytest.approx(one.losses, abs=1e-4)
    a, b = _weights(tmp_path / "one"), _weights(out)
    assert a.keys() == b.keys(), "LoRA merged, as from one process"
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-4
