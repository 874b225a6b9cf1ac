"""`--max-cost`: a run stops before it would spend more, keeps what it got, and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from still.capture import capture
from still.cli import main
from still.cost import (
    Budget,
    BudgetExceeded,
    Price,
    UnpricedModel,
    cost_model_for,
    is_free,
    require_prices,
)
from still.models import Provider
from still.pipeline import capture_role, estimate_run, open_run, total_cost
from still.store import Store
from still.types import Message, Request
from test_helpers import write_task

PRICE = {"input": 1000.0, "output": 2000.0}  # dollars per million tokens: big enough to count
ZERO = Price(input=0.0, output=0.0)


def _task(tmp: Path, teacher: str = "scripted:echo") -> Path:
    return write_task(
        tmp, student="scripted:first-label", teacher=teacher, n=60, prices={"scripted:echo": PRICE}
    )


def test_capture_stops_before_the_budget_and_resumes_without_resending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("STILL_SCRIPTED_LOG", str(calls))
    run = open_run(_task(tmp_path), tmp_path / "run")
    reqs = run.requests("teacher", "train")
    cm = cost_model_for("scripted:echo", run.task.prices)
    assert cm is not None
    bounds = sorted(cm.estimate(r) for r in reqs.values())
    limit = sum(bounds[:10]) + bounds[0] / 2  # room for about ten requests, not all

    budget = Budget(limit)
    with pytest.raises(BudgetExceeded, match="--max-cost"):
        capture_role(run, "teacher", "train", budget=budget)
    stored = run.store.list(metadata={"role": "teacher"})
    assert 0 < len(stored) < len(reqs)
    assert all(c.cost is not None and c.cost > 0 for c in stored)
    assert sum(c.cost or 0 for c in stored) == pytest.approx(budget.spent)
    assert budget.spent <= limit
    # the request that was not sent would have crossed the limit
    sent = {c.request_hash for c in stored}
    unsent = [r for r in reqs.values() if r.key() not in sent]
    assert min(cm.estimate(r) for r in unsent) > limit - sum(cm.estimate(c.request) for c in stored)

    first = len(calls.read_text().splitlines())
    stats = capture_role(run, "teacher", "train", budget=Budget(10 * sum(bounds)))
    assert stats.from_store == len(stored) and stats.called == len(reqs) - len(stored)
    keys = calls.read_text().splitlines()
    assert len(keys) == len(set(keys)) == len(reqs)  # nothing was sent twice
    assert first == len(stored)


def test_unpriced_models_spend_nothing(tmp_path: Path) -> None:
    run = open_run(_task(tmp_path), tmp_path / "run")
    budget = Budget(0.0)
    stats = capture_role(run, "student", "heldout", budget=budget)  # no price: free
    assert stats.called == stats.total and budget.spent == 0.0


def test_estimate_counts_what_is_left_to_send(tmp_path: Path) -> None:
    run = open_run(_task(tmp_path), tmp_path / "run")
    before = {(s.role, s.split): s for s in estimate_run(run)}
    teacher = before["teacher", "train"]
    cm = cost_model_for("scripted:echo", run.task.prices)
    assert cm is not None
    reqs = run.requests("teacher", "train")
    assert teacher.requests == teacher.to_send == len(reqs)
    assert teacher.cost_max == pytest.approx(sum(cm.estimate(r) for r in reqs.values()))
    assert before["student", "heldout"].cost_max is None  # no price: n/a, not $0
    assert before["distilled", "heldout"].stored == 0  # not trained yet: nothing stored

    capture_role(run, "teacher", "train")
    after = {(s.role, s.split): s for s in estimate_run(run)}
    assert after["teacher", "train"].stored == len(reqs)
    assert after["teacher", "train"].cost_max == 0
    assert total_cost(list(after.values())) == pytest.approx(
        total_cost(list(before.values())) - (teacher.cost_max or 0)
    )


def test_cli_estimate_and_max_cost(tmp_path: Path) -> None:
    task = _task(tmp_path)
    runner = CliRunner()
    out = runner.invoke(main, ["estimate", str(task), "--run-dir", str(tmp_path / "r"), "--json"])
    assert out.exit_code == 0, out.output
    stages = json.loads(out.stdout)["captures"]
    assert [(s["role"], s["split"]) for s in stages][0] == ("teacher", "train")
    cap = stages[0]["cost_max"] / 3
    res = runner.invoke(
        main,
        ["capture", str(task), "--run-dir", str(tmp_path / "r"), "--max-cost", str(cap)],
    )
    assert res.exit_code == 1
    assert "--max-cost" in res.output and "rerun with a larger --max-cost" in res.output
    table = runner.invoke(main, ["estimate", str(task), "--run-dir", str(tmp_path / "r")])
    assert table.exit_code == 0 and "at most $" in table.output


@pytest.mark.parametrize("model", ["http://127.0.0.1:1/v1#m", "openai:gpt-4.1"])
def test_budget_refuses_an_unpriced_paid_model_before_any_request(
    tmp_path: Path, model: str
) -> None:
    store = Store(tmp_path / "still.db")
    reqs = {
        str(i): Request(model=model, messages=(Message(role="user", content=f"q{i}"),))
        for i in range(3)
    }
    loaded: list[str] = []

    def load() -> Provider:
        loaded.append(model)
        raise AssertionError("the model was loaded")

    cm = cost_model_for(model, {})
    assert cm is None  # no built-in price for either
    with pytest.raises(UnpricedModel) as info:
        capture(load, reqs, store, cost_model=cm, budget=Budget(5.0))
    msg = str(info.value)
    assert model in msg and "prices:" in msg and f'"{model}": {{input: ' in msg
    assert "\n" not in msg
    assert not loaded and store.list() == []  # nothing was sent or stored
    assert capture(load, {}, store, budget=Budget(5.0)).total == 0  # nothing to ask: no refusal


def test_budget_refusal_names_the_model_through_the_pipeline(tmp_path: Path) -> None:
    run = open_run(_task(tmp_path, teacher="http://127.0.0.1:1/v1#teacher"), tmp_path / "run")
    with pytest.raises(UnpricedModel, match=r"http://127\.0\.0\.1:1/v1#teacher.*prices:"):
        capture_role(run, "teacher", "train", budget=Budget(1.0))
    assert run.store.list() == []
    # a price, even 0 (a free server), makes the budget countable
    require_prices(["http://127.0.0.1:1/v1#teacher"], {"http://127.0.0.1:1/v1#teacher": ZERO})


def test_local_and_scripted_models_are_free_under_a_budget() -> None:
    assert is_free("local:smollm2-135m-instruct") and is_free("scripted:echo")
    assert is_free("runs/toy/distilled-0123456789")  # a model folder
    assert not is_free("openai:gpt-4.1") and not is_free("azure:my-deployment")
    assert not is_free("https://api.example.com/v1#m")
    require_prices(["local:smollm2-135m-instruct", "scripted:echo", "openai:gpt-4o"])
    with pytest.raises(UnpricedModel, match="azure:my-deployment"):
        require_prices(["scripted:echo", "azure:my-deployment"])


def test_cli_max_cost_with_an_unpriced_endpoint_is_one_line(tmp_path: Path) -> None:
    task = _task(tmp_path, teacher="openai:gpt-4.1")
    res = CliRunner().invoke(
        main, ["capture", str(task), "--run-dir", str(tmp_path / "r"), "--max-cost", "1"]
    )
    assert res.exit_code == 1 and not isinstance(res.exception, UnpricedModel), res.output
    assert "--max-cost cannot limit openai:gpt-4.1" in res.output
    assert 'prices: {"openai:gpt-4.1": {input: ' in res.output


def test_a_run_with_an_unpriced_judge_refuses_before_the_teacher_spends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A priced teacher would spend before the judge's own capture refused: `still run`
    checks every model it may call when it starts."""
    from still.cost import UnpricedModel
    from still.pipeline import run_all

    calls = tmp_path / "calls.log"
    monkeypatch.setenv("STILL_SCRIPTED_LOG", str(calls))
    judge = {"type": "score_model", "name": "quality", "model": "http://127.0.0.1:1/v1#judge",
             "input": [{"role": "user", "content": "{{sample.output_text}}"}],
             "range": [1, 10]}  # fmt: skip
    task = write_task(tmp_path, student="scripted:first-label", graders=[judge])
    with pytest.raises(UnpricedModel, match=r"http://127.0.0.1:1/v1#judge.*prices:"):
        run_all(task, tmp_path / "run", budget=Budget(1.0))
    assert not calls.exists() and Store(tmp_path / "run/still.db").count() == 0


def test_grade_asks_judges_within_the_budget(tmp_path: Path) -> None:
    """`still grade` calls no answering model, but judges are models: it says so and
    obeys --max-cost, refusing an unpriced judge before any call."""
    from still.cost import UnpricedModel
    from still.pipeline import grade_stage

    judge = {"type": "label_model", "name": "verdict", "model": "http://127.0.0.1:1/v1#judge",
             "input": [{"role": "user", "content": "{{sample.output_text}}"}],
             "labels": ["ok", "bad"], "passing_labels": ["ok"]}  # fmt: skip
    task = write_task(tmp_path, student="scripted:first-label", graders=[judge])
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    before = run.store.count()
    with pytest.raises(UnpricedModel, match="judge"):
        grade_stage(run, "teacher", "train", Budget(1.0))
    assert run.store.count() == before
    res = CliRunner().invoke(main, ["grade", str(task), "--run-dir", str(run.dir),
                                    "--max-cost", "1"])  # fmt: skip
    assert res.exit_code == 1 and "prices:" in res.output and "Traceback" not in res.output
