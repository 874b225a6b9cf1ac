"""Judge graders (score_model, label_model) through the OpenAI provider against `still serve`
(real HTTP, loopback), cached in the run's store."""

from __future__ import annotations

from pathlib import Path

import pytest

from still.graders import ModelGrader, parse_score
from still.pipeline import capture_role, grade_stage, open_run
from test_helpers import write_task
from test_helpers.serve import KEY, Server

JUDGE_INPUT = [
    {"role": "system", "content": "You grade answers."},
    {"role": "user", "content": "Question: {{item.text}}\nAnswer: {{sample.output_text}}"},
]


def test_judges_over_loopback_are_stored_and_cached(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("llguidance")
    monkeypatch.setenv("STILL_API_KEY", KEY)
    with Server(tiny_model, api_key=KEY) as server:
        graders = [
            {"type": "string_check", "name": "correct"},
            {
                "type": "label_model",
                "name": "verdict",
                "model": server.ref,
                "input": JUDGE_INPUT,
                "labels": ["correct", "incorrect"],
                "passing_labels": ["correct"],
            },
            {
                "type": "score_model",
                "name": "quality",
                "model": server.ref,
                "input": JUDGE_INPUT,
                "range": [1, 10],
                "pass_threshold": 6,
                "sampling_params": {"max_completions_tokens": 12},
            },
        ]
        task = write_task(
            tmp_path, student="scripted:first-label", n=16, heldout=4, graders=graders
        )
        run = open_run(task, tmp_path / "run")
        capture_role(run, "teacher", "train")
        n_train = len(run.split.train)
        grade_stage(run, "teacher", "train")
        judged = run.store.list(metadata={"role": "judge"})
        assert len(judged) == 2 * n_train  # one request per judge per answer
        assert {c.metadata["grader"] for c in judged} == {"verdict", "quality"}
        assert all(c.ok for c in judged), [c.error for c in judged if c.error]
        grades = {g.grader: [] for g in run.store.grades()}  # type: dict[str, list]
        for g in run.store.grades():
            grades[g.grader].append(g)
        assert all(g.error is None for g in grades["verdict"] + grades["quality"])
        assert all(g.score in (0.0, 1.0) for g in grades["verdict"])
        assert all(1 <= g.score <= 10 for g in grades["quality"])  # constrained decoding
        # a second grading asks no judge: every verdict comes from the store
        grade_stage(run, "teacher", "train")
        assert run.store.count(metadata={"role": "judge"}) == 2 * n_train


def test_a_judge_failure_is_a_failed_grade_not_a_pass(tmp_path: Path) -> None:
    from still.types import Completion, Request

    g = ModelGrader(
        name="j",
        kind="score",
        model="scripted:fail",
        input=({"content": "{{sample.output_text}}"},),
        range=(1, 10),
    )
    sample, item = {"output_text": "x"}, {"answer": "y"}
    assert "not asked" in (g.grade(sample, item, "e", None).error or "")

    def failing(reqs: dict[str, Request], name: str) -> dict[str, Completion]:
        return {k: Completion(request=r, error="APIConnectionError: down") for k, r in reqs.items()}

    g.prepare([(sample, item)], failing)
    verdict = g.grade(sample, item, "e", None)
    assert not verdict.passed and "judge error" in (verdict.error or "")


def test_judge_answers_kept_for_grading_are_bounded() -> None:
    """GRPO prepares a fresh group every step: the answers kept stay at cache_size, the
    latest batch whole, and an answer dropped is one grade() reports as not asked."""
    from still.types import Completion, Request

    g = ModelGrader(
        name="j",
        kind="score",
        model="scripted:fail",
        input=({"content": "{{sample.output_text}}"},),
        range=(1, 10),
        cache_size=3,
    )
    asked: list[int] = []

    def judge(reqs: dict[str, Request], name: str) -> dict[str, Completion]:
        asked.append(len(reqs))
        return {k: Completion(request=r, text='{"score": 7}') for k, r in reqs.items()}

    def jobs(*ns: int) -> list[tuple[dict[str, str], dict[str, str]]]:
        return [({"output_text": str(n)}, {"answer": "y"}) for n in ns]

    for step in range(20):
        g.prepare(jobs(2 * step, 2 * step + 1), judge)
        assert len(g._answers) <= 3
    assert asked == [2] * 20
    assert g.grade(*jobs(39)[0], "e", None).score == 7.0
    assert "not asked" in (g.grade(*jobs(0)[0], "e", None).error or "")
    g.prepare(jobs(*range(100, 105)), judge)  # larger than the cache: kept whole
    assert [g.grade(s, it, "e", None).score for s, it in jobs(*range(100, 105))] == [7.0] * 5


def test_parse_score_reads_json_or_the_first_number_in_range() -> None:
    assert parse_score('{"score": 6}', (1, 10)) == 6.0
    assert parse_score("Score: 7.5 out of 10", (1, 10)) == 7.5
    assert parse_score('{"score": 11}', (1, 10)) is None
    assert parse_score("no idea", (1, 10)) is None
