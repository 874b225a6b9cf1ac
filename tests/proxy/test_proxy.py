"""`still proxy` between an application and its model: answers and errors unchanged, every
exchange recorded for a `store:` task, the upstream's key kept from everyone, and recording
that never holds a request up."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import yaml
from click.testing import CliRunner

from still.cli import main
from still.proxy import ID_HEADER, Recorder
from still.store import Store
from still.testing import FaultyServer, answer_body, stream_events
from test_helpers.proxy import KEY, ProxyProcess, ProxyServer
from test_helpers.traffic import SYSTEM, TICKETS

AUTH = {"Authorization": f"Bearer {KEY}"}


def _events(text: str) -> list[Any]:
    """The data of each server-sent event of a stream's text ('[DONE]' as is)."""
    out: list[Any] = []
    for event in text.split("\n\n"):
        data = event.removeprefix("data: ").strip()
        if data:
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_an_openai_sdk_application_is_recorded_and_a_store_task_trains_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STILL_API_KEY", raising=False)
    tickets = [(route, text) for route, texts in TICKETS.items() for text in texts]
    db = tmp_path / "prod.db"
    with FaultyServer(faults=False) as upstream, ProxyServer(upstream.url, db) as proxy:
        # the application: the openai SDK with the proxy's base URL and key, nothing else
        client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
        for i, (route, text) in enumerate(tickets):
            asked: dict[str, Any] = {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": text},
                ],
                "temperature": 0,
                "metadata": {"app": "support-triage"},
                "extra_headers": {"X-Still-Tags": f"route={route}, env=prod"},
            }
            if i % 2:  # streamed, as a chat UI asks
                chunks = list(
                    client.chat.completions.create(
                        **asked, stream=True, stream_options={"include_usage": True}
                    )
                )
                got = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
            else:
                reply = client.chat.completions.create(**asked)
                got = reply.choices[0].message.content or ""
                body = {k: v for k, v in asked.items() if k != "extra_headers"}
                assert reply.to_dict() == answer_body(body, text)  # as the upstream sent it
            assert got == f"echo: {text}"
        client.chat.completions.create(  # another application, on the same proxy
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "find shoes"}],
            metadata={"app": "search"},
        )
        assert [m.id for m in client.models.list()] == ["m"]
        assert proxy.recorder.flush()
        # the upstream never saw the proxy's key: a loopback URL with no key of its own
        assert set(upstream.auth) == {None} and len(upstream.bodies) == len(tickets) + 1
    assert proxy.recorder.stats.recorded == len(tickets) + 1

    with Store(db) as store:
        rows = store.list(metadata={"app": "support-triage"})
    assert len(rows) == len(tickets)
    route = {text: r for r, text in tickets}
    for c in rows:
        text = c.request.messages[-1].content
        assert c.ok and c.text == f"echo: {text}" and c.model == f"{upstream.url}#gpt-4o-mini"
        assert c.metadata == {"app": "support-triage", "route": route[text], "env": "prod",
                              "source": "proxy", "response_model": "gpt-4o-mini"}  # fmt: skip
        assert c.request.params.temperature == 0 and "max_tokens" in c.request.unknown_params
        assert c.usage.completion_tokens == 2 and 0 < c.latency_s < 10
    assert sum(c.ttft_s is not None for c in rows) == len(tickets) // 2  # the streamed ones

    # the recorded traffic is a task's data: the upstream is gone, so a teacher call
    # would fail, and none is made
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump({
        "name": "triage",
        "data": {"source": "store:prod.db", "store": {
            "metadata": {"app": "support-triage"}, "model": f"{upstream.url}#gpt-4o-mini"}},
        "answer": "recorded",
        "split": {"seed": 0, "heldout": 6, "validation": 0},
        "models": {"teacher": upstream.ref("gpt-4o-mini"), "student": "scripted:echo"},
    }))  # fmt: skip
    res = CliRunner().invoke(main, ["export", str(task)])
    assert res.exit_code == 0, res.output
    run = tmp_path / "triage"
    train = [json.loads(x)["messages"] for x in (run / "train.jsonl").read_text().splitlines()]
    assert len(train) == len(tickets) - 6
    for system, user, answer in train:  # as the application sent it, as the model answered
        assert system["content"] == SYSTEM and answer["content"] == f"echo: {user['content']}"
    split = json.loads((run / "split.json").read_text())
    assert len(split["heldout"]) == 6 and not set(split["heldout"]) & set(split["train"])
    with Store(run / "still.db") as s:
        assert s.count(errors=True) == 0


def test_streams_pass_through_chunk_by_chunk(tmp_path: Path) -> None:
    with (
        FaultyServer(faults=False, chunk_delay_s=0.3) as upstream,
        ProxyServer(upstream.url, tmp_path / "s.db") as proxy,
        httpx2.Client(timeout=30) as http,
    ):
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a b"}]}
        arrived: list[tuple[float, bytes]] = []
        start = time.perf_counter()
        with http.stream(
            "POST", f"{proxy.base_url}/chat/completions", json=body, headers=AUTH
        ) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            for piece in resp.iter_bytes():
                arrived.append((time.perf_counter() - start, piece))
    text = b"".join(p for _, p in arrived).decode()
    assert _events(text) == [*stream_events(body, "a b"), "[DONE]"]
    # 5 chunks 0.3 s apart: the first reached the client long before the last was sent
    first = next(t for t, p in arrived if b'"content": ""' in p)
    assert arrived[-1][0] - first > 0.9


def test_upstream_answers_and_errors_reach_the_client_as_the_upstream_sent_them(
    tmp_path: Path,
) -> None:
    """The same prompt to the proxy and to a twin upstream called directly (the fault of a
    prompt is a function of its text): the same status, body and Retry-After, streamed or
    not, and each exchange stored once, failed when the upstream failed."""
    prompts = [f"prompt {i}" for i in range(40)]
    seen: dict[str, str] = {}
    db = tmp_path / "s.db"
    with (
        FaultyServer(slow_s=0.2) as upstream,
        FaultyServer(slow_s=0.2) as twin,
        ProxyServer(upstream.url, db) as proxy,
        httpx2.Client(timeout=30) as http,
    ):
        for i, prompt in enumerate(prompts):
            stream = i % 2 == 1
            body = {"model": "m", "messages": [{"role": "user", "content": prompt}],
                    "stream": stream}  # fmt: skip
            fault = upstream.fault_for(prompt)
            seen[prompt] = fault
            via = http.post(f"{proxy.base_url}/chat/completions", json=body, headers=AUTH)
            assert via.headers[ID_HEADER].startswith("cmpl-")
            try:
                direct: httpx2.Response | None = http.post(
                    f"{twin.url}/chat/completions", json=body
                )
            except httpx2.HTTPError:
                direct = None  # dropped before a complete answer
            if fault == "drop" and not stream:
                assert direct is None and via.status_code == 502
                assert via.json()["error"]["type"] == "upstream_error"
            elif fault == "drop":  # the stream's first chunk, then the reason it ended
                assert direct is None and via.status_code == 200
                first, error = _events(via.text)
                assert first == stream_events(body, prompt)[0]
                assert "dropped the stream" in error["error"]["message"]
            else:
                assert direct is not None
                assert (via.status_code, via.content) == (direct.status_code, direct.content)
                assert via.headers.get("retry-after") == direct.headers.get("retry-after")
                assert via.headers["content-type"] == direct.headers["content-type"]
        assert set(seen.values()) == {"ok", "slow", "429", "500", "drop"}
        assert proxy.recorder.flush()
    with Store(db) as store:
        rows = {c.request.messages[-1].content: c for c in store.list()}
        assert len(rows) == store.count() == len(prompts)
    for prompt, c in rows.items():
        if seen[prompt] in ("ok", "slow"):
            assert c.ok and c.text == f"echo: {prompt}"
        else:
            assert not c.ok and c.text == ""
            expected = {"429": "HTTP 429: slow down", "500": "HTTP 500: boom", "drop": "drop"}
            assert expected[seen[prompt]] in (c.error or "")


def test_clients_need_the_proxys_own_key(tmp_path: Path) -> None:
    with (
        FaultyServer(faults=False) as upstream,
        ProxyServer(upstream.url, tmp_path / "s.db") as proxy,
    ):
        for key in ("sk-wrong", "sk-upstream"):
            client = openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0)
            with pytest.raises(openai.AuthenticationError, match="proxy API key"):
                client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "x"}]
                )
            with pytest.raises(openai.AuthenticationError):
                client.models.list()
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        keyless = httpx2.post(f"{proxy.base_url}/chat/completions", json=body)
        assert keyless.status_code == 401 and keyless.json()["error"]["type"]
        assert upstream.bodies == [] and upstream.auth == []
        assert proxy.recorder.flush() and proxy.recorder.stats.recorded == 0


def test_a_model_the_upstream_names_answers_whatever_model_the_client_asks(
    tmp_path: Path,
) -> None:
    # a local model behind the proxy: still serve on a loopback port of its own
    db = tmp_path / "s.db"
    with ProxyServer("scripted:echo", db) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hello there"}], max_tokens=8
        )
        assert reply.choices[0].message.content == "hello there"
        assert reply.model == "scripted:echo"
        assert [m.id for m in client.models.list()] == ["scripted:echo"]
        assert proxy.recorder.flush()
    with Store(db) as store:
        (c,) = store.list()
    assert (
        c.model == "scripted:echo" and c.text == "hello there" and c.request.params.max_tokens == 8
    )


def test_a_locked_store_holds_no_request_up_and_gets_everything_once_free(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    Store(db).close()
    lock = sqlite3.connect(db, isolation_level=None)
    with (
        FaultyServer(faults=False) as upstream,
        ProxyServer(upstream.url, db) as proxy,
        httpx2.Client(timeout=30) as http,
    ):
        lock.execute("BEGIN EXCLUSIVE")  # another writer holds the store
        took = []
        for i in range(20):
            start = time.perf_counter()
            body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}
            resp = http.post(f"{proxy.base_url}/chat/completions", json=body, headers=AUTH)
            took.append(time.perf_counter() - start)
            assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"]
        time.sleep(0.3)
        assert proxy.recorder.stats.pending == 20  # journaled, waiting for the store
        assert max(took) < 1.0, took  # the store waits, the answers do not
        lock.execute("ROLLBACK")
        assert proxy.recorder.flush()
    lock.close()
    with Store(db) as store:
        assert sorted(c.text for c in store.list()) == sorted(f"echo: q{i}" for i in range(20))
    assert not list((tmp_path / "s.db.pending").glob("*.jsonl"))


def test_a_full_store_is_logged_counted_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failures = iter(range(3))
    real = Store.put_new

    def full(self: Store, completions: Any) -> int:
        if next(failures, None) is not None:
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, completions)

    monkeypatch.setattr(Store, "put_new", full)
    db = tmp_path / "s.db"
    with (
        caplog.at_level(logging.WARNING, logger="still.proxy"),
        FaultyServer(faults=False) as upstream,
        ProxyServer(upstream.url, db, retry_s=0.05) as proxy,
        httpx2.Client(timeout=30) as http,
    ):
        for i in range(10):
            body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}
            assert http.post(f"{proxy.base_url}/chat/completions", json=body,
                             headers=AUTH).status_code == 200  # fmt: skip
        assert proxy.recorder.flush()
        stats = http.get(f"http://127.0.0.1:{proxy.port}/still/stats", headers=AUTH).json()
    assert stats["write_errors"] == 3 and stats["recorded"] == 10 and stats["pending"] == 0
    said = [r.getMessage() for r in caplog.records if "cannot write to the store" in r.message]
    assert len(said) == 1 and "database or disk is full" in said[0]  # once, not per retry
    with Store(db) as store:
        assert store.count() == 10


def test_the_upstream_key_reaches_neither_client_store_nor_log(tmp_path: Path) -> None:
    secret = "sk-upstream-SECRET-4c0ffee4c0ffee"
    db, log = tmp_path / "s.db", tmp_path / "proxy.log"
    # an upstream that quotes the key it was sent in every answer and error message
    with FaultyServer(slow_s=0.1, echo_auth=True) as upstream:
        proxy = ProxyProcess(
            upstream.url, db, log, env={"UPSTREAM_KEY": secret},
            extra=["--upstream-key-env", "UPSTREAM_KEY"], verbose=True,
        ).start()  # fmt: skip
        seen: list[str] = []
        with httpx2.Client(timeout=30) as http:
            for i in range(30):
                body = {"model": "m", "messages": [{"role": "user", "content": f"q{i}"}],
                        "stream": i % 2 == 1}  # fmt: skip
                resp = http.post(f"{proxy.base_url}/chat/completions", json=body, headers=AUTH)
                seen.append(resp.text + json.dumps(dict(resp.headers)))
            seen.append(http.get(f"{proxy.base_url}/models", headers=AUTH).text)
        assert proxy.stop() == 0
    assert set(upstream.auth) == {f"Bearer {secret}"}  # it was sent where it belongs
    assert all(secret not in s for s in seen)
    assert any("(auth: Bearer ***)" in s for s in seen)  # scrubbed, not dropped
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert db in files and log in files
    for f in files:
        assert secret.encode() not in f.read_bytes(), f
    with Store(db) as store:
        assert store.count() == 30
        assert any(c.text.endswith("(auth: Bearer ***)") for c in store.list())


def test_a_proxy_open_to_the_network_needs_its_own_key(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["proxy", "scripted:echo", "--host", "0.0.0.0", "--db", str(tmp_path / "s.db")]
    )
    assert res.exit_code == 1 and "set --api-key" in res.output
    assert not (tmp_path / "s.db").exists()


def test_the_recorder_stores_what_a_killed_proxy_left_once(tmp_path: Path) -> None:
    """Journal segments a SIGKILL left (one cut mid-line, one read twice) are stored by the
    next recorder on that store, each exchange once; the cut line is kept aside."""
    db = tmp_path / "s.db"
    journal = tmp_path / "s.db.pending"
    journal.mkdir()
    lines = [
        json.dumps({
            "id": f"cmpl-{i:024d}", "model": "openai:gpt-4o-mini", "provider": "openai",
            "request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]},
            "response": answer_body({"model": "gpt-4o-mini"}, f"q{i}"), "status": 200,
            "created_at": 1_767_225_600 + i, "latency_s": 0.1,
        })
        for i in range(6)
    ]  # fmt: skip
    (journal / "00000000000000000001-999999-000000.jsonl").write_text(
        "\n".join(lines[:4]) + "\n" + lines[4][:40]
    )
    (journal / "00000000000000000002-999999-000001.jsonl").write_text("\n".join(lines[2:]) + "\n")
    left = sorted(journal.glob("*.jsonl"))
    with Recorder(db):
        deadline = time.monotonic() + 10
        while any(p.exists() for p in left) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(p.exists() for p in left)  # stored while the recorder runs
    assert not list(journal.glob("*.jsonl"))
    with Store(db) as store:
        rows = store.list()
    assert [c.text for c in rows] == [f"echo: q{i}" for i in range(6)]
    assert rows[0].cost is not None and rows[0].metadata["source"] == "proxy"
    (cut,) = [json.loads(x) for x in (tmp_path / "s.db.rejected.jsonl").read_text().splitlines()]
    assert cut["reason"].startswith("unreadable") and cut["line"] == lines[4][:40]


def test_tool_calls_are_forwarded_and_kept_aside_not_stored(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with (
        FaultyServer(faults=False) as upstream,
        ProxyServer(upstream.url, db) as proxy,
        httpx2.Client(timeout=30) as http,
    ):
        body = {"model": "m", "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "function",
             "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t", "content": "sunny"},
        ]}  # fmt: skip
        resp = http.post(f"{proxy.base_url}/chat/completions", json=body, headers=AUTH)
        assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"]
        assert proxy.recorder.flush()
        assert proxy.recorder.stats.rejected == 1
    (kept,) = [json.loads(x) for x in (tmp_path / "s.db.rejected.jsonl").read_text().splitlines()]
    assert "tool call" in kept["reason"] and kept["exchange"]["request"] == body
    with Store(db) as store:
        assert store.count() == 0


def test_a_dead_upstream_is_a_502_for_the_client_and_a_failed_exchange(tmp_path: Path) -> None:
    with FaultyServer(faults=False) as gone:
        url = gone.url
    db = tmp_path / "s.db"
    with ProxyServer(url, db) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
        with pytest.raises(openai.InternalServerError, match="cannot reach the upstream"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert proxy.recorder.flush()
    with Store(db) as store:
        (c,) = store.list()
    assert c.error is not None and c.error.startswith("HTTP 502: cannot reach the upstream")


def test_concurrent_clients_each_get_their_own_answer(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    errors: list[str] = []
    with (
        FaultyServer(faults=False, latency_s=0.05) as upstream,
        ProxyServer(upstream.url, db) as proxy,
    ):

        def ask(worker: int) -> None:
            client = openai.OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0)
            for i in range(10):
                prompt = f"w{worker} q{i}"
                got = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": prompt}]
                )
                if got.choices[0].message.content != f"echo: {prompt}":
                    errors.append(prompt)

        threads = [threading.Thread(target=ask, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert proxy.recorder.flush()
    assert errors == []
    with Store(db) as store:
        assert sorted(c.text for c in store.list()) == sorted(
            f"echo: w{w} q{i}" for w in range(8) for i in range(10)
        )


def test_a_journal_that_cannot_be_written_loses_the_record_not_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import os

    real = os.write
    with (
        caplog.at_level(logging.ERROR, logger="still.proxy"),
        FaultyServer(faults=False) as upstream,
        ProxyServer(upstream.url, tmp_path / "s.db") as proxy,
        httpx2.Client(timeout=30) as http,
    ):
        journal = proxy.recorder._fd

        def full_disk(fd: int, data: bytes) -> int:
            if fd == journal:
                raise OSError(28, "No space left on device")
            return real(fd, data)

        monkeypatch.setattr(os, "write", full_disk)
        body = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
        resp = http.post(f"{proxy.base_url}/chat/completions", json=body, headers=AUTH)
        monkeypatch.setattr(os, "write", real)
        assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"]
        assert proxy.recorder.stats.lost == 1 and proxy.recorder.stats.pending == 0
    assert any("No space left on device" in r.getMessage() for r in caplog.records)
