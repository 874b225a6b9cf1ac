"""Teacher ensembles: members with their own few-shot examples (and models) vote; every
member's answer is stored like any request, so adding a member asks only that member,
and the ensemble is the teacher wherever the run reads the teacher's answers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from still.graders import answer_of
from still.pipeline import bench_stage, capture_role, export_stage, open_run
from still.pipeline._ensemble import VOTERS, VOTES, combine, member_requests, members
from still.tasks import TaskError, load_task
from still.types import Completion, Request
from test_helpers import LABELS, write_task

SPLIT = {"seed": 1, "heldout": 10, "validation": 20}
NOISY = ["scripted:echo?wrong=0/3", "scripted:echo?wrong=1/3"]  # wrong on disjoint thirds


def _with(task: Path, name: str, **changes: Any) -> Path:
    """The task with top-level fields changed, beside it."""
    data = yaml.safe_load(task.read_text())
    data.update(changes)
    out = task.with_name(name)
    out.write_text(yaml.safe_dump(data))
    return out


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_one_right_and_two_noisy_teachers_vote_right(tmp_path: Path) -> None:
    plain = write_task(tmp_path, student="scripted:first-label", n=90, split=SPLIT)
    task = _with(plain, "ensemble.yaml", ensemble={"members": 3, "models": NOISY})
    run = open_run(task, tmp_path / "run")
    team = members(run)
    assert [m.model for m in team] == ["scripted:echo", *NOISY]
    stats = capture_role(run, "teacher", "validation")
    assert stats.total == stats.called == 3 * 20 and len(stats.completions) == 20
    gold = {e.id: e.answer for e in run.split.validation}
    assert all(c.text == gold[i] for i, c in stats.completions.items())
    # each noisy member is wrong somewhere, and never where the other is
    wrong = []
    for m in team[1:]:
        reqs = member_requests(run, m, "validation")
        got = {i: run.store.lookup(r.key()) for i, r in reqs.items()}
        wrong.append({i for i, c in got.items() if answer_of(c, LABELS).answer != gold[i]})
    assert wrong[0] and wrong[1] and not wrong[0] & wrong[1]
    # soft targets: the mean of the members' label probabilities
    one = next(iter(wrong[0]))
    combined = stats.completions[one].label_logprobs
    assert combined is not None
    members_p = []
    for m in team:
        c = run.store.lookup(member_requests(run, m, "validation")[one].key())
        assert c is not None and c.label_logprobs is not None
        z = math.log(sum(math.exp(v) for v in c.label_logprobs.values()))
        members_p.append({y: math.exp(v - z) for y, v in c.label_logprobs.items()})
    for y in LABELS:
        assert math.isclose(math.exp(combined[y]), sum(p[y] for p in members_p) / 3)
    assert stats.completions[one].metadata == {VOTES: "2", VOTERS: "3"}

    # the ensemble is the teacher: the comparison, its report, the training data
    cmp = bench_stage(run, roles=("teacher", "student"), show=False)
    teacher = cmp.by_role("teacher")
    assert teacher is not None and teacher.accuracy == 1.0
    report = json.loads((run.dir / "report.json").read_text())["ensemble"]
    acc = {(r["split"], r["member"]): r["accuracy"] for r in report["rows"]}
    assert acc[("validation", "ensemble")] == acc[("heldout", "ensemble")] == 1.0
    assert acc[("validation", "0")] == 1.0
    assert acc[("validation", "1")] == 1 - len(wrong[0]) / 20 < 1.0
    assert acc[("validation", "2")] == 1 - len(wrong[1]) / 20 < 1.0
    md = (run.dir / "report.md").read_text()
    assert "### Teacher ensemble" in md and "| ensemble | vote | 100.0%" in md

    capture_role(run, "teacher", "train")
    export_stage(run)
    train_gold = {e.fields["text"]: e.answer for e in run.split.train}
    rows = [json.loads(x)["messages"] for x in run.train_file().read_text().splitlines()]
    assert len(rows) == len(run.split.train)
    assert all(r[-1]["content"] == train_gold[r[-2]["content"]] for r in rows)


def test_adding_a_member_asks_only_that_member(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("STILL_SCRIPTED_LOG", str(log))
    plain = write_task(tmp_path, student="scripted:first-label", n=90, split=SPLIT)
    run = open_run(plain, tmp_path / "run")
    capture_role(run, "teacher", "validation")  # the plain teacher: member 0's requests
    assert len(_calls(log)) == 20

    two = open_run(_with(plain, "two.yaml", ensemble={"members": 2}), tmp_path / "run")
    stats = capture_role(two, "teacher", "validation")
    assert (stats.from_store, stats.called) == (20, 20)  # member 0 shares the teacher's
    rows = two.store.count()
    assert rows == len(_calls(log)) == 40

    three = open_run(_with(plain, "three.yaml", ensemble={"members": 3}), tmp_path / "run")
    assert [m.fewshot for m in members(three)[:2]] == [m.fewshot for m in members(two)]
    stats = capture_role(three, "teacher", "validation")
    new = member_requests(three, members(three)[2], "validation")
    assert stats.called == len(new) == 20 and stats.from_store == 40
    assert sorted(_calls(log)[40:]) == sorted(r.key() for r in new.values())  # its calls alone
    assert three.store.count() == rows + 20
    assert len(three.stored("teacher", "validation")) == 20


def test_members_draw_their_own_shots_and_are_not_asked_them(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label", n=90, split=SPLIT,
                      ensemble={"members": 4, "seed": 3})  # fmt: skip
    run = open_run(task, tmp_path / "run")
    team = members(run)
    assert team[0].fewshot == tuple(run.split.fewshot) and not team[0].shown
    shots = [tuple(e.id for e in m.fewshot) for m in team]
    assert len(set(shots)) == 4 and all(len(s) == 2 for s in shots)
    for m in team[1:]:  # balanced: two different answers in each prompt
        assert len({e.answer for e in m.fewshot}) == 2
    train = {e.id for e in run.split.train}
    shown = set().union(*(m.shown for m in team))
    assert shown and shown <= train
    stats = capture_role(run, "teacher", "train")
    assert stats.total == 4 * len(train) - sum(len(m.shown) for m in team)
    assert set(stats.completions) == train  # every example answered by the others
    for m in team:
        assert not m.shown & set(member_requests(run, m, "train"))


def _answer(text: str, scores: dict[str, float] | None = None) -> Completion:
    return Completion(request=Request(model="m", messages=()), text=text, label_logprobs=scores)


def test_a_tie_goes_to_the_higher_mean_probability() -> None:
    low = {"a": 0.0, "b": -0.1, "c": -9.0}  # answers a, unsure
    sure = {"a": -9.0, "b": 0.0, "c": -9.0}  # answers b, sure
    one = combine([_answer("a", low), _answer("b", sure), None], ["a", "b", "c"])
    assert one is not None and one.text == "b"
    assert one.metadata == {VOTES: "1", VOTERS: "2"}
    # without scores: the lower member's answer; an unparseable member does not vote
    one = combine([_answer("c"), _answer("zzz"), _answer("a")], ["a", "b", "c"])
    assert one is not None and one.text == "c" and one.label_logprobs is None
    assert combine([None, None], ["a"]) is None


def test_an_ensemble_needs_members_that_differ(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label", ensemble={"members": 3})
    data = yaml.safe_load(task.read_text())
    data["prompts"]["teacher"]["fewshot"] = 0
    task.write_text(yaml.safe_dump(data))
    with pytest.raises(TaskError, match=r"ensemble: members differ by their few-shot"):
        load_task(task)
    data["ensemble"]["models"] = ["scripted:first-label"]
    task.write_text(yaml.safe_dump(data))
    assert load_task(task).ensemble is not None


def test_estimate_counts_each_members_calls(tmp_path: Path) -> None:
    from still.pipeline import estimate_run

    plain = write_task(tmp_path, student="scripted:first-label", n=90, split=SPLIT)
    run = open_run(_with(plain, "ensemble.yaml", ensemble={"members": 3}), tmp_path / "run")
    lines = [s for s in estimate_run(run) if s.split == "validation" and "teacher" in s.role]
    assert [s.role for s in lines] == ["teacher", "teacher (member 1)", "teacher (member 2)"]
    assert [s.to_send for s in lines] == [len(member_requests(run, m, "validation"))
                                          for m in members(run)]  # fmt: skip
    capture_role(run, "teacher", "validation")
    assert all(s.to_send == 0 for s in estimate_run(run) if s.split == "validation"
               and "teacher" in s.role)  # fmt: skip
