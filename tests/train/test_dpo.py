"""Preference pairs and DPO: the right rows, no held-out leak, both file formats, and real
DPO runs on the tiny model (LoRA and full) that move the weights the right way."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from still.curate import LeakageError
from still.errors import TrainError
from still.preference import PreferencePair, dpo_row, pairs_from, write_dpo
from still.tasks import TrainSpec
from still.train.dpo import read_pairs, train_dpo


def _prompt(q: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Classify."}, {"role": "user", "content": q}]


PROMPTS = {
    "a": _prompt("Who wrote the play?"),  # teacher right, student wrong: a pair
    "b": _prompt("Where is the river?"),  # both right: nothing to prefer
    "c": _prompt("How many days?"),  # teacher wrong: never chosen
    "d": _prompt("What does NASA stand for?"),  # same text both sides: teaches nothing
    "e": _prompt("What is a cat?"),  # no student answer: skipped
    "f": _prompt("Who is it?"),  # teacher right, student wrong: a pair
}
TEACHER = {
    "a": ("human", True),
    "b": ("location", True),
    "c": ("entity", False),
    "d": ("abbreviation", True),
    "e": ("entity description", True),
    "f": ("human", True),
}
STUDENT = {
    "a": ("location", False),
    "b": ("location", True),
    "c": ("number", False),
    "d": ("abbreviation", False),
    "f": ("the a of", False),
}


def test_pairs_from_picks_teacher_right_student_wrong() -> None:
    pairs = pairs_from(PROMPTS, TEACHER, STUDENT, heldout_ids={"b", "c", "d", "e", "zz"})
    assert [p.example_id for p in pairs] == ["a", "f"]
    assert pairs[0] == PreferencePair("a", PROMPTS["a"], chosen="human", rejected="location")
    assert pairs[1].chosen == "human" and pairs[1].rejected == "the a of"


def test_pairs_from_refuses_heldout_ids() -> None:
    with pytest.raises(LeakageError, match=r"^2 held-out example\(s\) would enter") as info:
        pairs_from(PROMPTS, TEACHER, STUDENT, heldout_ids={"a", "f"})
    assert isinstance(info.value, LeakageError)
    assert "a, f" in str(info.value)


def _pairs() -> list[PreferencePair]:
    rows = [
        ("Who wrote the play?", "human", "location"),
        ("Where is the river?", "location", "number"),
        ("How many days?", "number", "human"),
        ("What does NASA stand for?", "abbreviation", "entity description"),
    ]
    return [PreferencePair(f"ex{i}", _prompt(q), c, r) for i, (q, c, r) in enumerate(rows)]


def test_openai_format(tmp_path: Path) -> None:
    path = tmp_path / "dpo" / "openai.jsonl"
    assert write_dpo(_pairs(), path, "openai") == 4
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 4
    assert rows[0] == {
        "input": {"messages": _prompt("Who wrote the play?")},
        "preferred_output": [{"role": "assistant", "content": "human"}],
        "non_preferred_output": [{"role": "assistant", "content": "location"}],
    }
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_trl_format(tmp_path: Path) -> None:
    path = tmp_path / "trl.jsonl"
    assert write_dpo(_pairs(), path, "trl") == 4
    rows = read_pairs(path)
    assert rows[1] == {
        "prompt": _prompt("Where is the river?"),
        "chosen": [{"role": "assistant", "content": "location"}],
        "rejected": [{"role": "assistant", "content": "number"}],
    }
    assert rows == [json.loads(line) for line in path.read_text().splitlines()]
    trl_data = pytest.importorskip("trl.data_utils")
    assert all(trl_data.is_conversational(r) for r in rows)  # TRL reads it as chat


def test_write_is_atomic_and_checks_format(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    write_dpo(_pairs(), path, "trl")
    before = path.read_text()
    with pytest.raises(ValueError, match="unknown preference format"):
        write_dpo(_pairs()[:1], path, "csv")  # type: ignore[arg-type]
    assert path.read_text() == before
    assert write_dpo([], path, "openai") == 0
    assert path.read_text() == ""
    with pytest.raises(ValueError, match="unknown"):
        dpo_row(_pairs()[0], "json")  # type: ignore[arg-type]


def test_read_pairs_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    write_dpo(_pairs()[:1], path, "openai")  # the wrong format for the trainer
    with pytest.raises(TrainError, match=r"bad.jsonl:1: not a TRL preference row"):
        read_pairs(path)


def _margin(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> float:
    """Mean log p(chosen) - log p(rejected) over the rows: what DPO must raise."""
    import torch

    def logp(prompt: list[dict[str, str]], answer: list[dict[str, str]]) -> float:
        p_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(prompt + answer, tokenize=False)
        assert full.startswith(p_ids)
        ids = tokenizer(full, return_tensors="pt").input_ids
        n_prompt = len(tokenizer(p_ids).input_ids)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        lp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
        return float(lp[n_prompt - 1 :].sum())

    diffs = [logp(r["prompt"], r["chosen"]) - logp(r["prompt"], r["rejected"]) for r in rows]
    return sum(diffs) / len(diffs)


def _spec(**overrides: Any) -> TrainSpec:
    base = {"recipe": "dpo", "epochs": 1, "batch_size": 2, "lora_r": 4, "lora_alpha": 8,
            "dpo": {"learning_rate": 1e-3}}  # fmt: skip
    return TrainSpec.model_validate({**base, **overrides})


def test_dpo_trains_and_saves_a_loadable_model(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    auto: Any = AutoModelForCausalLM  # its stubs mistype from_pretrained and eval
    data = tmp_path / "pairs.jsonl"
    write_dpo(_pairs(), data, "trl")
    out = tmp_path / "student-dpo"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    base = auto.from_pretrained(tiny_model, dtype=torch.float32).eval()
    rows = read_pairs(data)

    result = train_dpo(tiny_model, data, out, _spec(epochs=2, batch_size=4))  # 2 full batches

    assert result.steps == 2 and result.recipe == "dpo" and result.method == "lora"
    assert len(result.losses) == 2 and all(math.isfinite(x) for x in result.losses)
    # step 1: policy == reference (LoRA starts as a no-op), so the loss is -log sigmoid(0)
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-4)
    assert result.losses[1] < result.losses[0]
    assert result.seconds > 0 and result.tokens > 0
    assert json.loads((out / "train.json").read_text())["steps"] == 2
    assert not out.with_name(out.name + ".tmp").exists()

    trained = auto.from_pretrained(out, dtype=torch.float32).eval()
    assert type(trained).__name__ == "LlamaForCausalLM"  # merged: a plain model, no adapter
    name = "model.layers.0.self_attn.q_proj.weight"
    before, after = base.state_dict()[name], trained.state_dict()[name]
    assert not torch.equal(before, after)  # the LoRA update was merged in
    assert (after - before).abs().max() < 0.05  # ...and it is a small one
    # LoRA adapts the linear layers only: the norms are untouched
    assert torch.equal(
        base.state_dict()["model.norm.weight"], trained.state_dict()["model.norm.weight"]
    )
    # the point of DPO: the chosen answers gained on the rejected ones
    assert _margin(trained, tokenizer, rows) > _margin(base, tokenizer, rows)
    assert AutoTokenizer.from_pretrained(out).chat_template == tokenizer.chat_template


def test_full_dpo_trains_every_weight_reports_progress_and_skips_long_pairs(
    tiny_model: Path, tmp_path: Path
) -> None:
    """train.method: full is honoured (weights LoRA cannot reach move, no adapter is
    saved), progress goes through on_step, and a pair longer than max_length is left out
    and counted, as in the other recipes."""
    import torch
    from transformers import AutoModelForCausalLM

    long_pair = PreferencePair("long", _prompt("spam ham " * 60), "human", "location")
    data = tmp_path / "pairs.jsonl"
    write_dpo([*_pairs(), long_pair], data, "trl")
    out = tmp_path / "full"
    steps: list[tuple[int, int, float]] = []

    result = train_dpo(
        tiny_model, data, out, _spec(method="full", max_length=64),
        on_step=lambda n, total, loss: steps.append((n, total, loss)),
    )  # fmt: skip

    assert result.method == "full" and result.examples == 4 and result.skipped_too_long == 1
    assert [(n, total) for n, total, _ in steps] == [(1, 2), (2, 2)]
    assert [loss for *_, loss in steps] == result.losses
    assert result.losses[0] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference
    assert not list(out.glob("adapter_*")), "a full fine-tune saves no adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).state_dict()
    for name in ("model.norm.weight", "model.embed_tokens.weight"):  # out of LoRA's reach
        assert not torch.equal(base[name], after[name]), name


def test_dpo_refuses_empty_data(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "empty.jsonl"
    write_dpo([], data, "trl")
    with pytest.raises(TrainError, match="no preference pairs"):
        train_dpo(tiny_model, data, tmp_path / "out", _spec())
    write_dpo(_pairs(), data, "trl")
    with pytest.raises(TrainError, match="no preference pair fits max_length=8"):
        train_dpo(tiny_model, data, tmp_path / "out", _spec(max_length=8))
    assert not (tmp_path / "out").exists()


def test_export_dpo_stage_pairs_teacher_passes_with_student_failures(tmp_path: Path) -> None:
    """The pipeline's DPO export: echo teacher (always right) vs first-label student (right
    on a third), so pairs are exactly the student's misses, none held out."""
    from still.pipeline import capture_role, export_dpo_stage, open_run
    from test_helpers import write_task

    task = write_task(tmp_path, student="scripted:first-label", teacher="scripted:echo")
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    path, n = export_dpo_stage(run, "trl")
    misses = [ex for ex in run.split.train if ex.answer != "human"]
    assert n == len(misses) > 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(r["rejected"][0]["content"] == "human" for r in rows)
    assert all(r["prompt"][0]["content"] == "Classify." for r in rows)  # the student prompt
    assert {r["chosen"][0]["content"] for r in rows} <= {"location", "number"}


def test_dpo_is_a_recipe_of_the_train_stage(tmp_path: Path, tiny_model: Path) -> None:
    """train.recipe: dpo trains on `still export-dpo`'s pairs through the same stage as
    SFT and KD (and says what to run when the pairs are missing)."""
    import pytest

    from still.pipeline import StageError, capture_role, export_dpo_stage, open_run, train_stage
    from test_helpers import write_task

    train = {"recipe": "dpo", "epochs": 1, "batch_size": 4, "lora_r": 4}
    task = write_task(tmp_path, student=f"local:{tiny_model}", train=train)
    run = open_run(task, tmp_path / "run")
    run.train_file().write_text("{}\n")
    with pytest.raises(StageError, match="run `still export-dpo` first"):
        train_stage(run)
    capture_role(run, "teacher", "train")
    _, n = export_dpo_stage(run, "trl")
    assert n > 0
    info = train_stage(run)
    assert info["recipe"] == "dpo" and info["examples"] == n and info["steps"] > 0
    assert (run.distilled_dir() / "model.safetensors").is_file()
