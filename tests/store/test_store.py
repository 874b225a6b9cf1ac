"""`still.store.Store`: roundtrips, content addressing, filters, limits, durability,
migrations, grades and export, each on a fresh store file under tmp_path."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from still.store import Store
from still.store._migrations import MIGRATIONS
from still.types import Completion, Grade, Message, Request, SamplingParams, Usage


def _req(text: str = "hi", model: str = "m", **kw: object) -> Request:
    return Request(model=model, messages=(Message(role="user", content=text),), **kw)


def _comp(req: Request, **kw: object) -> Completion:
    return Completion(request=req, **kw)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "nested" / "s.db") as s:
        yield s


def test_put_get_roundtrip_keeps_every_field(store: Store) -> None:
    c = store.put(
        _comp(
            _req(labels=("a", "b"), logprobs=True, params=SamplingParams(seed=3, stop=("\n",))),
            text="a",
            finish_reason="stop",
            label_logprobs={"a": -0.1, "b": float("-inf")},
            token_logprobs=(-0.5, -1e-9),
            usage=Usage(prompt_tokens=3, completion_tokens=1),
            latency_s=0.25,
            cost=1.5e-6,
            metadata={"run": "r1", "role": "teacher", "note": 'é "quoted"'},
            cached=True,
        )
    )
    assert c.request_hash == c.request.key()
    assert store.get(c.id) == c
    assert store.get("cmpl-missing") is None
    assert store.path.parent.name == "nested"


def test_a_failed_completion_roundtrips(store: Store) -> None:
    c = store.put(_comp(_req(), error="RuntimeError: boom"))
    back = store.get(c.id)
    assert back == c and back is not None and not back.ok and back.text == ""


def test_identical_requests_share_a_hash_and_parameters_change_it() -> None:
    assert _req().key() == _req().key()
    assert _req().key() != _req(params=SamplingParams(temperature=0.7)).key()
    assert _req().key() != _req(params=SamplingParams(max_tokens=33)).key()
    assert _req().key() != _req(params=SamplingParams(seed=1)).key()
    assert _req().key() != _req(model="other").key()
    assert _req().key() != _req(labels=("x",)).key()


def test_lookup_returns_latest_success_and_skips_failures(store: Store) -> None:
    req = _req()
    assert store.lookup(req.key()) is None
    store.put(_comp(req, error="RuntimeError: boom", created_at=1.0))
    assert store.lookup(req.key()) is None, "a failed completion must be retried, not reused"
    failed = store.lookup(req.key(), include_failed=True)
    assert failed is not None and failed.error == "RuntimeError: boom"
    store.put(_comp(req, text="old", created_at=2.0))
    store.put(_comp(req, text="new", created_at=3.0))
    store.put(_comp(req, error="later failure", created_at=4.0))
    store.put(_comp(_req("other"), text="not this request", created_at=5.0))
    for include_failed in (False, True):
        hit = store.lookup(req.key(), include_failed=include_failed)
        assert hit is not None and hit.text == "new"


def test_a_wrong_request_hash_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="request_hash"):
        store.put(_comp(_req("a"), request_hash=_req("b").key()))
    assert store.count() == 0


def test_metadata_filters_and_counts(store: Store) -> None:
    stored = store.put_many(
        [
            _comp(_req("1"), text="x", metadata={"role": "teacher", "split": "train"}),
            _comp(_req("2"), text="y", metadata={"role": "teacher", "split": "heldout"}),
            _comp(_req("3", model="m2"), error="E", metadata={"role": "student"}),
            _comp(_req("4"), text="z", metadata={'a"b': "1", "clé": "v", "a.b": "2"}, cached=True),
        ]
    )
    assert [c.request_hash for c in stored] == [c.request.key() for c in stored]
    assert store.count() == 4
    assert store.count(metadata={"role": "teacher"}) == 2
    assert store.count(metadata={"role": "teacher", "split": "train"}) == 1
    assert store.count(metadata={"role": "teacher", "split": "nope"}) == 0
    assert store.count(model="m2") == 1
    assert store.count(errors=True) == 1 and store.count(errors=False) == 3
    assert store.count(cached=True) == 1 and store.count(cached=False) == 3
    assert store.count(model="m", metadata={"role": "student"}) == 0
    # keys JSON escapes or SQLite paths would misread are matched exactly
    for key, value in {'a"b': "1", "clé": "v", "a.b": "2"}.items():
        assert store.count(metadata={key: value}) == 1, key
    assert store.count(metadata={"ab": "1"}) == 0
    # a quote in a filter is data, not SQL
    assert store.count(metadata={"role": "x' OR 1=1 --"}) == 0
    assert store.count(model="m' OR '1'='1") == 0
    assert [c.text for c in store.list(metadata={"role": "teacher"})] == ["x", "y"]
    assert [c.text for c in store.list(errors=False, limit=2, offset=1)] == ["y", "z"]
    assert [c.error for c in store.list(errors=True)] == ["E"]
    assert store.models() == [("m", 3), ("m2", 1)]


def test_list_orders_by_creation_time(store: Store) -> None:
    store.put_many([_comp(_req(t), text=t, created_at=float(i)) for i, t in [(3, "c"), (1, "a")]])
    store.put(_comp(_req("b"), text="b", created_at=2.0))
    assert [c.text for c in store.list()] == ["a", "b", "c"]


def test_metadata_limits_name_the_key_and_store_nothing(store: Store) -> None:
    with pytest.raises(ValueError, match="at most 16"):
        store.put(_comp(_req(), metadata={f"k{i}": "v" for i in range(17)}))
    with pytest.raises(ValueError, match="key 'kkkk"):
        store.put(_comp(_req(), metadata={"k" * 65: "v"}))
    with pytest.raises(ValueError, match="value of key 'long'"):
        store.put(_comp(_req(), metadata={"long": "v" * 513}))
    # model_copy skips validation, so a non-string value can reach the store
    bad = _comp(_req()).model_copy(update={"metadata": {"n": 3}})
    with pytest.raises(ValueError, match="'n'"):
        store.put_many([_comp(_req("fine")), bad])
    assert store.count() == 0, "an invalid completion in a batch must store none of it"
    store.put(_comp(_req(), metadata={f"k{i:02}": "v" * 512 for i in range(16)}))
    store.put(_comp(_req(), metadata={"k" * 64: "v"}))
    assert store.count() == 2


def test_migrations_are_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Store(path).close()
    with Store(path) as s:
        s.put(_comp(_req()))
    with Store(path) as s:
        assert s.count() == 1
    conn = sqlite3.connect(path)
    names = [r[0] for r in conn.execute("SELECT name FROM _migrations")]
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    assert (
        names
        == [name for name, _ in MIGRATIONS]
        == [
            "m001_initial",
            "m002_attempts",
            "m003_token_detail",
            "m004_ttft",
            "m005_grades_by_completion",
        ]
    )
    assert mode == "wal"


def test_a_failing_migration_leaves_no_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from still.store import _migrations

    path = tmp_path / "s.db"
    Store(path).close()

    def m999_broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half (x INTEGER)")
        raise RuntimeError("crash midway")

    monkeypatch.setattr(_migrations, "MIGRATIONS", [*MIGRATIONS, ("m999_broken", m999_broken)])
    with pytest.raises(RuntimeError, match="crash midway"):
        Store(path)
    conn = sqlite3.connect(path)
    assert _migrations.applied(conn) == [name for name, _ in MIGRATIONS]
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'half'").fetchone()
    conn.close()


def test_a_put_row_is_visible_to_another_store_without_close(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = Store(path)
    c = first.put(_comp(_req(), text="durable"))
    # a second connection (as after a SIGKILL of the first) sees the committed row
    with Store(path) as second:
        assert second.get(c.id) == c
        assert second.lookup(c.request_hash) == c
    first.close()
    first.close()  # idempotent


def test_concurrent_writers_from_threads(store: Store) -> None:
    def work(t: int) -> None:
        for i in range(20):
            store.put(_comp(_req(f"{t}-{i}"), metadata={"thread": str(t)}))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert store.count() == 80 and store.count(metadata={"thread": "2"}) == 20


def test_grades_roundtrip_and_regrade_replaces(store: Store) -> None:
    c = store.put(_comp(_req(), text="a"))
    g = Grade(grader="correct", example_id="e1", completion_id=c.id, score=1.0, passed=True)
    other = Grade(grader="f1", example_id="e1", completion_id=c.id, score=0.5, passed=False)
    missing = Grade(
        grader="correct", example_id="e2", completion_id=None, score=0.0, passed=False, error="x"
    )
    store.put_grades([g, other, missing])
    store.put_grades([g.model_copy(update={"score": 0.0, "passed": False}), missing])
    assert store.grades("f1") == [other]
    assert sorted(store.grades("correct"), key=lambda x: x.example_id) == [
        g.model_copy(update={"score": 0.0, "passed": False}),
        missing,
    ]
    assert len(store.grades()) == 3


def test_export_jsonl_lines_parse_back(store: Store, tmp_path: Path) -> None:
    a = store.put(_comp(_req("1"), text="a", metadata={"role": "teacher"}, created_at=1.0))
    store.put(_comp(_req("2"), text="b", metadata={"role": "student"}, created_at=2.0))
    c = store.put(_comp(_req("3"), error="E", metadata={"role": "teacher"}, created_at=3.0))
    out = tmp_path / "exports" / "out.jsonl"
    assert store.export_jsonl(out, metadata={"role": "teacher"}) == 2
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [Completion.model_validate_json(line) for line in lines] == [a, c]
    assert store.export_jsonl(out, metadata={"role": "teacher"}, errors=False) == 1
    assert len(out.read_text().splitlines()) == 1
    assert store.export_jsonl(out, model="nobody") == 0 and out.read_text() == ""
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.jsonl"], "no temp file left"


def test_a_store_from_before_m002_is_upgraded_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from still.store import _migrations

    path = tmp_path / "old.db"
    monkeypatch.setattr(_migrations, "MIGRATIONS", MIGRATIONS[:1])
    conn = sqlite3.connect(path)
    _migrations.migrate(conn)
    conn.execute(
        "INSERT INTO completions (id, request_hash, hash_algorithm, model, request, text, "
        "metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            "cmpl-old",
            _req().key(),
            "sha256-v1",
            "m",
            # the request as stored before json_schema and top_logprobs existed
            _req().model_dump_json(exclude={"json_schema", "top_logprobs"}),
            "hi",
            "{}",
            1.0,
        ),
    )
    conn.commit()
    conn.close()
    monkeypatch.setattr(_migrations, "MIGRATIONS", MIGRATIONS)
    with Store(path) as s:
        old = s.get("cmpl-old")
        assert old is not None and old.text == "hi" and old.attempts == 1
        assert old.tokens is None and old.top_logprobs is None
        assert s.lookup(_req().key()) == old  # its hash still answers the same request
        new = s.put(_comp(_req("again"), attempts=3))
        assert s.get(new.id) == new


def test_a_store_from_before_m005_gets_the_grades_completion_index_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grades looked up by completion use an index, also in a store made before it existed."""
    from still.store import _migrations

    path = tmp_path / "old.db"
    monkeypatch.setattr(_migrations, "MIGRATIONS", MIGRATIONS[:4])
    with Store(path) as s:
        c = s.put(_comp(_req(), text="a"))
        s.put_grades([Grade(grader="g", example_id="e", completion_id=c.id, score=1, passed=True)])
    monkeypatch.setattr(_migrations, "MIGRATIONS", MIGRATIONS)
    with Store(path) as s:
        assert s.grades(completion_ids=[c.id])[0].completion_id == c.id
    conn = sqlite3.connect(path)
    plan = " ".join(
        str(row[-1])
        for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM grades WHERE completion_id = ?", (c.id,)
        )
    )
    assert _migrations.applied(conn)[-1] == "m005_grades_by_completion"
    conn.close()
    assert "idx_grades_completion" in plan


def test_grade_errors_are_stored_scrubbed_of_secrets(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grader's error may quote what it read (a judge's reply, a python grader's
    traceback): no key value reaches the grades table."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-abcdefgh12345")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-zyxwvuts98765")
    error = "boom: sk-test-abcdefgh12345 and tok-zyxwvuts98765"
    store.put_grades([Grade(grader="g", example_id="e", completion_id="c", score=0,
                            passed=False, error=error)])  # fmt: skip
    (stored,) = store.grades("g")
    assert stored.error == "boom: *** and ***"
    raw = sqlite3.connect(store.path).execute("SELECT error FROM grades").fetchall()
    assert "sk-test" not in str(raw) and "tok-zyx" not in str(raw)
