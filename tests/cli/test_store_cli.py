"""`still store ls/show/export` through click's runner, on a small store built here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from still.cli.store import store as store_group
from still.store import Store
from still.types import Completion, Message, Request, Usage


def _comp(prompt: str, model: str = "m", **kw: object) -> Completion:
    req = Request(model=model, messages=(Message(role="user", content=prompt),))
    return Completion(request=req, **kw)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "still.db"
    with Store(path) as s:
        s.put_many(
            [
                _comp(
                    "q1",
                    text="first [bold]answer[/bold]",
                    metadata={"role": "teacher", "split": "train"},
                    usage=Usage(prompt_tokens=7, completion_tokens=2),
                    latency_s=0.5,
                    created_at=1.0,
                ),
                _comp("q2", text="second", metadata={"role": "student"}, created_at=2.0),
                _comp(
                    "q3",
                    model="m2",
                    error="RuntimeError: [boom]",
                    metadata={"role": "teacher"},
                    created_at=3.0,
                ),
            ]
        )
    return path


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(store_group, list(args), env=env)


def _ids(out: str) -> list[str]:
    return ["cmpl-" + part.split()[0] for part in out.split("cmpl-")[1:]]


def test_ls_lists_everything_with_a_total(db: Path) -> None:
    r = _run("ls", "--db", str(db))
    assert r.exit_code == 0, r.output
    assert "3 completions match" in r.output
    assert len(_ids(r.output)) == 3
    # stored text is printed verbatim, never interpreted as rich markup
    assert "first [bold]answer[/bold]" in r.output and "RuntimeError: [boom]" in r.output
    assert "role=teacher split=train" in r.output and "0.500" in r.output


def test_ls_filters_and_limit(db: Path) -> None:
    r = _run("ls", "--db", str(db), "--meta", "role=teacher", "--ok")
    assert r.exit_code == 0 and "1 completions match" in r.output and "first" in r.output
    r = _run("ls", "--db", str(db), "--errors")
    assert "1 completions match" in r.output and "boom" in r.output
    r = _run("ls", "--db", str(db), "--model", "m")
    assert "2 completions match" in r.output
    r = _run("ls", "--db", str(db), "--limit", "1")
    assert "3 completions match" in r.output and len(_ids(r.output)) == 1
    assert "boom" in r.output, "--limit shows the newest matches"


def test_ls_reads_the_db_from_the_environment(db: Path) -> None:
    r = _run("ls", env={"STILL_DB": str(db)})
    assert r.exit_code == 0 and "3 completions match" in r.output


def test_bad_meta_and_missing_store_are_clean_errors(db: Path, tmp_path: Path) -> None:
    r = _run("ls", "--db", str(db), "--meta", "role")
    assert r.exit_code == 2 and "KEY=VALUE" in r.output and "Traceback" not in r.output
    r = _run("ls", "--db", str(tmp_path / "nope.db"))
    assert r.exit_code == 1 and "no store at" in r.output
    assert not (tmp_path / "nope.db").exists(), "ls must not create a store"


def test_show_prints_the_completion_as_json(db: Path) -> None:
    cid = _ids(_run("ls", "--db", str(db), "--meta", "split=train").output)[0]
    r = _run("show", "--db", str(db), cid)
    assert r.exit_code == 0, r.output
    shown = Completion.model_validate(json.loads(r.output))
    with Store(db) as s:
        assert shown == s.get(cid)
    assert shown.metadata == {"role": "teacher", "split": "train"}


def test_show_of_a_missing_id_exits_1(db: Path) -> None:
    r = _run("show", "--db", str(db), "cmpl-nope")
    assert r.exit_code == 1 and "no completion 'cmpl-nope'" in r.output


def test_export_writes_matching_rows(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "teacher.jsonl"
    r = _run("export", "--db", str(db), "--meta", "role=teacher", str(out))
    assert r.exit_code == 0 and f"2 completions written to {out}" in r.output
    rows = [Completion.model_validate_json(line) for line in out.read_text().splitlines()]
    assert [c.metadata["role"] for c in rows] == ["teacher", "teacher"]
    r = _run("export", "--db", str(db), str(out))
    assert r.exit_code == 0 and len(out.read_text().splitlines()) == 3


def test_help_texts() -> None:
    r = _run("--help")
    assert r.exit_code == 0 and "ls" in r.output and "show" in r.output and "export" in r.output
    r = _run("ls", "--help")
    assert "--meta KEY=VALUE" in r.output and "--errors / --ok" in r.output
