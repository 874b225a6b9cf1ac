"""Top-k KD from an endpoint teacher: `still serve` (real HTTP, the openai SDK) returns
its top-k logprobs, they are stored with each answer and exported, and a student with
the same tokenizer trains on them; another tokenizer, or no stored logprobs, is refused
with a message that says what to do."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import build_tiny_model
from helpers import write_task
from still.pipeline import StageError, capture_role, export_stage, open_run, train_stage
from test_serve import KEY, Server

FREE_TEXT = {
    "labels": None,
    "graders": [{"type": "string_check", "name": "exact"}],
    "generation": {"mode": "generate", "max_tokens": 6, "batch_size": 4, "top_logprobs": 5},
    "train": {"recipe": "kd", "method": "full", "epochs": 3, "batch_size": 4,
              "learning_rate": 3e-3},
}  # fmt: skip


@pytest.fixture
def endpoint(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("STILL_API_KEY", KEY)
    with Server(tiny_model, api_key=KEY) as s:
        yield s


def _run(tmp_path: Path, endpoint: Server, student: Path, **overrides: object) -> object:
    task = write_task(tmp_path, student=f"local:{student}", teacher=endpoint.ref, n=24,
                      heldout=6, **{**FREE_TEXT, **overrides})  # fmt: skip
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    export_stage(run, keep="parsed")
    return run


def test_the_student_trains_on_the_endpoints_stored_top_k(
    tmp_path: Path, endpoint: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    student = build_tiny_model(tmp_path_factory.mktemp("student"), seed=3)
    run = _run(tmp_path, endpoint, student)
    stored = run.store.list(metadata={"role": "teacher"})  # type: ignore[attr-defined]
    assert sum(bool(c.top_logprobs) for c in stored) > len(stored) // 2
    steps = [step for c in stored for step in c.top_logprobs or ()]
    # k alternatives a token, fewer where ids decode to the same text: this tiny
    # tokenizer's byte tokens all decode to U+FFFD (real vocabularies have few of them)
    assert all(1 <= len(step) <= 5 for step in steps)
    assert any(len(step) == 5 for step in steps)
    rows = [json.loads(x) for x in (run.dir / "train-tokens.jsonl").read_text().splitlines()]  # type: ignore[attr-defined]
    assert rows and all(r["teacher_top_logprobs"] for r in rows)
    info = train_stage(run)  # type: ignore[arg-type]
    assert info["recipe"] == "kd-topk-forward_kl" and info["examples"] > 0
    losses = info["losses"]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_top_k_from_a_teacher_with_another_tokenizer_is_refused(
    tmp_path: Path, endpoint: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    odd = build_tiny_model(tmp_path_factory.mktemp("odd"), vocab_size=330)
    run = _run(tmp_path, endpoint, odd)
    with pytest.raises(StageError, match="must share a tokenizer"):
        train_stage(run)  # type: ignore[arg-type]


def test_an_endpoint_teacher_without_stored_logprobs_says_what_to_set(
    tmp_path: Path, endpoint: Server, tiny_model: Path
) -> None:
    generation = {"mode": "generate", "max_tokens": 6, "batch_size": 4}
    run = _run(tmp_path, endpoint, tiny_model, generation=generation)
    with pytest.raises(StageError, match="set generation.top_logprobs"):
        train_stage(run)  # type: ignore[arg-type]
