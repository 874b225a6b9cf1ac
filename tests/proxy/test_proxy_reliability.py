"""Many requests through the real `still proxy` command under injected upstream faults
(429, 500, slow, dropped), with the proxy SIGKILLed mid-load and started again: every
client sees exactly the upstream's answer or error, and the store holds each exchange a
client saw completed exactly once. Nothing is lost beyond the requests in flight, whose
clients see them fail."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest

from still.store import Store
from still.testing import FaultyServer, answer_body, stream_events
from test_helpers.proxy import KEY, ProxyProcess

AUTH = {"Authorization": f"Bearer {KEY}"}
CLIENTS = 16


def _expected(fault: str, body: dict[str, Any], prompt: str) -> tuple[int, Any]:
    """The status and body (a stream: its events) a client must see for a prompt."""
    stream = body["stream"]
    if fault == "429":
        return 429, {"error": {"message": "slow down"}}
    if fault == "500":
        return 500, {"error": {"message": "boom"}}
    if fault == "drop" and stream:
        return 200, [stream_events(body, prompt)[0], "dropped"]
    if fault == "drop":
        return 502, "upstream_error"
    if stream:
        return 200, [*stream_events(body, prompt), "[DONE]"]
    return 200, answer_body(body, prompt)


def _seen(resp: httpx2.Response, stream: bool) -> tuple[int, Any]:
    """What the client got, in `_expected`'s terms."""
    if resp.status_code == 502:
        return 502, resp.json()["error"]["type"]
    if not stream or resp.status_code != 200:
        return resp.status_code, resp.json()
    events: list[Any] = []
    for event in resp.text.split("\n\n"):
        data = event.removeprefix("data: ").strip()
        if data == "[DONE]" or not data:
            events += [data] if data else []
        else:
            obj = json.loads(data)
            events.append("dropped" if "error" in obj else obj)
    return 200, events


@pytest.mark.parametrize(
    "n", [pytest.param(300, id="300"), pytest.param(10_000, id="10000", marks=pytest.mark.slow)]
)
def test_requests_under_faults_and_a_sigkill_lose_nothing_answered(tmp_path: Path, n: int) -> None:
    db, log = tmp_path / "prod.db", tmp_path / "proxy.log"
    answered: dict[str, tuple[int, Any]] = {}  # prompt -> what its client got
    failed: dict[str, str] = {}  # prompt -> the client's error (proxy down or killed)
    wrong: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n))
    with FaultyServer(slow_s=0.2, latency_s=0.002) as upstream:
        proxy = ProxyProcess(upstream.url, db, log).start()
        kill_at = n // 3

        up = threading.Event()
        up.set()

        def client() -> None:
            with httpx2.Client(timeout=60) as http:
                while True:
                    with lock:
                        i = next(counter, None)
                    if i == kill_at:  # mid-load, with every other client in flight
                        up.clear()  # the others wait for the restart, as a retry loop would
                        proxy.kill()
                        proxy.start()  # same port, same store: its journal is picked up
                        up.set()
                    if i is None:
                        return
                    up.wait()
                    prompt = f"request {i}"
                    body = {"model": "m", "messages": [{"role": "user", "content": prompt}],
                            "stream": i % 3 == 0}  # fmt: skip
                    try:
                        resp = http.post(f"{proxy.base_url}/chat/completions", json=body,
                                         headers=AUTH)  # fmt: skip
                        got = _seen(resp, body["stream"])
                    except httpx2.HTTPError as exc:
                        with lock:
                            failed[prompt] = type(exc).__name__
                        continue
                    want = _expected(upstream.fault_for(prompt), body, prompt)
                    with lock:
                        answered[prompt] = got
                        if got != want:
                            wrong.append(f"{prompt}: got {got}, expected {want}")

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert proxy.stop() == 0, log.read_text()[-2000:]
        faults = set(upstream.injected)

    assert wrong == [], "\n".join(wrong[:10])
    assert faults == {"429", "500", "slow", "drop"}
    # only what was in flight at the kill (or sent while it restarted) failed
    assert len(answered) + len(failed) == n and len(failed) <= 2 * CLIENTS, failed
    with Store(db) as store:
        rows = store.list()
    by_prompt: dict[str, list[Any]] = {}
    for c in rows:
        by_prompt.setdefault(c.request.messages[-1].content, []).append(c)
    assert all(len(cs) == 1 for cs in by_prompt.values())  # never twice
    missing = [p for p in answered if p not in by_prompt]
    assert missing == []  # every exchange a client saw completed is stored
    assert set(by_prompt) <= set(answered) | set(failed)
    for prompt, (status, _) in answered.items():
        (c,) = by_prompt[prompt]
        fault = upstream.fault_for(prompt)
        assert c.ok == (fault in ("ok", "slow")), (prompt, fault, c.error)
        assert c.ok or c.error is not None and (str(status) in c.error or "drop" in c.error)
    assert not list((tmp_path / "prod.db.pending").glob("*.jsonl"))
