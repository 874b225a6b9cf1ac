"""The grpo recipe: the task's graders as the reward of TRL's GRPO, on a tiny model.

A scripted grader (the share of an answer's characters that are "a") is one the tiny
random model can learn within a few steps of full fine-tuning; it counts what it grades.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from still.graders import PythonGrader, build_grader
from still.tasks import TrainSpec, load_examples, load_task
from still.train import get_recipe
from still.train.grpo import (
    EVAL_FILE,
    PromptRow,
    grader_reward,
    read_prompts,
    run_grpo,
    write_prompts,
)
from still.types import Grade, Message

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "countdown" / "task.yaml"
QUESTIONS = ["Who wrote the play?", "Where is the river?", "How many days?", "What is a cat?"]


class CountingGrader:
    """Scores the share of "a" in the answer; records every (split, answer) it grades."""

    name = "a_share"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def grade(
        self, sample: Mapping[str, Any], item: Mapping[str, Any], example_id: str,
        completion_id: str | None,
    ) -> Grade:  # fmt: skip
        text = sample["output_text"]
        self.seen.append((item["split"], text))
        score = text.count("a") / max(1, len(text))
        return Grade(grader=self.name, example_id=example_id, completion_id=completion_id,
                     score=score, passed=score > 0.5)  # fmt: skip


def _rows() -> list[PromptRow]:
    def row(i: int, q: str, split: str) -> PromptRow:
        messages = (Message(role="user", content=q),)
        return PromptRow(f"{split}{i}", split, messages, {"q": q, "split": split}, "a")

    return [row(i, q, "train") for i, q in enumerate(QUESTIONS)] + [
        row(i, q, "validation") for i, q in enumerate(QUESTIONS[:2])
    ]


def test_reward_rises_and_the_grader_sees_every_sampled_answer(
    tiny_model: Path, tmp_path: Path
) -> None:
    grader = CountingGrader()
    steps, prompts, group = 12, 4, 4
    spec = TrainSpec.model_validate({
        "recipe": "grpo", "method": "full", "batch_size": prompts, "epochs": steps, "seed": 0,
        "grpo": {"group_size": group, "kl_weight": 0.0, "max_completion_length": 6,
                 "learning_rate": 0.01, "eval_every": 6},
    })  # fmt: skip
    out = tmp_path / "model"
    reward = grader_reward([grader], None, None, None)
    result = run_grpo(tiny_model, _rows(), reward, out, spec)

    trained = [text for split, text in grader.seen if split == "train"]
    assert len(trained) == prompts * group * steps  # every sampled answer graded, once
    records = [json.loads(line) for line in (out / EVAL_FILE).read_text().splitlines()]
    train_rewards = [r["reward"] for r in records if r["split"] == "train"]
    assert len(train_rewards) == steps
    first, last = sum(train_rewards[:3]) / 3, sum(train_rewards[-3:]) / 3
    assert last > first + 0.05, train_rewards  # the policy learned to say "a"
    validation = [r for r in records if r["split"] == "validation"]
    assert [r["step"] for r in validation] == [0, 6, steps]
    assert sum(r["best"] for r in validation) == 1
    assert len([s for s, _ in grader.seen if s == "validation"]) == 2 * len(validation)
    saved = json.loads((out / "train.json").read_text())
    assert saved["recipe"] == "grpo" and saved["steps"] == steps == result.steps
    assert (out / "config.json").is_file()


def test_prompt_rows_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "grpo.jsonl"
    write_prompts(path, _rows())
    assert read_prompts(path) == _rows()
    path.write_text('{"id": "x", "split": "test"}\n')
    with pytest.raises(Exception, match="grpo.jsonl:1"):
        read_prompts(path)


def test_grpo_is_a_recipe_that_learns_from_prompts() -> None:
    recipe = get_recipe("grpo")
    assert recipe.prompts and recipe.shared and recipe.data == "grpo.jsonl"


def test_countdown_task_loads_and_its_grader_scores_hand_made_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = load_task(EXAMPLE)
    assert task.train.recipe == "grpo" and task.train.grpo.group_size == 8
    examples, _ = load_examples(task)
    assert len(examples) == 1200 and len({e.id for e in examples}) == 1200
    sys.path.insert(0, str(EXAMPLE.parent))
    try:
        import countdown  # the generator: same problems every time
    finally:
        sys.path.remove(str(EXAMPLE.parent))
    assert list(countdown.problems(EXAMPLE))[:5] == [
        {**e.fields, "solution": e.answer} for e in examples[:5]
    ]

    from still.graders._sandbox import problem

    if problem() is not None:
        monkeypatch.setenv("STILL_UNSAFE_PYTHON_GRADERS", "1")
    grader = build_grader(task.graders[0])
    assert isinstance(grader, PythonGrader)
    item = {"numbers": "7, 5, 23, 18", "target": "108", "answer": "(23 + 7) * 18 / 5"}
    answers = {
        "(23 + 7) * 18 / 5": 1.0,  # the target
        "(7 + 23) * 18 / 5 = 108": 1.0,  # an equation's left side
        "23 * 5 - 18 + 7": 0.1 + 0.9 * (1 - 4 / 108),  # close: 104
        "(23 + 5) * 18 / 5": 0.0,  # 5 used twice
        "23 + 7 + 18 + 5": 0.1 + 0.9 * (1 - 55 / 108),  # valid, far
        "23 * 23": 0.0,  # 23 used twice
        "100 + 8": 0.0,  # numbers not given
        "I do not know": 0.0,  # no arithmetic
        "23 * 5 - 18 + 7.\nThat is 104.": 0.1 + 0.9 * (1 - 4 / 108),  # the first line
        # what GRPO learned to write under a looser parse (docs/benchmarks.md): prose that
        # names given numbers, and a lone number, are not arithmetic
        "To solve this, we need the combination of 7, 5, 23, 18": 0.0,
        "we need to find the combination of 23 and 18.": 0.0,
        "23": 0.0,
        "Expression: 23 * 5 - 18 + 7": 0.0,  # not the expression alone
    }
    grades = grader.grade_many([({"output_text": a}, item, "e", None) for a in answers])
    for (answer, expected), got in zip(answers.items(), grades, strict=True):
        assert got.error is None, (answer, got.error)
        assert got.score == pytest.approx(expected), answer
    assert [g.passed for g in grades][:2] == [True, True]
