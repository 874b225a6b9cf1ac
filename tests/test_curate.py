"""Export: student prompt + teacher answer, filtered by grade, deduplicated, leak-checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from still.curate import LeakageError, export, read_chat_jsonl
from still.errors import TrainError
from still.graders import StringCheck
from still.tasks import Example, StringCheckSpec, Task
from still.types import Completion, Message, Request

TASK = Task.model_validate(
    {
        "name": "t",
        "data": {"source": "x.jsonl"},
        "answer": "label",
        "labels": ["human", "location"],
        "prompts": {
            "teacher": {"template": "Long teacher prompt: {{ text }}"},
            "student": {"system": "Classify.", "template": "{{ text }}"},
        },
        "models": {"teacher": "scripted:echo", "student": "scripted:echo"},
        "graders": [StringCheckSpec().model_dump()],
    }
)


def _ex(i: int, text: str, answer: str) -> Example:
    return Example(id=f"e{i}", fields={"text": text}, answer=answer, source=f"x.jsonl:{i}")


def _answer(text: str, error: str | None = None) -> Completion:
    req = Request(model="teacher", messages=(Message(role="user", content="?"),))
    return Completion(request=req, text=text, error=error)


EXAMPLES = [
    _ex(1, "Who wrote it?", "human"),  # teacher right
    _ex(2, "Where is it?", "location"),  # teacher wrong
    _ex(3, "Who sang it?", "human"),  # teacher unparseable
    _ex(4, "Who drew it?", "human"),  # teacher request failed
    _ex(5, "who  WROTE it?", "location"),  # e1's student prompt, up to case and spaces
]
TEACHER = {
    "e1": _answer("Human."),
    "e2": _answer("human"),
    "e3": _answer("no idea"),
    "e4": _answer("", error="TimeoutError: slow"),
    "e5": _answer("location"),
}


def test_keep_correct_writes_student_prompts_with_teacher_answers(tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    stats = export(TASK, EXAMPLES, TEACHER, [StringCheck()], set(), [], out)
    assert stats.kept == 1
    assert stats.dropped == {
        "teacher wrong": 1,
        "teacher unparseable": 1,
        "teacher error": 1,
        "duplicate prompt": 1,
    }
    rows = read_chat_jsonl(out)
    assert rows == [
        [
            {"role": "system", "content": "Classify."},
            {"role": "user", "content": "Who wrote it?"},
            # the parsed label, not raw "Human."; weight 1: learn it (OpenAI's format)
            {"role": "assistant", "content": "human", "weight": 1},
        ]
    ]


def test_keep_parsed_keeps_wrong_but_parseable_answers(tmp_path: Path) -> None:
    stats = export(
        TASK, EXAMPLES, TEACHER, [StringCheck()], set(), [], tmp_path / "t.jsonl", keep="parsed"
    )
    assert stats.kept == 2 and "teacher wrong" not in stats.dropped
    answers = [r[-1]["content"] for r in read_chat_jsonl(tmp_path / "t.jsonl")]
    assert answers == ["human", "human"]  # e2's wrong teacher answer is kept as the teacher said


def test_an_input_without_a_reference_is_dropped_as_such_not_as_wrong(tmp_path: Path) -> None:
    # a teacher-written input has no reference: the verified student cannot verify it
    unlabelled = [_ex(6, "Who built it?", "")]
    stats = export(
        TASK, unlabelled, {"e6": _answer("human")}, [StringCheck()], set(), [], tmp_path / "t.jsonl"
    )
    assert stats.kept == 0 and stats.dropped == {"no reference": 1}


def test_heldout_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LeakageError, match=r"e2 \(x.jsonl:2\) is held out"):
        export(TASK, EXAMPLES, TEACHER, [StringCheck()], {"e2"}, [], tmp_path / "t.jsonl")
    assert not (tmp_path / "t.jsonl").exists(), "nothing is written when a leak is found"


def test_read_chat_jsonl_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    ok = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad.write_text(json.dumps(ok) + "\n" + json.dumps({"messages": [{"role": "user"}]}) + "\n")
    with pytest.raises(TrainError, match=rf"{bad}:2: not a chat row"):
        read_chat_jsonl(bad)


def test_a_training_question_with_held_out_text_is_dropped(tmp_path: Path) -> None:
    """The same question under two ids (TREC files some questions under two fine labels):
    the training copy is dropped as "held-out text", whatever its id or label."""
    heldout = [_ex(9, "Where  is IT?", "location")]
    train = [_ex(1, "Who wrote it?", "human"), _ex(2, "where is it?", "human")]
    teacher = {"e1": _answer("human"), "e2": _answer("human")}
    out = tmp_path / "train.jsonl"
    stats = export(TASK, train, teacher, [StringCheck()], {"e9"}, [], out, heldout=heldout)
    assert stats.kept == 1 and stats.dropped == {"held-out text": 1}
    assert [r[1]["content"] for r in read_chat_jsonl(out)] == ["Who wrote it?"]
    report = [json.loads(x) for x in (tmp_path / "curation.jsonl").read_text().splitlines()]
    assert [(r["example_id"], r["reason"]) for r in report] == [
        ("e1", None),
        ("e2", "held-out text"),
    ]
    tokens = (tmp_path / "train-tokens.jsonl").read_text()
    assert "where is it" not in tokens.lower()


def test_token_rows_carry_the_teachers_chosen_token_logprobs(tmp_path: Path) -> None:
    """Top-k KD needs each chosen token's own logprob when it is not among the stored
    top-k alternatives: export keeps it beside the tokens and their alternatives."""
    free = TASK.model_copy(update={"labels": None})
    req = Request(model="teacher", messages=(Message(role="user", content="?"),))
    comp = Completion(
        request=req,
        text="a cat",
        tokens=("a", " cat"),
        token_logprobs=(-0.5, -3.25),
        top_logprobs=({"a": -0.5, "the": -1.5}, {" dog": -0.1}),
    )
    out = tmp_path / "train.jsonl"
    export(free, [_ex(1, "What is it?", "a cat")], {"e1": comp}, [StringCheck()], set(), [], out)
    (row,) = [json.loads(x) for x in (tmp_path / "train-tokens.jsonl").read_text().splitlines()]
    assert row["teacher_tokens"] == ["a", " cat"]
    assert row["teacher_top_logprobs"] == [{"a": -0.5, "the": -1.5}, {" dog": -0.1}]
    assert row["teacher_token_logprobs"] == [-0.5, -3.25]
