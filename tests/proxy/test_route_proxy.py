"""`still proxy --route`: a tag's calls move to the student once its shadow agrees, and back
when it stops agreeing, each switch logged with its evidence, through real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx2
import pytest
import yaml
from click.testing import CliRunner

from still.cli import main
from still.models import get_model
from still.proxy import Call, Recorder, RouteTable, create_app
from still.route import RouteConfig, load_routes
from still.serve import create_app as serve_app
from still.shadow import AGREE, PAIR, ROLE, SHADOW, Shadow
from still.store import Store
from still.types import Completion, Message, Request, Usage
from test_helpers.serve import AppServer


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STILL_API_KEY", raising=False)


class Flippable:
    """A student that repeats the question, or, once `wrong` is set, answers nonsense."""

    name = "flippable"

    def __init__(self) -> None:
        self.wrong = False
        self.calls = 0

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        self.calls += len(requests)
        text = "nonsense" if self.wrong else None
        return [
            Completion(request=r, text=text or r.messages[-1].content, usage=Usage())
            for r in requests
        ]


def _records(db: Path, agree: Sequence[bool], tags: dict[str, str]) -> None:
    req = Request(model="student", messages=(Message(role="user", content="q"),))
    with Store(db) as store:
        store.put_many(
            Completion(request=req, text="a", created_at=time.time(), metadata={
                **tags, SHADOW: "1", ROLE: "student", PAIR: f"p{i}", AGREE: str(int(a))})
            for i, a in enumerate(agree)
        )  # fmt: skip


def _config(**route: object) -> RouteConfig:
    spec = {
        "match": {"app": "triage"},
        "student": "http://127.0.0.1:9/v1#s",
        "teacher": "http://127.0.0.1:9/v1#t",
        "min_agreement": 0.8,
        "window": 50,
        **route,
    }
    default = "http://127.0.0.1:9/v1#d"
    return RouteConfig.model_validate({"routes": [spec], "default": default})


def _call(tags: dict[str, str]) -> Call:
    body = {"model": "m", "messages": [], "metadata": tags}
    return Call(json.dumps(body).encode(), body)


def test_a_restarted_proxy_routes_by_the_stored_evidence_and_logs_each_switch(
    tmp_path: Path,
) -> None:
    db = tmp_path / "prod.db"
    _records(db, [True] * 50, {"app": "triage"})
    _records(db, [False] * 50, {"app": "search"})  # no route: not evidence
    table = RouteTable(_config(), db, seed=0)
    table.start()
    try:
        assert table(_call({"app": "triage"})).name.endswith("#s")
        assert table(_call({"app": "search"})).name.endswith("#d")
        _records(db, [False] * 11, {"app": "triage"})  # 39 of the last 50: 0.78 < 0.8
        (back,) = table.refresh()
        assert table(_call({"app": "triage"})).name.endswith("#t")
        assert table.refresh() == []  # records already read are not evidence twice
    finally:
        table.close()
    assert (back.to, back.n, back.agreed) == ("teacher", 50, 39)
    lines = [json.loads(x) for x in (tmp_path / "prod.db.switches.jsonl").read_text().splitlines()]
    assert [(x["to"], x["at_start"], x["n"], x["agreed"]) for x in lines] == [
        ("student", True, 50, 50),
        ("teacher", False, 50, 39),
    ]
    assert lines[0]["low"] >= 0.8 > lines[1]["rate"]


def _wait(until: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_tag_moves_to_its_shadowed_student_and_back_through_http(tmp_path: Path) -> None:
    db = tmp_path / "prod.db"
    teacher = get_model("scripted:echo")
    student = Flippable()
    shadow = Shadow(get_model("scripted:echo"), db, sample=1.0, seed=0)
    with (
        AppServer(serve_app(teacher, "teacher")) as t,
        AppServer(serve_app(student, "student", observer=shadow)) as s,
    ):
        config = _config(student=f"{s.base_url}#student", teacher=f"{t.base_url}#teacher",
                         window=10, min_agreement=0.7, canary=0.5)  # fmt: skip
        config = config.model_copy(update={"refresh_s": 0.05})
        table = RouteTable(config, db, seed=1)
        app = create_app(list(table.upstreams.values()), Recorder(tmp_path / "p.db"),
                         router=table)  # fmt: skip
        table.start()
        try:
            with AppServer(app) as proxy:
                client = httpx2.Client(base_url=proxy.base_url, timeout=30)

                def ask(i: int) -> str:
                    # tagged by header: the proxy passes it on to the shadowed student
                    got = client.post(
                        "/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]},
                        headers={"X-Still-Tags": "app=triage"},
                    )
                    assert got.status_code == 200, got.text
                    return str(got.json()["choices"][0]["message"]["content"])

                # on the teacher, half the calls (the canary) reach the shadowed student
                i = 0
                while table.states()[0].serving == "teacher":
                    assert ask(i) == f"q{i}"
                    i += 1
                    assert i < 200, "the route never moved to the student"
                    if table.states()[0].n >= 10:
                        _wait(lambda: table.states()[0].serving == "student", "no switch")
                before = (teacher.calls, student.calls)
                for j in range(20):
                    ask(1000 + j)
                assert teacher.calls == before[0] and student.calls == before[1] + 20
                # the student goes wrong: its shadow sees it, and the tag goes back
                student.wrong = True
                k = 0
                while table.states()[0].serving == "student":
                    ask(2000 + k)
                    k += 1
                    assert k < 100, "the route never moved back"
                    _wait(lambda: shadow.stats()["waiting"] == 0, "the shadow is stuck")
                    time.sleep(0.1)  # a refresh
                assert k >= 4  # 30% of the window must disagree first
                calls = student.calls
                for j in range(20):
                    ask(3000 + j)
                # the canary still reaches the student, the rest goes to the teacher
                assert 0 < student.calls - calls < 20
        finally:
            table.close()
            shadow.close()
    switches = [s.to for s in table.switches]
    assert switches == ["student", "teacher"]
    assert table.switches[1].rate < 0.7 <= table.switches[0].low


def test_the_proxy_command_needs_an_upstream_or_a_route_file(tmp_path: Path) -> None:
    route = tmp_path / "route.yaml"
    route.write_text(yaml.safe_dump({"routes": [{"student": "a", "teacher": "b",
                                                 "min_agreement": 0.9}]}))  # fmt: skip
    assert load_routes(route).fallback == "b"
    runner = CliRunner()
    neither = runner.invoke(main, ["proxy", "--db", str(tmp_path / "x.db")])
    both = runner.invoke(main, ["proxy", "openai:", "--route", str(route)])
    for got in (neither, both):
        assert got.exit_code == 1 and "UPSTREAM or a --route file" in got.output
