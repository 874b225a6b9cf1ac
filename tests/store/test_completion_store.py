"""The SQLite completion store: roundtrips, content addressing, filters, durability."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from still.store import Store
from still.types import Completion, Grade, Message, Request, SamplingParams, Usage


def _req(text: str = "hi", model: str = "m", **kw: object) -> Request:
    return Request(model=model, messages=(Message(role="user", content=text),), **kw)  # type: ignore[arg-type]


def _comp(req: Request, **kw: object) -> Completion:
    return Completion(request=req, **kw)  # type: ignore[arg-type]


def test_roundtrip_keeps_every_field(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as s:
        c = s.put(
            _comp(
                _req(labels=("a", "b")),
                text="a",
                label_logprobs={"a": -0.1, "b": -2.0},
                token_logprobs=(-0.5,),
                usage=Usage(prompt_tokens=3, completion_tokens=1),
                latency_s=0.25,
                metadata={"run": "r1", "role": "teacher"},
            )
        )
        back = s.get(c.id)
    assert back == c
    assert c.request_hash == c.request.key()


def test_identical_requests_share_a_hash_and_parameters_change_it() -> None:
    assert _req().key() == _req().key()
    assert _req().key() != _req(params=SamplingParams(temperature=0.7)).key()
    assert _req().key() != _req(model="other").key()
    assert _req().key() != _req(labels=("x",)).key()


def test_lookup_returns_latest_success_and_skips_failures(tmp_path: Path) -> None:
    req = _req()
    with Store(tmp_path / "s.db") as s:
        assert s.lookup(req.key()) is None
        s.put(_comp(req, error="RuntimeError: boom", created_at=1.0))
        assert s.lookup(req.key()) is None, "a failed completion must be retried, not reused"
        s.put(_comp(req, text="old", created_at=2.0))
        s.put(_comp(req, text="new", created_at=3.0))
        s.put(_comp(req, error="later failure", created_at=4.0))
        hit = s.lookup(req.key())
    assert hit is not None and hit.text == "new"


def test_filters_and_counts(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as s:
        s.put_many(
            [
                _comp(_req("1"), text="x", metadata={"role": "teacher", "split": "train"}),
                _comp(_req("2"), text="y", metadata={"role": "teacher", "split": "heldout"}),
                _comp(_req("3", model="m2"), error="E", metadata={"role": "student"}),
            ]
        )
        assert s.count() == 3
        assert s.count(metadata={"role": "teacher"}) == 2
        assert s.count(metadata={"role": "teacher", "split": "train"}) == 1
        assert s.count(model="m2") == 1
        assert s.count(errors=True) == 1 and s.count(errors=False) == 2
        assert [c.text for c in s.list(metadata={"role": "teacher"})] == ["x", "y"]
        assert s.models() == [("m", 2), ("m2", 1)]
        # a quote in a filter value is data, not SQL
        assert s.count(metadata={"role": "x' OR 1=1 --"}) == 0


def test_metadata_limits(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as s:
        with pytest.raises(ValueError, match="at most 16"):
            s.put(_comp(_req(), metadata={f"k{i}": "v" for i in range(17)}))
        with pytest.raises(ValueError, match="key"):
            s.put(_comp(_req(), metadata={"k" * 65: "v"}))
        with pytest.raises(ValueError, match="value"):
            s.put(_comp(_req(), metadata={"k": "v" * 513}))
        assert s.count() == 0


def test_rows_are_committed_and_migrations_run_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = Store(path)
    c = first.put(_comp(_req(), text="durable"))
    # a second connection (as after a crash) sees the row without any close/commit call
    with Store(path) as second:
        assert second.get(c.id) is not None
    first.close()
    names = [r[0] for r in sqlite3.connect(path).execute("SELECT name FROM _migrations")]
    assert names == ["m001_initial"]


def test_grades_and_export(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as s:
        c = s.put(_comp(_req(), text="a", metadata={"role": "teacher"}))
        g = Grade(grader="correct", example_id="e1", completion_id=c.id, score=1.0, passed=True)
        s.put_grades([g, g.model_copy(update={"score": 0.0, "passed": False})])
        assert s.grades("correct") == [g.model_copy(update={"score": 0.0, "passed": False})]
        n = s.export_jsonl(tmp_path / "out.jsonl", metadata={"role": "teacher"})
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert n == 1 and Completion.model_validate_json(lines[0]) == c
