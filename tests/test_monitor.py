"""`still monitor` on a store built by hand: per-tag agreement and grader pass rates with
Wilson intervals, over the last N records or the last T minutes, as a table and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from still.bench import wilson
from still.cli import main
from still.monitor import ALL, Window, read_summaries, to_json
from still.shadow import AGREE, PAIR, PASS, ROLE, SHADOW
from still.store import Store
from still.types import Completion, Grade, Message, Request

NOW = 1_800_000_000.0


def _record(
    i: int, app: str, agree: str, passed: str | None = None, error: str | None = None
) -> Completion:
    tags = {"app": app, SHADOW: "1", ROLE: "student", PAIR: f"p{i}", AGREE: agree}
    if passed is not None:
        tags[PASS] = passed
    req = Request(model="student", messages=(Message(role="user", content=f"q{i}"),))
    return Completion(
        id=f"c{i}", request=req, text="" if error else "a", error=error, metadata=tags,
        created_at=NOW - (40 - i) * 60,  # one a minute: record i was made 40 - i minutes ago
    )  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """30 triage records (graded: 24 agree, 27 pass), then 10 search records (5 agree, 3
    disagree of which one the student failed, 2 without a teacher answer)."""
    records = [
        _record(i, "triage", "1" if i % 5 else "0", passed="1" if i % 10 else "0")
        for i in range(30)
    ]
    search = ["1", "1", "0", "?", "1", "0", "1", "?", "0", "1"]
    records += [
        _record(30 + i, "search", a, error="boom" if i == 8 else None) for i, a in enumerate(search)
    ]
    teacher = _record(99, "triage", "1").model_copy(
        update={"id": "t99", "metadata": {SHADOW: "1", ROLE: "teacher", "app": "triage"}}
    )
    path = tmp_path / "shadow.db"
    with Store(path) as store:
        store.put_many([*records, teacher])
        store.put_grades(
            Grade(grader="correct", example_id="e", completion_id=f"c{i}",
                  score=float(i % 10 != 0), passed=i % 10 != 0)
            for i in range(30)
        )  # fmt: skip
    return path


def test_each_tag_has_its_agreement_and_grades_with_intervals(db: Path) -> None:
    rows = {s.tag: s for s in read_summaries(db, Window(last=None))}
    assert list(rows) == [ALL, "app=search", "app=triage"]
    triage, search, everything = rows["app=triage"], rows["app=search"], rows[ALL]
    assert (triage.agreement.k, triage.agreement.n) == (24, 30)
    assert (triage.agreement.low, triage.agreement.high) == pytest.approx(wilson(24, 30), 1e-3)
    assert triage.graded is not None and (triage.graded.k, triage.graded.n) == (27, 30)
    assert triage.graders["correct"].k == 27
    assert (search.agreement.k, search.agreement.n) == (5, 8)
    assert search.graded is None and search.no_teacher == 2 and search.student_errors == 1
    assert (everything.records, everything.agreement.k, everything.agreement.n) == (40, 29, 38)


def test_the_window_is_each_tag_s_last_n_or_the_last_minutes(db: Path) -> None:
    rows = {s.tag: s for s in read_summaries(db, Window(last=10))}
    # triage's last 10 are records 20-29: every fifth disagrees
    assert (rows["app=triage"].agreement.k, rows["app=triage"].agreement.n) == (8, 10)
    assert rows[ALL].records == 10  # the last 10 of all: the search records
    recent = read_summaries(db, Window(last=None, minutes=15.5), now=NOW)
    # records 25-39 were made in the last 15.5 minutes: 5 triage, 10 search
    assert {s.tag: s.records for s in recent} == {ALL: 15, "app=search": 10, "app=triage": 5}
    only = read_summaries(db, Window(last=None, metadata={"app": "triage"}, by=["app"]))
    assert [s.tag for s in only] == [ALL, "app=triage"]


def test_the_command_prints_a_table_and_the_same_rows_as_json(db: Path) -> None:
    runner = CliRunner()
    got = runner.invoke(main, ["monitor", "--db", str(db), "--last", "0", "--json"])
    assert got.exit_code == 0, got.output
    assert json.loads(got.output) == json.loads(
        json.dumps(to_json(read_summaries(db, Window(last=None))))
    )
    triage = next(r for r in json.loads(got.output) if r["tag"] == "app=triage")
    assert triage["agreement"]["value"] == pytest.approx(0.8)
    shown = runner.invoke(main, ["monitor", "--db", str(db), "--last", "0"])
    assert shown.exit_code == 0, shown.output
    line = next(x for x in shown.output.splitlines() if "app=triage" in x)
    assert "80.0% [" in line and "90.0% [" in line  # agreement, then the grader's pass rate
    missing = runner.invoke(main, ["monitor", "--db", str(db.with_name("nope.db"))])
    assert missing.exit_code == 1 and "no store at" in missing.output


def test_watch_prints_each_refresh_with_what_was_stored_since(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # instead of waiting: store one more record, or stop
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt
        with Store(db) as store:
            store.put(_record(100, "triage", "1"))

    monkeypatch.setattr("time.sleep", sleep)
    got = CliRunner().invoke(
        main, ["monitor", "--db", str(db), "--watch", "--json", "--interval", "3", "--last", "0"]
    )
    assert got.exit_code == 0, got.output  # Ctrl-C ends --watch
    refreshes = [json.loads(line) for line in got.output.splitlines()]
    assert [r[0]["records"] for r in refreshes] == [40, 41] and sleeps == [3, 3]
