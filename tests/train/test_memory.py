"""What a training holds in memory, from the student's config alone: the parameter counts
match the loaded model's (tied embeddings once, LoRA's adapters as peft makes them), the
parts add up as the module says, and a training that cannot fit is refused in one line,
saying what to change, before its model is loaded: reckoned with the rows its data gives
(padded or packed), not max_length, once that is known. `still estimate` shows it all.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from still.tasks import TrainSpec, load_task
from still.train import (
    DeviceMemory,
    DoesNotFit,
    TrainingSetupError,
    check_fits,
    estimate_memory,
    model_shape,
    train_sft,
)
from still.train._memory import NF4_BYTES
from still.train._parallel import micro_rows
from test_helpers.training import ROWS, write_chat_data

SPEC = TrainSpec(method="full", batch_size=4, max_length=64, lora_r=4, precision="fp32")
CPU = DeviceMemory("cpu", "this machine", 64 * 1024**3, shared=True)


def _loaded(folder: Path, method: str) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if method == "lora":
        config = LoraConfig(r=SPEC.lora_r, target_modules="all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    return model


def test_the_shape_counts_what_the_loaded_model_holds(tiny_model: Path) -> None:
    shape = model_shape(tiny_model)
    full = _loaded(tiny_model, "full")
    assert shape.parameters == sum(p.numel() for p in full.parameters())  # tied: once
    linear = [m for n, m in full.named_modules()
              if isinstance(m, torch.nn.Linear) and n != "lm_head"]  # fmt: skip
    assert shape.linear == sum(p.numel() for m in linear for p in m.parameters())
    lora = _loaded(tiny_model, "lora")
    adapters = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert shape.trainable("lora", SPEC.lora_r) == adapters
    assert shape.trainable("full", SPEC.lora_r) == shape.parameters


def test_the_parts_add_up_per_method_precision_and_sharding(tiny_model: Path) -> None:
    shape = model_shape(tiny_model)
    p, lora = shape.parameters, shape.trainable("lora", SPEC.lora_r)
    full = estimate_memory(shape, SPEC, "full")
    assert (full.weights, full.gradients, full.optimizer) == (4 * p, 4 * p, 8 * p)
    assert full.total == full.weights + full.gradients + full.optimizer + full.activations
    adapters = estimate_memory(shape, SPEC, "lora")
    assert (adapters.weights, adapters.gradients, adapters.optimizer) == (
        4 * p + 4 * lora, 4 * lora, 8 * lora)  # fmt: skip
    assert adapters.activations > full.activations  # LoRA's dropped-out inputs
    quantized = estimate_memory(shape, SPEC, "qlora")
    rest = p - shape.linear
    assert quantized.weights == pytest.approx(shape.linear * NF4_BYTES + 4 * rest + 4 * lora)
    bf16 = estimate_memory(shape, SPEC, "full", bf16=True)
    assert bf16.weights == 6 * p and bf16.activations < full.activations
    # activations grow with the rows of a micro-batch and their length (sdpa: linearly)
    assert not shape.eager_attention
    double = SPEC.model_copy(update={"batch_size": 8, "max_length": 128})
    assert estimate_memory(shape, double, "full").activations == pytest.approx(4 * full.activations)
    micro = SPEC.model_copy(update={"micro_batch_size": 1})
    assert estimate_memory(shape, micro, "full").activations == pytest.approx(full.activations / 4)
    assert estimate_memory(shape, SPEC, "full", recipe="dpo").rows == 2 * full.rows
    # two processes take half a batch each; FSDP and ZeRO shard the state
    two = estimate_memory(shape, SPEC, "full", processes=2)
    assert two.rows == micro_rows(SPEC, 2) == 2 and two.weights == full.weights
    for sharding, weights in (("zero2", 4 * p), ("zero3", 2 * p), ("fsdp", 2 * p)):
        spec = SPEC.model_copy(update={"sharding": sharding})
        sharded = estimate_memory(shape, spec, "full", processes=2)
        assert (sharded.weights, sharded.gradients, sharded.optimizer) == (weights, 2 * p, 4 * p)


def test_a_training_that_cannot_fit_is_refused_before_the_model_loads(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shape = model_shape(tiny_model)
    spec = SPEC.model_copy(update={"batch_size": 1, "max_length": 8})  # weights dominate
    full = estimate_memory(shape, spec, "full")
    lora = estimate_memory(shape, spec, "lora")
    assert lora.total < full.total
    between = DeviceMemory("cpu", "this machine", (lora.total + full.total) / 2, shared=True)
    assert check_fits(tiny_model, spec.model_copy(update={"method": "lora"}), device=between)
    with pytest.raises(DoesNotFit) as info:
        check_fits(tiny_model, spec, device=between)
    message = str(info.value)
    assert "\n" not in message and "use train.method: lora" in message
    assert f"{shape.parameters / 1e6:,.0f}M parameters, full" in message
    # on CPU, processes share the memory: two hold the model twice (half a batch each)
    exact = DeviceMemory("cpu", "this machine", lora.total, shared=True)
    lora_spec = spec.model_copy(update={"method": "lora"})
    assert check_fits(tiny_model, lora_spec, 1, device=exact)
    with pytest.raises(DoesNotFit, match=r"x 2 processes"):
        check_fits(tiny_model, lora_spec, 2, device=exact)

    import still.train._common as common
    import still.train._memory as memory

    def not_loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(common, "build_model", not_loaded)
    monkeypatch.setattr(memory, "device_memory", lambda: between)
    out = tmp_path / "out"
    with pytest.raises(DoesNotFit, match="needs about"):
        train_sft(tiny_model, write_chat_data(tmp_path), out, spec)
    assert not out.exists()


def test_a_batch_no_machine_holds_is_refused_in_one_line(tiny_model: Path, tmp_path: Path) -> None:
    huge = SPEC.model_copy(update={"batch_size": 1_000_000, "max_length": 10_000_000})
    with pytest.raises(DoesNotFit) as info:  # no data known: rows of max_length
        check_fits(tiny_model, huge)
    message = str(info.value)
    assert "\n" not in message and "1000000 rows x 10000000 tokens (max_length)" in message
    assert "set train.micro_batch_size: 1 and train.max_length: " in message
    with pytest.raises(DoesNotFit) as info:  # a training's short rows: a smaller micro-batch
        train_sft(tiny_model, write_chat_data(tmp_path), tmp_path / "out", huge)
    message = str(info.value)
    assert "\n" not in message and "(the longest row)" in message
    assert re.search(r"set train.micro_batch_size: \d+$", message)


def test_the_datas_longest_rows_make_the_activations(tiny_model: Path) -> None:
    shape = model_shape(tiny_model)
    spec = SPEC.model_copy(update={"batch_size": 8, "max_length": 64})
    lengths = [30] + [10] * 7
    at_max = estimate_memory(shape, spec)
    padded = estimate_memory(shape, spec, lengths=lengths)
    assert (at_max.rows, at_max.tokens, at_max.measure) == (8, 64, "max_length")
    assert (padded.rows, padded.tokens, padded.measure) == (8, 30, "the longest row")
    assert padded.activations == pytest.approx(at_max.activations * 30 / 64)  # sdpa: linear
    assert "8 rows x 30 tokens (the longest row)" in padded.describe()
    assert estimate_memory(shape, spec, lengths=[100]).tokens == 64  # capped at max_length
    pairs = estimate_memory(shape, spec, recipe="dpo", lengths=lengths)
    assert (pairs.rows, pairs.tokens) == (16, 30)
    # packed into rows of 40 tokens: [30, 10], [10, 10, 10, 10], [10, 10]
    packing = spec.model_copy(update={"packing": True, "pack_length": 40})
    packed = estimate_memory(shape, packing, lengths=lengths)
    assert (packed.rows, packed.tokens, packed.measure) == (3, 40, "the longest rows packed")
    three = estimate_memory(shape, spec.model_copy(update={"batch_size": 3}), lengths=[40])
    assert packed.activations == pytest.approx(three.activations)
    # a batch larger than the data repeats its rows: 8 of 20 tokens, two a row
    repeated = estimate_memory(shape, packing, lengths=[20])
    assert (repeated.rows, repeated.tokens) == (4, 40)


def test_packed_rows_fit_where_the_same_rows_padded_do_not(tiny_model: Path) -> None:
    shape = model_shape(tiny_model)
    lengths = [30] + [10] * 7
    padded = SPEC.model_copy(update={"batch_size": 8, "max_length": 64})
    packing = padded.model_copy(update={"packing": True, "pack_length": 40})
    low = estimate_memory(shape, packing, lengths=lengths).total
    high = estimate_memory(shape, padded, lengths=lengths).total
    assert low < high < estimate_memory(shape, padded).total
    between = DeviceMemory("cpu", "this machine", (low + high) / 2, shared=True)
    fits = check_fits(tiny_model, packing, device=between, lengths=lambda: lengths)
    assert "3 rows x 40 tokens (the longest rows packed)" in fits.describe()
    with pytest.raises(DoesNotFit, match=r"8 rows x 30 tokens \(the longest row\)"):
        check_fits(tiny_model, padded, device=between, lengths=lambda: lengths)
    with pytest.raises(DoesNotFit, match=r"8 rows x 64 tokens \(max_length\)"):
        check_fits(tiny_model, packing, device=between)  # no data known


def test_a_batch_refused_at_max_length_trains_when_its_rows_are_short(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import still.train._common as common
    import still.train._memory as memory

    shape = model_shape(tiny_model)
    spec = SPEC.model_copy(update={"batch_size": 8, "max_length": 512})
    half = spec.model_copy(update={"max_length": 256})
    free = estimate_memory(shape, half).total  # rows of up to 256 tokens fit
    assert estimate_memory(shape, spec).total > free  # refused at max_length
    monkeypatch.setattr(memory, "device_memory",
                        lambda: DeviceMemory("cpu", "this machine", free, shared=True))  # fmt: skip

    class Loading(Exception):
        """The memory check let the training through to loading its model."""

    def loading(*args: object, **kwargs: object) -> None:
        raise Loading

    monkeypatch.setattr(common, "build_model", loading)
    (tmp_path / "short").mkdir()
    (tmp_path / "long").mkdir()
    short = write_chat_data(tmp_path / "short")  # a few tokens a row
    with pytest.raises(Loading):
        train_sft(tiny_model, short, tmp_path / "out", spec)
    long_row = (" ".join(["word"] * 80) + "?", "human")  # some 350 tokens
    long = write_chat_data(tmp_path / "long", [*ROWS, long_row])
    with pytest.raises(DoesNotFit) as info:
        train_sft(tiny_model, long, tmp_path / "out", spec)
    message = str(info.value)
    found = re.search(r"8 rows x (\d+) tokens \(the longest row\)", message)
    assert "\n" not in message and found is not None and 256 < int(found[1]) <= 512, message
    assert re.search(r"set train.micro_batch_size: \d+$", message)
    assert not (tmp_path / "out").exists()


def test_qlora_without_a_gpu_is_refused_before_anything_loads(
    tiny_model: Path, tmp_path: Path
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: QLoRA's refusal is for machines without one")
    with pytest.raises(TrainingSetupError) as info:
        train_sft(tiny_model, write_chat_data(tmp_path), tmp_path / "out",
                  SPEC.model_copy(update={"method": "qlora"}))  # fmt: skip
    message = str(info.value)
    assert "\n" not in message and "qlora" in message and "use method: lora" in message


def test_still_estimate_shows_the_students_training(tiny_model: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from still.cli import main
    from test_helpers import write_task

    task = write_task(tmp_path, student=f"local:{tiny_model}", n=20)
    run_dir = tmp_path / "run"
    args = ["estimate", str(task), "--run-dir", str(run_dir)]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    training = json.loads(result.stdout)["training"]
    shape = model_shape(tiny_model)
    assert training["parameters"] == shape.parameters
    assert [m["method"] for m in training["memory"]][:2] == ["lora", "full"]
    full = training["memory"][1]
    # activations at the task's own rows (short questions), not at max_length
    limit = load_task(task).train.max_length
    assert full["measure"] != "max_length" and full["tokens"] < limit
    weight = 6 if training["precision"] == "bf16" else 4  # + autocast's bf16 copies
    assert full["weights"] == weight * shape.parameters and all(training["fits"])
    assert training["rows"] > 0 and training["steps"] > 0 and training["seconds"] > 0
    assert training["rate_from"].startswith("assumed")
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 0 and "parameters" in table.output and "tok/s" in table.output


def test_the_estimate_uses_the_rate_measured_with_the_same_packing(
    tiny_model: Path, tmp_path: Path
) -> None:
    # packing computes no padding, so a packed training's tok/s must not estimate an
    # unpacked one (nor the reverse)
    from still.pipeline import estimate_training, open_run
    from test_helpers import write_task

    def measured(packing: bool) -> str:
        task = write_task(tmp_path, student=f"local:{tiny_model}", n=20, train={"packing": packing})
        estimate = estimate_training(open_run(task, tmp_path / "run"))
        assert estimate is not None
        return f"{estimate.tokens_per_s:.0f} {estimate.rate_from}"

    for name, packed, rate in (("padded", False, 100.0), ("packed", True, 300.0)):
        folder = tmp_path / "run" / name
        folder.mkdir(parents=True)
        info = {"method": "lora", "precision": "fp32", "tokens_per_s": rate, "packed": packed}
        (folder / "train.json").write_text(json.dumps(info))
    assert measured(False) == "100 measured: padded/train.json"
    assert measured(True) == "300 measured: packed/train.json"
