"""Sequence packing (train.packing) on the tiny model: packed rows give each example the
loss it has alone (block-diagonal attention from restarting position ids), so SFT and token
KD train the same model packed or padded, with fewer rows and less padding; recipes whose
loss does not pack refuse it; the model's content address does not see it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from still.errors import TrainError
from still.tasks import TrainSpec
from still.train import train_kd, train_sft
from still.train._losses import answer_logits
from still.train._packing import IGNORE, collate, pack, pack_width
from still.train.kd_tokens import train_kd_tokens
from still.train.sft import tokenize
from test_helpers.training import write_chat_data

QUESTIONS = [
    ("Who wrote the play?", "human"),
    ("Where is the river that runs through the old town in the north?", "location"),
    ("How many?", "number"),
    ("What does NASA stand for, and who named it that way first?", "abbreviation"),
    ("Which city?", "location"),
]
SPEC = TrainSpec(method="full", epochs=2, learning_rate=5e-3, batch_size=4, precision="fp32")
TOLERANCE = 1e-5


def _examples(model_dir: Path) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) of QUESTIONS as SFT tokenizes them: unequal lengths, prompt ignored."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    out = []
    for q, a in QUESTIONS:
        conv = [{"role": "system", "content": "Classify."}, {"role": "user", "content": q},
                {"role": "assistant", "content": a}]  # fmt: skip
        encoded = tokenize(tok, conv, 256)
        assert encoded is not None
        out.append(encoded)
    return out


def _model(model_dir: Path, attention: str) -> Any:
    from transformers import AutoModelForCausalLM

    auto: Any = AutoModelForCausalLM
    return auto.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attention)


def _summed_loss(model: Any, inputs: dict[str, Any]) -> float:
    """The loss summed over target tokens (transformers returns their mean)."""
    targets = int((inputs["labels"][:, 1:] != IGNORE).sum())
    with torch.no_grad():
        return float(model(**inputs).loss) * targets


def test_pack_fills_balanced_rows_longest_first_and_keeps_every_sequence_once() -> None:
    rows = pack([5, 3, 4, 2, 9], 8)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    assert rows == [[4], [0, 1], [2, 3]]  # 9 > 8: a row of its own; then 5+3 and 4+2
    assert all(r == sorted(r) for r in rows)
    assert pack([2, 2, 2], 8) == [[0, 1, 2]]
    # first fit alone fills a row (6 + 5 + 5) and pads the other's 4 to 16: 32 positions;
    # balanced, two rows of 10 compute 20, no padding
    assert pack([6, 5, 5, 4], 16) == [[0, 3], [1, 2]]
    assert pack([4] * 5, 16) == [[0], [1], [2], [3], [4]]  # equal: nothing to pack


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_batch_has_the_summed_loss_of_its_examples_run_alone(
    tiny_model: Path, attention: str
) -> None:
    model = _model(tiny_model, attention).eval()
    examples = _examples(tiny_model)
    alone = sum(
        _summed_loss(model, collate([ids], 0, "cpu", labels=[labels]).inputs)
        for ids, labels in examples
    )
    ids, labels = [x for x, _ in examples], [y for _, y in examples]
    packed = collate(ids, 0, "cpu", width=128, labels=labels)
    assert len(packed.inputs["input_ids"]) < len(examples), "several examples share a row"
    assert math.isclose(_summed_loss(model, packed.inputs), alone, rel_tol=TOLERANCE)
    padded = collate(ids, 0, "cpu", labels=labels)
    assert math.isclose(_summed_loss(model, padded.inputs), alone, rel_tol=TOLERANCE)
    # the restarting positions are what keeps examples apart: numbered on through the
    # row, each example would see the ones before it and the loss would change
    through = dict(packed.inputs, position_ids=torch.arange(packed.inputs["input_ids"].shape[1])
                   .expand_as(packed.inputs["input_ids"]))  # fmt: skip
    assert not math.isclose(_summed_loss(model, through), alone, rel_tol=1e-3)


def test_packed_answer_logits_are_the_padded_ones_in_the_same_order(tiny_model: Path) -> None:
    model = _model(tiny_model, "sdpa").eval()
    examples = _examples(tiny_model)
    prompts = [[t for t, y in zip(x, ys, strict=True) if y == IGNORE] for x, ys in examples]
    answers = [x[len(p) :] for (x, _), p in zip(examples, prompts, strict=True)]
    with torch.no_grad():
        padded, targets = answer_logits(model, prompts, answers, 0, "cpu", 400)
        packed, packed_targets = answer_logits(model, prompts, answers, 0, "cpu", 400, 100)
    assert torch.equal(targets, packed_targets)
    assert torch.allclose(packed, padded, atol=TOLERANCE)


def test_packing_needs_fewer_rows_and_less_padding(tiny_model: Path) -> None:
    examples = _examples(tiny_model)
    ids = [x for x, _ in examples]
    padded, packed = collate(ids, 0, "cpu"), collate(ids, 0, "cpu", width=128)
    assert padded.tokens == packed.tokens == sum(len(x) for x in ids)
    assert len(packed.inputs["input_ids"]) < len(padded.inputs["input_ids"]) == len(ids)
    assert packed.positions < padded.positions and packed.padded_share < padded.padded_share
    assert "attention_mask" not in packed.inputs  # else transformers would not see the packing
    row, start = packed.places[1]
    positions = packed.inputs["position_ids"][row, start : start + len(ids[1])]
    assert positions.tolist() == list(range(len(ids[1]))), "positions restart at each example"


def test_sft_trains_the_same_model_packed_as_padded(tiny_model: Path, tmp_path: Path) -> None:
    data = write_chat_data(tmp_path, QUESTIONS * 4)
    padded = train_sft(tiny_model, data, tmp_path / "padded", SPEC)
    spec = SPEC.model_copy(update={"packing": True, "micro_batch_size": 2})
    packed = train_sft(tiny_model, data, tmp_path / "packed", spec)
    assert packed.steps == padded.steps and packed.tokens == padded.tokens
    assert packed.losses == pytest.approx(padded.losses, rel=1e-4)
    a, b = (
        load_file(str(tmp_path / "padded/model.safetensors")),
        load_file(str(tmp_path / "packed/model.safetensors")),
    )
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert packed.packed and not padded.packed
    assert padded.padded_share is not None and packed.padded_share is not None
    assert packed.padded_share < padded.padded_share
    info = json.loads((tmp_path / "packed/train.json").read_text())
    assert info["packed"] and info["padded_share"] == packed.padded_share


def test_lora_packs_through_the_adapters(tiny_model: Path, tmp_path: Path) -> None:
    # one step: LoRA's dropout draws other masks for other shapes, so later steps differ
    # (its first sees none: the adapters start at zero); the positions reach the base model
    data = write_chat_data(tmp_path, QUESTIONS * 4)
    spec = SPEC.model_copy(update={"method": "lora", "epochs": 0.2})
    padded = train_sft(tiny_model, data, tmp_path / "padded", spec)
    packed = train_sft(
        tiny_model, data, tmp_path / "packed", spec.model_copy(update={"packing": True})
    )
    assert packed.steps == 1 and packed.packed
    assert packed.losses == pytest.approx(padded.losses, rel=TOLERANCE)


@pytest.mark.skipif(
    torch.cuda.is_available() and torch.cuda.device_count() < 2,
    reason="with CUDA, two processes need two GPUs",
)
def test_two_processes_pack_their_shares_and_train_as_one_padded(
    tiny_model: Path, tmp_path: Path
) -> None:
    data = write_chat_data(tmp_path, QUESTIONS * 4)
    padded = train_sft(tiny_model, data, tmp_path / "padded", SPEC.model_copy(update={"epochs": 1}))
    spec = SPEC.model_copy(update={"packing": True, "processes": 2, "epochs": 1})
    packed = train_sft(tiny_model, data, tmp_path / "packed", spec)
    assert packed.processes == 2 and packed.tokens == padded.tokens
    assert packed.losses == pytest.approx(padded.losses, rel=1e-4)
    assert packed.padded_share is not None and packed.padded_share < padded.padded_share


def test_token_kd_trains_the_same_model_packed_as_padded(
    tiny_model: Path, tiny_base_model: Path, tmp_path: Path
) -> None:
    data = tmp_path / "train-tokens.jsonl"
    data.write_text("".join(json.dumps({
        "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
        "teacher_messages": [{"role": "system", "content": "Classify."},
                             {"role": "user", "content": q}],
    }) + "\n" for q, a in QUESTIONS * 2))  # fmt: skip
    spec = SPEC.model_copy(update={"recipe": "kd", "epochs": 1})
    padded = train_kd_tokens(tiny_base_model, tiny_model, data, tmp_path / "padded", spec)
    packed = train_kd_tokens(tiny_base_model, tiny_model, data, tmp_path / "packed",
                             spec.model_copy(update={"packing": True}))  # fmt: skip
    assert packed.packed and packed.steps == padded.steps == 3
    assert packed.losses == pytest.approx(padded.losses, rel=1e-4)


def test_a_recipe_whose_loss_does_not_pack_refuses_packing(
    tiny_model: Path, tmp_path: Path
) -> None:
    spec = TrainSpec(recipe="kd", packing=True)
    with pytest.raises(TrainError, match="set train.packing: false") as info:
        train_kd(tiny_model, tmp_path / "train-soft.jsonl", tmp_path / "out", spec)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_pack_length_defaults_to_max_length_and_cannot_exceed_it() -> None:
    assert pack_width(TrainSpec()) is None
    assert pack_width(TrainSpec(packing=True, max_length=128)) == 128
    assert pack_width(TrainSpec(packing=True, pack_length=64)) == 64
    with pytest.raises(ValidationError, match="pack_length"):
        TrainSpec(packing=True, pack_length=512, max_length=256)


def test_packing_leaves_the_model_address_unchanged(tmp_path: Path) -> None:
    from still.pipeline import open_run
    from test_helpers import write_task

    train = {"epochs": 1, "batch_size": 4, "learning_rate": 0.001, "lora_r": 4}
    plain = write_task(tmp_path, student="scripted:first-label", train=train)
    folder = open_run(plain, tmp_path / "run").distilled_dir()
    write_task(tmp_path, student="scripted:first-label",
               train={**train, "packing": True, "pack_length": 128})  # fmt: skip
    run = open_run(plain, tmp_path / "run")
    assert run.task.train.packing and run.task.train.pack_length == 128
    assert run.distilled_dir() == folder
