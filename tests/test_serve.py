"""The OpenAI provider (real SDK) against `still serve` (real HTTP) over loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from still.models import get_model
from still.types import Completion, Message, Request, SamplingParams
from test_helpers.serve import KEY, Server, free_port

LABELS = ("human", "location", "number")


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
    remote = get_model(f"http://127.0.0.1:{free_port()}/v1#nothing")
    outs = remote.complete([_req(remote.name, "Who?"), _req(remote.name, "Where?")])
    assert [c.ok for c in outs] == [False, False]
    assert all((c.error or "").startswith("APIConnectionError") for c in outs)


def test_an_unknown_model_name_is_refused(server: Server) -> None:
    remote = get_model(server.ref.replace("#tiny", "#other"))
    c = remote.complete([_req(remote.name, "Who?")])[0]
    assert not c.ok and (c.error or "").startswith("NotFoundError")


def test_a_run_through_the_endpoint_keeps_every_key_out_of_every_file(
    server: Server,
    tmp_path: Path,
    tiny_model: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No key variable's value reaches a run's files or the logs: not on success, not when
    the server refuses a wrong key, not when the server fails the request."""
    from still.pipeline import bench_stage, capture_role, open_run
    from test_helpers import write_task

    secrets = {
        "STILL_API_KEY": KEY,
        "OPENAI_API_KEY": "sk-openai-secret-7a7a7a7a7a",
        "AZURE_OPENAI_API_KEY": "azure-secret-5b5b5b5b5b",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    caplog.set_level("DEBUG")
    task = write_task(tmp_path, student=f"local:{tiny_model}", teacher=server.ref)

    # a wrong key (OPENAI_API_KEY is the http key when STILL_API_KEY is unset): refused
    with monkeypatch.context() as m:
        m.delenv("STILL_API_KEY")
        stats = capture_role(open_run(task, tmp_path / "refused"), "teacher", "train", limit=4)
    assert stats.failed == stats.called == 4
    # the server fails every request: 500s that carry the server's error message
    with monkeypatch.context() as m:
        m.setattr(server.local, "complete", _failing_complete)
        stats = capture_role(open_run(task, tmp_path / "failed"), "teacher", "train", limit=4)
    assert stats.failed == stats.called == 4
    # and a run that works
    run = open_run(task, tmp_path / "run")
    stats = capture_role(run, "teacher", "train")
    assert stats.called == stats.total and stats.failed == 0
    bench_stage(run, roles=("teacher",), show=False)

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sum(p.name == "still.db" for p in files) == 3
    assert any(p.name == "report.md" for p in files)
    for path in files:
        data = path.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in data, (name, path)
    for name, value in secrets.items():
        assert value not in caplog.text, name


def _failing_complete(requests: list[Request]) -> list[Completion]:
    """A provider call whose every request fails."""
    return [Completion(request=r, error="RuntimeError: the model broke") for r in requests]


def test_bad_bodies_are_400s_with_a_reason(server: Server) -> None:
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
        ({"model": "tiny", "messages": msgs, "n": 0}, "n must be between 1 and 16"),
        ({"model": "tiny", "messages": msgs, "max_tokens": 0}, "max_tokens must be at least 1"),
        ({"model": "tiny", "messages": msgs, "max_completion_tokens": 0}, "at least 1"),
        ({"model": "tiny", "messages": msgs, "top_p": 1.5}, "top_p must be between 0 and 1"),
        (b'{"model": "tiny", "messages": [', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'["tiny"]', "must be a JSON object"),
    ]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(url, data, headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 400, body
        error = json.loads(err.value.read())["error"]
        assert reason in error["message"] and error["type"] == "invalid_request_error", body


def test_top_p_zero_is_greedy_as_openai_has_it(server: Server) -> None:
    """top_p 0 keeps only the most likely token (it is not replaced by the default 1): any
    seed at temperature 1 gives the greedy answer."""
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY)
    msgs = [{"role": "user", "content": "tell me about the river"}]
    greedy = client.chat.completions.create(
        model="tiny", messages=msgs, max_tokens=12, temperature=0
    )
    for seed in (1, 2, 3):
        r = client.chat.completions.create(
            model="tiny", messages=msgs, max_tokens=12, temperature=1, top_p=0, seed=seed
        )
        assert r.choices[0].message.content == greedy.choices[0].message.content, seed


def test_streaming_sends_the_same_answer_in_pieces(server: Server) -> None:
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY)
    msgs = [{"role": "user", "content": "Who wrote it?"}]
    whole = client.chat.completions.create(
        model="tiny", messages=msgs, max_tokens=16, temperature=0
    )
    pieces, finish = [], None
    for event in client.chat.completions.create(
        model="tiny", messages=msgs, max_tokens=16, temperature=0, stream=True
    ):
        delta = event.choices[0].delta.content
        if delta:
            pieces.append(delta)
        finish = event.choices[0].finish_reason or finish
    answer = whole.choices[0].message.content or ""
    assert "".join(pieces).strip() == answer
    assert len(answer.split()) > 1, answer  # the tiny model babbles several words
    assert len(pieces) > 1, pieces  # sent word by word, not as one chunk at the end
    assert finish == whole.choices[0].finish_reason
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
    else:  # cut by max_tokens, and the client is told so
        assert r.choices[0].finish_reason == "length" and text.startswith("{")
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


def _stream(client: object, **kw: object) -> tuple[str, str | None]:
    """A streamed answer's text and its last finish_reason."""
    text, finish = "", None
    for event in client.chat.completions.create(stream=True, **kw):  # type: ignore[attr-defined]
        if event.choices:
            text += event.choices[0].delta.content or ""
            finish = event.choices[0].finish_reason or finish
    return text, finish


def test_finish_reason_is_length_when_max_tokens_cut_the_answer(server: Server) -> None:
    """Streamed or not, free text or constrained JSON: an answer cut by max_tokens says
    "length" (a cut JSON answer does not parse: the client must know); a whole one "stop"."""
    pytest.importorskip("llguidance")
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY)
    msgs = [{"role": "user", "content": "tell me about the river"}]
    cut = {"model": "tiny", "messages": msgs, "max_tokens": 3, "temperature": 0}
    r = client.chat.completions.create(**cut)  # type: ignore[call-overload]
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    assert _stream(client, **cut) == (r.choices[0].message.content, "length")

    long = {
        "type": "object",
        "properties": {"topic": {"type": "string", "minLength": 20}},
        "required": ["topic"],
    }
    cut_json = {
        **cut,
        "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": long}},
    }
    r = client.chat.completions.create(**cut_json)  # type: ignore[call-overload]
    text = r.choices[0].message.content or ""
    assert r.choices[0].finish_reason == "length" and text.startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert _stream(client, **cut_json) == (text, "length")

    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    whole = {
        **cut,
        "max_tokens": 40,
        "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": schema}},
    }
    r = client.chat.completions.create(**whole)  # type: ignore[call-overload]
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)
    assert _stream(client, **whole) == (r.choices[0].message.content, "stop")


def test_a_failing_generation_ends_the_stream_with_an_error_and_frees_the_model(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """generate() raising in the worker thread: the stream ends with an OpenAI-style error
    event (the SDK raises it, with the reason) instead of hanging, and the next request is
    answered."""
    import openai
    import torch

    def broken(**kw: Any) -> None:
        if "streamer" in kw:  # streamed: the prompt, one token, then the failure
            kw["streamer"].put(torch.tensor([[1, 2, 3]]))
            kw["streamer"].put(torch.tensor([7]))
        raise RuntimeError("CUDA out of memory (simulated)")

    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY, timeout=15, max_retries=0
    )
    msgs = [{"role": "user", "content": "tell me about the river"}]
    kw = {"model": "tiny", "messages": msgs, "max_tokens": 8, "temperature": 0}
    with monkeypatch.context() as m:
        m.setattr(server.local.model, "generate", broken)  # type: ignore[attr-defined]
        with pytest.raises(openai.APIError, match="CUDA out of memory"):
            _stream(client, **kw)
        # unstreamed, the failure is a 500 with the reason
        with pytest.raises(openai.InternalServerError, match="CUDA out of memory"):
            client.chat.completions.create(**kw)  # type: ignore[call-overload]
    text, finish = _stream(client, **kw)
    assert text and finish in ("stop", "length")


def test_a_client_that_goes_away_does_not_stop_the_batcher(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed client disconnects while its batch is in the model (its waiter is
    cancelled); the batch's answer finds nobody waiting, and the next request is answered."""
    import openai

    slow_done = threading.Event()
    real = server.local.complete

    def slow(requests: list[Request]) -> list[Completion]:
        time.sleep(1.0)
        try:
            return real(requests)
        finally:
            slow_done.set()

    monkeypatch.setattr(server.local, "complete", slow)
    body = json.dumps(
        {
            "model": "tiny",
            "messages": [{"role": "user", "content": "Who?"}],
            "stream": True,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "a",
                    "schema": {
                        "type": "object",
                        "properties": {"label": {"type": "string", "enum": list(LABELS)}},
                    },
                },
            },
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + body)
        got = b""
        while b"data:" not in got:  # the role chunk: the request is in the batcher
            more = sock.recv(65536)
            assert more, got
            got += more
    assert slow_done.wait(10)  # the batch ends after its client left
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1", api_key=KEY, timeout=15, max_retries=0
    )
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Who?"}], max_tokens=4
    )
    assert r.choices[0].message.content


def test_the_batcher_outlives_a_cancelled_waiter() -> None:
    """Batcher alone: a waiter cancelled while its batch runs is skipped, not answered (which
    raised InvalidStateError and killed the loop); the next submission is answered."""
    import asyncio

    from still.serve import Batcher

    class Slow:
        name = "slow"

        def complete(self, requests: Sequence[Request]) -> list[Completion]:
            time.sleep(0.3)
            return [Completion(request=r, text="ok") for r in requests]

    async def main() -> str:
        batcher = Batcher(Slow())
        first = asyncio.create_task(batcher.submit(_req("slow", "a")))
        await asyncio.sleep(0.1)  # in the model now
        first.cancel()
        await asyncio.sleep(0.4)  # the batch ends with nobody waiting
        done = await asyncio.wait_for(batcher.submit(_req("slow", "b")), 5)
        return done.text

    assert asyncio.run(main()) == "ok"
