"""The proxy's HTTP face: an OpenAI-compatible API that forwards, relays and records.

`POST /v1/chat/completions` reads the body once, asks the router which upstream takes it,
sends the body there as it is (`Upstream.body_for`), and hands the client the upstream's
status, body and useful headers (rate-limit and retry headers included) unchanged: a 429
stays a 429 with its Retry-After, a stream is relayed chunk by chunk as it arrives. What
the proxy adds is an `X-Still-Completion-Id` header (the stored completion's id); what it
says itself is only what the upstream cannot: 502 when the upstream cannot be reached or
drops the connection before answering, 504 when it does not answer in time, and, in a
stream the upstream dropped, a last OpenAI-style error event (the openai SDK raises it).

Every forwarded request is recorded as an `Exchange` (the body, the answer or error, usage,
latency, time to first token, and tags from `X-Still-Tags: key=value, key=value` beside
the body's own `metadata`) through the `Recorder`, before the answer's last bytes go out and
without waiting for the store. `GET /v1/models` is the upstream's list. `GET /still/stats`
gives the recorder's counts. Clients authenticate with the proxy's own key
(`Authorization: Bearer <key>`, compared in constant time); the upstream's key is never
sent to a client, a log or the store (`Upstream.scrub`).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio
import httpx2

# Imported at module level: FastAPI resolves the handlers' annotations from these globals.
from fastapi import FastAPI, HTTPException
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

from still.proxy._recorder import Exchange, Recorder
from still.proxy._stream import StreamAssembler
from still.proxy._upstream import Upstream
from still.serve import TAGS_HEADER, parse_tags  # one reading of tags, by the proxy and serve

log = logging.getLogger("still.proxy")

ID_HEADER = "X-Still-Completion-Id"
# not relayed: hop-by-hop headers, what is recomputed here, and the upstream's cookies
_DROPPED_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
     "date", "server", "set-cookie", "proxy-authenticate", "trailer", "upgrade"}
)  # fmt: skip


@dataclass(frozen=True)
class Call:
    """One client request as the proxy read it: what a router picks an upstream by."""

    raw: bytes
    """The body as received."""
    body: dict[str, Any] | None
    """The body as JSON, None when it is not a JSON object (forwarded all the same)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags from the `X-Still-Tags` header."""

    @property
    def model(self) -> str | None:
        """The model the client asked for."""
        model = (self.body or {}).get("model")
        return model if isinstance(model, str) else None

    @property
    def stream(self) -> bool:
        """Whether the client asked for a stream."""
        return bool((self.body or {}).get("stream"))

    @property
    def metadata(self) -> dict[str, str]:
        """The body's `metadata` tags with the header's (which win on the same key)."""
        own = (self.body or {}).get("metadata")
        given = {str(k): str(v) for k, v in own.items()} if isinstance(own, dict) else {}
        return {**given, **self.tags}


Router = Callable[[Call], Upstream]
"""Picks the upstream of one call (issue 16's routes); the default takes the first."""


def read_call(raw: bytes, tags_header: str | None) -> Call:
    """The call a request body and its `X-Still-Tags` header make."""
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    return Call(raw, body if isinstance(body, dict) else None, parse_tags(tags_header))


def create_app(
    upstreams: Upstream | Sequence[Upstream],
    recorder: Recorder | None,
    api_key: str | None = None,
    router: Router | None = None,
) -> FastAPI:
    """The proxy application.

    Args:
        upstreams: where requests go; several when a `router` chooses among them (the
            first lists the models). Their connection pools open and close with the app.
        recorder: where exchanges are recorded (None: nowhere). Started and closed with
            the app.
        api_key: the key clients must send (`Authorization: Bearer <key>`); None: any.
        router: picks each call's upstream (default: the first).
    """
    ups = [upstreams] if isinstance(upstreams, Upstream) else list(upstreams)
    if not ups:
        raise ValueError("create_app needs at least one upstream")
    route: Router = router or (lambda call: ups[0])

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if recorder is not None:
            recorder.start()
        for up in ups:
            await up.start()
        try:
            yield
        finally:
            for up in ups:
                await up.aclose()
            if recorder is not None:
                await anyio.to_thread.run_sync(recorder.close)

    app = FastAPI(title="still proxy", version="1", lifespan=lifespan)
    app.state.recorder = recorder
    app.state.upstreams = ups

    @app.exception_handler(HTTPException)
    async def openai_error(_: HTTPRequest, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail)}
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

    def check_key(request: HTTPRequest) -> None:
        if api_key is None:
            return
        got = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(got.encode(), api_key.encode()):
            raise HTTPException(
                status_code=401,
                detail={"message": "invalid or missing proxy API key (the proxy's own key, "
                        "not the upstream's)", "type": "invalid_request_error"},
            )  # fmt: skip

    @app.get("/v1/models")
    async def models(request: HTTPRequest) -> Response:
        check_key(request)
        up = ups[0]
        try:
            status, body, kind = await up.models()
        except httpx2.HTTPError as exc:
            return _proxy_error(502, up, f"cannot list the upstream's models: {_say(exc)}")
        return Response(body, status_code=status, media_type=kind)

    @app.get("/still/stats")
    async def stats(request: HTTPRequest) -> dict[str, Any]:
        check_key(request)
        return asdict(recorder.stats) if recorder is not None else {}

    @app.post("/v1/chat/completions")
    async def chat(request: HTTPRequest) -> Response:
        check_key(request)
        started, t0 = time.time(), time.perf_counter()
        call = read_call(await request.body(), request.headers.get(TAGS_HEADER))
        return await forward(route(call), call, recorder, started=started, t0=t0)

    return app


async def forward(
    upstream: Upstream,
    call: Call,
    recorder: Recorder | None,
    started: float | None = None,
    t0: float | None = None,
) -> Response:
    """Send one call to `upstream` and answer the client with what it says, recording
    the exchange. Never raises for the upstream's failures: they are the client's answer.

    Args:
        upstream: where the call goes.
        call: the client's request.
        recorder: where the exchange is recorded (None: nowhere).
        started: when the request arrived (Unix seconds; default: now).
        t0: `time.perf_counter()` when it arrived, for latencies (default: now).
    """
    ex = _Pending(upstream, call, recorder, started or time.time(), t0 or time.perf_counter())
    try:
        resp = await upstream.send(upstream.body_for(call.raw, call.body), call.stream, call.tags)
    except httpx2.TimeoutException as exc:
        return ex.fail(504, f"the upstream did not answer in time: {_say(exc)}")
    except httpx2.HTTPError as exc:
        return ex.fail(502, f"cannot reach the upstream: {_say(exc)}")
    headers = {
        **{k: v for k, v in resp.headers.items() if k.lower() not in _DROPPED_HEADERS},
        ID_HEADER: ex.id,
    }
    kind = resp.headers.get("content-type", "")
    if resp.status_code == 200 and kind.startswith("text/event-stream"):
        return StreamingResponse(_relay(ex, resp), status_code=200, headers=headers)
    try:
        data = upstream.scrub(await resp.aread())
    except httpx2.HTTPError as exc:
        return ex.fail(502, f"the upstream dropped the connection: {_say(exc)}")
    finally:
        await resp.aclose()
    ex.answered(resp.status_code, data)
    return Response(data, status_code=resp.status_code, headers=headers)


class _Pending:
    """One exchange under way: records itself once, however it ends."""

    def __init__(
        self,
        upstream: Upstream,
        call: Call,
        recorder: Recorder | None,
        started: float,
        t0: float,
    ) -> None:
        self.upstream, self.call, self.recorder = upstream, call, recorder
        self.started, self.t0 = started, t0
        self.id = "cmpl-" + uuid.uuid4().hex[:24]
        self.ttft_s: float | None = None
        self.recorded = False

    def record(
        self, status: int, response: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        if self.recorded or self.recorder is None:
            self.recorded = True
            return
        self.recorded = True
        request: Any = self.call.body
        if request is None:
            request = self.call.raw.decode("utf-8", errors="replace")
        self.recorder.record(
            Exchange(
                id=self.id,
                model=self.upstream.model_ref(self.call.model),
                provider=self.upstream.provider,
                request=request,
                response=response,
                status=status,
                error=None if error is None else self.upstream.scrub_text(error),
                tags=self.call.tags,
                created_at=self.started,
                latency_s=time.perf_counter() - self.t0,
                ttft_s=self.ttft_s,
            )
        )

    def fail(self, status: int, message: str) -> JSONResponse:
        """The proxy's own error answer (502, 504), recorded as a failed exchange."""
        message = self.upstream.scrub_text(message)
        log.warning("%s: %s", self.upstream.name, message)
        self.record(status, error=f"HTTP {status}: {message}")
        return _proxy_error(status, self.upstream, message, {ID_HEADER: self.id})

    def answered(self, status: int, data: bytes) -> None:
        """Record an answer read whole: a chat.completion, or the upstream's error."""
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        if status == 200 and isinstance(body, dict):
            self.record(status, body)
        elif status == 200:
            self.record(status, error="MalformedResponse: the upstream's answer is not JSON")
        else:
            self.record(status, error=f"HTTP {status}: {_error_message(body, data)}")


async def _relay(ex: _Pending, resp: httpx2.Response) -> AsyncIterator[bytes]:
    """The upstream's stream, chunk by chunk, while it is assembled and then recorded (before
    the chunk that ends it goes out). A stream the upstream drops ends with an error event;
    one the client leaves is recorded as failed."""
    assembler = StreamAssembler()
    try:
        async for piece in resp.aiter_bytes():
            piece = ex.upstream.scrub(piece)
            assembler.feed(piece)
            if ex.ttft_s is None and assembler.content_seen:
                ex.ttft_s = time.perf_counter() - ex.t0
            if assembler.over and not ex.recorded:
                _record_stream(ex, assembler)
            yield piece
        if not ex.recorded:  # a stream that ends without [DONE]
            _record_stream(ex, assembler)
    except httpx2.HTTPError as exc:
        message = ex.upstream.scrub_text(f"the upstream dropped the stream: {_say(exc)}")
        log.warning("%s: %s", ex.upstream.name, message)
        ex.record(200, error=f"stream dropped: {message}")
        error = {"message": message, "type": "upstream_error", "code": "upstream_dropped"}
        yield f"data: {json.dumps({'error': error})}\n\n".encode()
    finally:
        if not ex.recorded:  # the client went away (the task is cancelled)
            ex.record(200, error="the client closed the stream before its end")
        with anyio.CancelScope(shield=True):
            await resp.aclose()


def _record_stream(ex: _Pending, assembler: StreamAssembler) -> None:
    if assembler.error is not None:
        ex.record(200, error=f"stream error: {assembler.error}")
    elif assembler.done or assembler.finished():
        ex.record(200, assembler.completion())
    else:
        ex.record(200, error="stream ended before its finish reason")


def _error_message(body: Any, data: bytes) -> str:
    """The message of an OpenAI-style error body, else the start of the body's text."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return data[:300].decode("utf-8", errors="replace") or "(empty body)"


def _say(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _proxy_error(
    status: int, upstream: Upstream, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    error = {"message": f"still proxy ({upstream.name}): {upstream.scrub_text(message)}",
             "type": "upstream_error", "code": None}  # fmt: skip
    return JSONResponse({"error": error}, status_code=status, headers=dict(headers or {}))
