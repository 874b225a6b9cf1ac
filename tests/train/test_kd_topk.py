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
from still.pipeline import StageError, capture_role, export_stage, open_run, train_stage
from test_helpers import write_task
from test_helpers.serve import KEY, Server

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


def test_a_chosen_token_outside_the_top_k_gets_its_stored_logprob(tiny_model: Path) -> None:
    """When the teacher's chosen token is not among its stored alternatives (sampled, or
    an alternative without a student id), the target is the logprob stored for that
    token, not one made up; a row that needs it and lacks it has no usable targets."""
    from transformers import AutoTokenizer

    from still.train.kd_topk import encode, vocabulary_by_text

    tok = AutoTokenizer.from_pretrained(tiny_model)
    table = vocabulary_by_text(tok)
    pieces = [str(tok.decode([i])) for i in tok("human", add_special_tokens=False).input_ids]
    alts = [t for t in table if t.strip() and t not in pieces][:2]
    row = {
        "messages": [{"role": "user", "content": "Who?"},
                     {"role": "assistant", "content": "human"}],
        "teacher_messages": [{"role": "user", "content": "Who?"}],
        "teacher_tokens": pieces,
        "teacher_top_logprobs": [{alts[0]: -0.5, alts[1]: -1.0}] * len(pieces),
        "teacher_token_logprobs": [-2.75] * len(pieces),
    }  # fmt: skip
    got, seen, missing, too_long = encode(tok, table, row, 256)
    assert got is not None and (seen, missing, too_long) == (3 * len(pieces), 0, False)
    for piece, ids, lps in zip(pieces, got.support, got.teacher, strict=True):
        assert dict(zip(ids, lps, strict=True)) == {
            table[alts[0]]: -0.5,
            table[alts[1]]: -1.0,
            table[piece]: -2.75,
        }
    del row["teacher_token_logprobs"]  # an export from before it was kept
    assert encode(tok, table, row, 256)[0] is None


def test_label_scores_are_read_off_an_endpoints_top_logprobs() -> None:
    from still.models._openai import label_scores_from_top

    labels = ["human", "location", "number", "abbreviation"]
    tokens = ['{"', "answer", '":"', "hum", "an", '"}']
    top = [{}, {}, {}, {"hum": -0.2, "loc": -2.0, " num": -3.0, "x": -4.0}, {}, {}]
    got = label_scores_from_top(tokens, top, "human", labels)
    assert got == {"human": -0.2, "location": -2.0, "number": -3.0, "abbreviation": -5.0}
    # the label's first token is looked for after the key: a label named like the key
    # ("answer") is read at the value, not at the key
    keyed = label_scores_from_top(
        ['{"', "answer", '":"', "answer", '"}'], [{}, {}, {}, {"answer": -0.1, "hum": -3.0}, {}],
        "answer", ["answer", "human"],
    )  # fmt: skip
    assert keyed == {"answer": -0.1, "human": -3.0}
    # an answer whose first token is not in the stream gives no distribution
    assert label_scores_from_top(tokens, top, "nothing", labels) is None


def test_label_kd_from_an_endpoint_teacher(
    tmp_path: Path, endpoint: Server, tiny_model: Path
) -> None:
    """A label task whose teacher is an endpoint: generation.top_logprobs gives each
    answer the teacher's label distribution (here `still serve`'s exact label scores), so
    export writes train-soft.jsonl and train.recipe kd trains on it."""
    import torch

    from still.models import get_model

    labelled = {"labels": ["human", "location", "number"],
                "graders": [{"type": "string_check", "name": "correct"}],
                "generation": {"mode": "score", "batch_size": 4, "top_logprobs": 5},
                "train": {"recipe": "kd", "epochs": 1, "batch_size": 4, "lora_r": 4}}  # fmt: skip
    task = write_task(tmp_path, student=f"local:{tiny_model}", teacher=endpoint.ref, n=24,
                      heldout=6, **labelled)  # fmt: skip
    run = open_run(task, tmp_path / "run")
    got = capture_role(run, "teacher", "train").completions
    local = get_model(f"local:{tiny_model}")
    for comp in list(got.values())[:4]:
        assert comp.label_logprobs is not None and set(comp.label_logprobs) == set(LABELS3)
        want = local.complete([comp.request.model_copy(update={"model": "m"})])[0]
        p = torch.softmax(torch.tensor([comp.label_logprobs[x] for x in LABELS3]), -1)
        q = torch.softmax(torch.tensor([want.label_logprobs[x] for x in LABELS3]), -1)  # type: ignore[index]
        assert p.tolist() == pytest.approx(q.tolist(), abs=1e-4)
    export_stage(run, keep="parsed")
    assert run.soft_file().is_file()
    assert train_stage(run)["recipe"] == "kd-forward_kl"


LABELS3 = ["human", "location", "number"]
