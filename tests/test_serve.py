"""The OpenAI provider (real SDK) against `still serve` (real HTTP) over loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from still.models import get_model
from still.serve import create_app
from still.types import Message, Request, SamplingParams

KEY = "sk-still-test-0123456789"
LABELS = ("human", "location", "number")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A real uvicorn server in a thread, serving the tiny model."""

    def __init__(self, model_dir: Path, api_key: str | None) -> None:
        import uvicorn

        self.local = get_model(f"local:{model_dir}")
        self.app = create_app(self.local, "tiny", api_key=api_key)
        self.port = _free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def ref(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1#tiny"


@pytest.fixture
def server(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("STILL_API_KEY", KEY)
    monkeypatch.setenv("STILL_MAX_RETRIES", "0")
    with Server(tiny_model, api_key=KEY) as s:
        yield s


def _req(model: str, text: str, **kw: object) -> Request:
    msgs = (Message(role="system", content="Classify."), Message(role="user", content=text))
    return Request(model=model, messages=msgs, **kw)  # type: ignore[arg-type]


def test_plain_answers_match_the_local_model(server: Server) -> None:
    remote = get_model(server.ref)
    params = SamplingParams(max_tokens=6)
    got = remote.complete([_req(remote.name, "Who wrote it?", params=params)])[0]
    want = server.local.complete([_req(server.local.name, "Who wrote it?", params=params)])[0]
    assert got.ok, got.error
    assert got.text == want.text and got.usage == want.usage
    assert got.latency_s > 0


def test_json_schema_enum_answers_are_label_scores(server: Server) -> None:
    remote = get_model(server.ref)
    qs = ["Who wrote it?", "Where is it?", "How many?"]
    got = remote.complete([_req(remote.name, q, labels=LABELS) for q in qs])
    want = server.local.complete([_req(server.local.name, q, labels=LABELS) for q in qs])
    assert [c.text for c in got] == [c.text for c in want]
    assert all(c.text in LABELS for c in got)


def test_logprobs_come_back_per_token(server: Server) -> None:
    remote = get_model(server.ref)
    c = remote.complete(
        [_req(remote.name, "Who?", params=SamplingParams(max_tokens=4), logprobs=True)]
    )[0]
    assert c.ok and c.token_logprobs is not None
    assert len(c.token_logprobs) == c.usage.completion_tokens
    assert all(lp <= 0 for lp in c.token_logprobs)


def test_concurrent_requests_share_batches(server: Server) -> None:
    remote = get_model(server.ref)
    reqs = [_req(remote.name, f"Question {i}?", labels=LABELS) for i in range(12)]
    outs = remote.complete(reqs)
    assert all(c.ok for c in outs)
    assert max(server.app.state.batcher.batches) > 1


def test_a_wrong_key_is_refused_and_never_echoed(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STILL_API_KEY", "sk-wrong-key-abcdef")
    remote = get_model(server.ref)
    c = remote.complete([_req(remote.name, "Who?")])[0]
    assert not c.ok and c.error is not None
    assert c.error.startswith("AuthenticationError")
    assert "sk-wrong-key-abcdef" not in c.error and KEY not in c.error


def test_an_unreachable_server_is_a_failed_completion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STILL_MAX_RETRIES", "0")
    remote = get_model(f"http://127.0.0.1:{_free_port()}/v1#nothing")
    outs = remote.complete([_req(remote.name, "Who?"), _req(remote.name, "Where?")])
    assert [c.ok for c in outs] == [False, False]
    assert all((c.error or "").startswith("APIConnectionError") for c in outs)


def test_an_unknown_model_name_is_refused(server: Server) -> None:
    remote = get_model(server.ref.replace("#tiny", "#other"))
    c = remote.complete([_req(remote.name, "Who?")])[0]
    assert not c.ok and (c.error or "").startswith("NotFoundError")


def test_a_run_through_the_endpoint_keeps_the_key_out_of_every_file(
    server: Server, tmp_path: Path, tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from helpers import write_task
    from still.pipeline import bench_stage, capture_role, open_run

    caplog.set_level("DEBUG")
    task = write_task(tmp_path, student=f"local:{tiny_model}", teacher=server.ref)
    run = open_run(task, tmp_path / "run")
    stats = capture_role(run, "teacher", "train")
    assert stats.called == stats.total and stats.failed == 0
    bench_stage(run, roles=("teacher",), show=False)
    files = [p for p in run.dir.rglob("*") if p.is_file()]
    assert any(p.name == "still.db" for p in files) and any(p.name == "report.md" for p in files)
    for path in files:
        assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in caplog.text


def test_bad_bodies_are_400s_with_a_reason(server: Server) -> None:
    import json
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{server.port}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    msgs = [{"role": "user", "content": "Who?"}]
    for body, reason in [
        ({"model": "tiny", "messages": []}, "messages must not be empty"),
        ({"model": "tiny", "messages": [{"content": "x"}]}, "invalid messages"),
        ({"model": "tiny", "messages": msgs, "temperature": "hot"}, "invalid sampling"),
        ({"model": "tiny", "messages": msgs, "n": 99}, "n must be between 1 and 16"),
    ]:
        req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 400, body
        assert reason in err.value.read().decode()


def test_streaming_sends_the_same_answer_in_pieces(server: Server) -> None:
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY)
    msgs = [{"role": "user", "content": "Who wrote it?"}]
    whole = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0)
    pieces, finish = [], None
    for event in client.chat.completions.create(
        model="tiny", messages=msgs, max_tokens=8, temperature=0, stream=True
    ):
        delta = event.choices[0].delta.content
        if delta:
            pieces.append(delta)
        finish = event.choices[0].finish_reason or finish
    assert "".join(pieces).strip() == whole.choices[0].message.content
    assert pieces and finish == "stop"  # word by word; the tiny model may emit one "word"
    # an enum answer streams as one JSON chunk
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "a",
            "schema": {
                "type": "object",
                "properties": {"label": {"type": "string", "enum": list(LABELS)}},
            },
        },
    }
    text = "".join(
        e.choices[0].delta.content or ""
        for e in client.chat.completions.create(
            model="tiny", messages=msgs, response_format=fmt, stream=True
        )
    )  # type: ignore[arg-type]
    assert json.loads(text)["label"] in LABELS


def test_stream_usage_chunk_counts_tokens(server: Server) -> None:
    """stream_options.include_usage: a last chunk with no choices and the token counts,
    the same counts as the non-streamed answer."""
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY)
    msgs = [{"role": "user", "content": "Who wrote it?"}]
    whole = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0)
    events = list(
        client.chat.completions.create(
            model="tiny",
            messages=msgs,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = events[-1]
    assert last.choices == [] and last.usage is not None
    assert all(e.usage is None for e in events[:-1])
    assert whole.usage is not None
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_json_schema_and_json_object_by_constrained_decoding(server: Server) -> None:
    """Any JSON schema (not only one enum) is followed by the local model behind still serve;
    an invalid schema is a 400 that says why."""
    pytest.importorskip("llguidance")
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY)
    msgs = [{"role": "user", "content": "Describe the question."}]
    schema = {
        "type": "object",
        "properties": {
            "topic": {"type": "string", "maxLength": 12},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
            "score": {"type": "integer", "minimum": 0, "maximum": 100},
        },
        "required": ["topic", "tags", "score"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "d", "schema": schema}}
    r = client.chat.completions.create(
        model="tiny", messages=msgs, response_format=fmt, max_tokens=120, temperature=0
    )  # type: ignore[call-overload]
    import jsonschema

    value = json.loads(r.choices[0].message.content or "")
    jsonschema.validate(value, schema)
    r = client.chat.completions.create(
        model="tiny",
        messages=msgs,
        response_format={"type": "json_object"},
        max_tokens=40,
        temperature=0,
    )
    text = r.choices[0].message.content or ""
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:  # cut by max_tokens: still a valid JSON prefix of an object
        assert text.startswith("{")
    bad = {"type": "json_schema", "json_schema": {"name": "d", "schema": {"type": 7}}}
    with pytest.raises(openai.BadRequestError, match="invalid JSON schema"):
        client.chat.completions.create(model="tiny", messages=msgs, response_format=bad)  # type: ignore[call-overload]


def test_top_logprobs_through_the_sdk_and_the_provider(server: Server, tmp_path: Path) -> None:
    """top_logprobs: each generated token with its k most likely alternatives, sorted; the
    greedy token is the top one. The OpenAI provider stores them with the completion."""
    import openai

    from still.store import Store

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY)
    r = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Who?"}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and len(content) == r.usage.completion_tokens  # type: ignore[union-attr]
    for t in content:
        alts = [a.logprob for a in t.top_logprobs]
        assert 1 <= len(alts) <= 3 and alts == sorted(alts, reverse=True)
        assert t.logprob == pytest.approx(alts[0], abs=1e-4)  # greedy picks the top token
    assert "".join(t.token for t in content).strip() == r.choices[0].message.content

    remote = get_model(server.ref)
    req = _req(remote.name, "Who?", params=SamplingParams(max_tokens=5), logprobs=True)
    c = remote.complete([req.model_copy(update={"top_logprobs": 3})])[0]
    assert c.ok and c.tokens and c.top_logprobs and len(c.top_logprobs) == len(c.tokens)
    with Store(tmp_path / "s.db") as s:
        s.put(c)
        back = s.get(c.id)
    assert back is not None and back.top_logprobs == c.top_logprobs and back.tokens == c.tokens
    # a request without top_logprobs keeps the hash it had before the field existed
    assert "top_logprobs" not in req.canonical()
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], top_logprobs=2
        )


def test_streamed_provider_measures_time_to_first_token(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STILL_STREAM=1: the same answers and usage as unstreamed, plus a TTFT no longer
    than the whole request, for free text and for scored labels alike."""
    plain = get_model(server.ref)
    monkeypatch.setenv("STILL_STREAM", "1")
    streamed = get_model(server.ref)
    params = SamplingParams(max_tokens=6)
    reqs = [
        _req(plain.name, "Who wrote it?", params=params),
        _req(plain.name, "Where?", labels=LABELS),
    ]
    want = plain.complete(reqs)
    got = streamed.complete(reqs)
    for g, w in zip(got, want, strict=True):
        assert g.ok, g.error
        assert (g.text, g.usage) == (w.text, w.usage)
        assert w.ttft_s is None
        assert g.ttft_s is not None and 0 < g.ttft_s <= g.latency_s


def test_local_completions_record_time_to_first_token(server: Server) -> None:
    params = SamplingParams(max_tokens=6)
    gen, scored = server.local.complete(
        [_req("tiny", "Who wrote it?", params=params), _req("tiny", "Where?", labels=LABELS)]
    )
    assert gen.ttft_s is not None and 0 < gen.ttft_s <= gen.latency_s
    assert scored.ttft_s == scored.latency_s  # one pass gives the whole answer
