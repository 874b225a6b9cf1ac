"""Training on a tiny real model: loss falls, weights change, the result loads and answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from still.errors import TrainError
from still.models import get_model
from still.tasks import TrainSpec
from still.train import train_sft
from still.train.sft import IGNORE, tokenize
from still.types import Message, Request

ROWS = [
    ("Who wrote the play?", "human"),
    ("Where is the river?", "location"),
    ("How many days?", "number"),
    ("What does NASA stand for?", "abbreviation"),
] * 4


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    with path.open("w") as f:
        for q, a in ROWS:
            f.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "system", "content": "Classify."},
                            {"role": "user", "content": q},
                            {"role": "assistant", "content": a},
                        ]
                    }
                )
                + "\n"
            )
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_only_assistant_tokens_are_learned(tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    conv = [{"role": "user", "content": "Who?"}, {"role": "assistant", "content": "human"}]
    encoded = tokenize(tok, conv, 256)
    assert encoded is not None
    ids, labels = encoded
    learned = [t for t in labels if t != IGNORE]
    assert tok.decode(learned) == "human<|im_end|>"
    assert ids[-len(learned) :] == learned
    assert tokenize(tok, conv, 3) is None  # too long is skipped, not truncated


@pytest.mark.parametrize("method", ["lora", "full"])
def test_training_lowers_loss_and_saves_a_loadable_model(
    tiny_model: Path, tmp_path: Path, method: str
) -> None:
    out = tmp_path / f"student-{method}"
    lr = 1e-2 if method == "lora" else 5e-3
    spec = TrainSpec(method=method, epochs=8, learning_rate=lr, batch_size=4, lora_r=8)
    result = train_sft(tiny_model, _data(tmp_path), out, spec)
    assert result.steps == 32 and result.examples == len(ROWS)
    assert result.last_loss < result.first_loss * 0.7, result.losses
    assert result.tokens_per_s > 0
    before, after = _weights(tiny_model), _weights(out)
    assert before.keys() == after.keys(), "LoRA must be merged into plain weights"
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "no weight changed"
    info = json.loads((out / "train.json").read_text())
    assert info["losses"] == result.losses
    student = get_model(f"local:{out}")
    req = Request(
        model=student.name,
        messages=(
            Message(role="system", content="Classify."),
            Message(role="user", content="Where is the river?"),
        ),
        labels=("human", "location", "number", "abbreviation"),
    )
    answer = student.complete([req])[0]
    assert answer.ok and answer.text == "location"


def test_training_on_nothing_is_an_error(tiny_model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TrainError, match="no training rows"):
        train_sft(tiny_model, empty, tmp_path / "out", TrainSpec())


def test_answers_weighted_zero_are_not_trained_on(tiny_model: Path, tmp_path: Path) -> None:
    data = _data(tmp_path)
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    for r in rows:
        r["messages"][-1]["weight"] = 0
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TrainError, match="every answer weight 0"):
        train_sft(tiny_model, data, tmp_path / "out", TrainSpec(epochs=1))
