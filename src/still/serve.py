"""`still serve`: any still model behind an OpenAI-compatible HTTP API.

Endpoints: `GET /v1/models` and `POST /v1/chat/completions` (temperature, top_p,
max_tokens / max_completion_tokens, seed, stop, n, logprobs, stream, and `response_format`
json_object or json_schema). A json_schema whose one property is a string enum (the usual "pick
a label" schema) is answered by *label scoring*: always valid JSON with one of the labels, in
one forward pass. Any other schema is enforced by constrained decoding
(`still.models._constrained`): the answer parses and validates by construction, unless
max_tokens cuts it, which finish_reason "length" says.

Concurrent requests are gathered for a few milliseconds and answered in one provider call,
so they share forward passes. Binds 127.0.0.1 by default; `--api-key` requires
`Authorization: Bearer <key>` (compared in constant time, never logged). A body that is not
a JSON object, or asks what OpenAI refuses (max_tokens < 1, top_p outside [0, 1]), is a 400; a
failure while streaming ends the stream with an OpenAI-style error event.

With an `observer` (`still serve --shadow`: `still.shadow.Shadow`), each answered request is
offered to it with its tags (the body's `metadata` and an `X-Still-Tags: key=value, ...`
header) once its answer has gone out; the observer only queues it, so it never delays a client.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, unquote

# Imported at module level: FastAPI resolves the handlers' annotations from these globals.
from fastapi import FastAPI, HTTPException
from fastapi import Request as HTTPRequest
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool

from still.errors import StillError
from still.models import Provider
from still.store import MAX_KEY_CHARS, MAX_VALUE_CHARS
from still.types import Completion, Message, Request, SamplingParams, Usage

log = logging.getLogger("still.serve")

BATCH_WINDOW_S = 0.01
"""How long the batcher waits for more requests before a forward pass."""
TAGS_HEADER = "x-still-tags"
"""The header that carries a request's tags beside the body's `metadata` (still proxy, serve)."""


class AnswerObserver(Protocol):
    """Sees every answered request (`still.shadow.Shadow` is one). `offer` runs on the event
    loop after the answer went out, so it must return at once (queue, never wait)."""

    def offer(self, completion: Completion, tags: Mapping[str, str]) -> None:
        """Take one answered request: its (first) completion, failed or not, and its tags."""

    def stats(self) -> Mapping[str, Any]:
        """Counts to show at `GET /still/shadow`."""

    def close(self) -> None:
        """Finish what is queued and stop (called when the server stops)."""


def parse_tags(header: str | None) -> dict[str, str]:
    """Tags from `X-Still-Tags: key=value, key=value` (percent-encoding allowed, for a
    comma or `=` inside a value). A part that is not `key=value`, or breaks the stored
    completions' limits (a key of 1-64 characters, a value of at most 512), is left out
    and logged: a tag never fails a request.

    >>> parse_tags("app=triage, env=prod, note=a%2Cb")
    {'app': 'triage', 'env': 'prod', 'note': 'a,b'}
    """
    tags: dict[str, str] = {}
    for part in (header or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key, value = unquote(key.strip()), unquote(value.strip())
        if not sep or not 0 < len(key) <= MAX_KEY_CHARS or len(value) > MAX_VALUE_CHARS:
            log.warning("X-Still-Tags: %r is not key=value within the limits; left out", part)
            continue
        tags[key] = value
    return tags


def format_tags(tags: Mapping[str, str]) -> str:
    """Tags as an `X-Still-Tags` header value (what `parse_tags` reads back).

    >>> parse_tags(format_tags({"app": "triage", "note": "a,b=c"}))
    {'app': 'triage', 'note': 'a,b=c'}
    """
    return ", ".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in tags.items())


def request_tags(body: Mapping[str, Any], header: str | None) -> dict[str, str]:
    """A request's tags: the body's `metadata` with the header's (which win on a key).

    >>> request_tags({"metadata": {"app": "a", "env": "dev"}}, "env=prod")
    {'app': 'a', 'env': 'prod'}
    """
    own = body.get("metadata")
    given = {str(k): str(v) for k, v in own.items()} if isinstance(own, dict) else {}
    return {**given, **parse_tags(header)}


def enum_schema(response_format: dict[str, Any] | None) -> tuple[str, list[str]] | None:
    """(property, labels) when a json_schema response format asks for one string enum.

    >>> enum_schema({"type": "json_schema", "json_schema": {"name": "a", "schema": {
    ...     "type": "object", "properties": {"label": {"type": "string", "enum": ["x", "y"]}},
    ...     "required": ["label"]}}})
    ('label', ['x', 'y'])
    """
    if not response_format or response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    props = schema.get("properties") or {}
    if schema.get("type") != "object" or len(props) != 1:
        return None
    ((name, prop),) = props.items()
    enum = prop.get("enum")
    if not isinstance(enum, list) or not enum or not all(isinstance(x, str) for x in enum):
        return None
    return name, enum


def output_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema a response format asks for (json_object: any object), for
    constrained decoding; None for text. A malformed response format is a RequestError.

    >>> output_schema({"type": "json_object"})
    {'type': 'object'}
    >>> output_schema(None) is None
    True
    """
    if not response_format:
        return None
    if not isinstance(response_format, dict):
        raise RequestError("response_format must be an object")
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise RequestError("response_format.json_schema.schema must be a JSON schema object")
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise RequestError(f"invalid JSON schema: {exc.message}") from None
        return schema
    raise RequestError(f"response_format type {kind!r}: use text, json_object or json_schema")


class RequestError(StillError, ValueError):
    """A chat completion body this server cannot answer (HTTP 400)."""


def to_requests(body: dict[str, Any], model: str) -> tuple[list[Request], str | None]:
    """Turn an OpenAI chat completion body into still Requests (n of them) and, for an
    enum schema, the JSON property the answer goes in."""
    try:
        messages = tuple(
            Message(role=m["role"], content=_text(m.get("content"))) for m in body["messages"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RequestError(f"invalid messages: {exc}") from exc
    if not messages:
        raise RequestError("messages must not be empty")
    stop = body.get("stop") or ()
    try:
        # OpenAI's defaults apply to absent (or null) fields only: 0 is a value, not a default
        params = SamplingParams(
            temperature=float(_given(body, "temperature", default=1.0)),
            top_p=float(_given(body, "top_p", default=1.0)),
            max_tokens=int(_given(body, "max_completion_tokens", "max_tokens", default=256)),
            seed=body.get("seed"),
            stop=(stop,) if isinstance(stop, str) else tuple(stop),
        )
        if not 0 <= params.top_p <= 1:
            raise ValueError("top_p must be between 0 and 1")
        if params.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        n = int(_given(body, "n", default=1))
        top_k = int(body.get("top_logprobs") or 0)
        if not 0 <= top_k <= 20:
            raise ValueError("top_logprobs must be between 0 and 20")
        if top_k and not body.get("logprobs"):
            raise ValueError("top_logprobs needs logprobs=true")
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise RequestError(f"invalid sampling parameters: {exc}") from exc
    enum = enum_schema(body.get("response_format"))
    labels = tuple(enum[1]) if enum else None
    schema = None if enum else output_schema(body.get("response_format"))
    if not 1 <= n <= 16:
        raise RequestError("n must be between 1 and 16")
    if body.get("stream") and n != 1:
        raise RequestError("stream=true supports n=1 only")
    reqs = []
    for i in range(n):
        # n > 1 samples differ only by seed; greedy and scored answers are identical anyway
        p = (
            params
            if n == 1 or params.seed is None
            else params.model_copy(update={"seed": params.seed + i})
        )
        reqs.append(
            Request(
                model=model,
                messages=messages,
                params=p,
                labels=labels,
                logprobs=bool(body.get("logprobs")),
                top_logprobs=top_k,
                json_schema=schema,
            )
        )
    return reqs, enum[0] if enum else None


def _given(body: dict[str, Any], *names: str, default: Any) -> Any:
    """The first of `names` the body sets to a non-null value, else `default`.

    >>> _given({"top_p": 0}, "top_p", default=1.0), _given({"n": None}, "n", default=1)
    (0, 1)
    """
    return next((body[k] for k in names if body.get(k) is not None), default)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    raise ValueError("message content must be a string or a list of text parts")


def to_response(completions: Sequence[Completion], model: str, prop: str | None) -> dict[str, Any]:
    """An OpenAI chat.completion object for one request's n completions."""
    choices = []
    prompt_tokens = completions[0].usage.prompt_tokens
    out_tokens = 0
    for i, c in enumerate(completions):
        text = json.dumps({prop: c.text}) if prop else c.text
        choice: dict[str, Any] = {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "finish_reason": c.finish_reason or "stop",
            "logprobs": None,
        }
        if c.token_logprobs is not None:
            toks = c.tokens or ("",) * len(c.token_logprobs)
            tops = c.top_logprobs or ({},) * len(c.token_logprobs)
            choice["logprobs"] = {
                "content": [
                    {
                        "token": tok,
                        "logprob": lp,
                        "bytes": list(tok.encode()),
                        "top_logprobs": [
                            {"token": t, "logprob": v, "bytes": list(t.encode())}
                            for t, v in top.items()
                        ],
                    }
                    for tok, lp, top in zip(toks, c.token_logprobs, tops, strict=False)
                ]
            }
        elif c.label_logprobs is not None and c.request.logprobs:
            choice["logprobs"] = {
                "content": [
                    {
                        "token": c.text,
                        "logprob": c.label_logprobs[c.text],
                        "bytes": None,
                        "top_logprobs": [
                            {"token": k, "logprob": v, "bytes": None}
                            for k, v in sorted(c.label_logprobs.items(), key=lambda kv: -kv[1])
                        ],
                    }
                ]
            }
        choices.append(choice)
        out_tokens += c.usage.completion_tokens
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": _usage(Usage(prompt_tokens=prompt_tokens, completion_tokens=out_tokens)),
    }


@dataclass
class Batcher:
    """Gathers concurrent requests and answers them in one provider call."""

    provider: Provider
    window_s: float = BATCH_WINDOW_S
    max_batch: int = 16
    _queue: asyncio.Queue[tuple[Request, asyncio.Future[Completion]]] | None = None
    _task: asyncio.Task[None] | None = None
    batches: list[int] = field(default_factory=list)  # sizes, for tests and stats

    async def submit(self, req: Request) -> Completion:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._loop())
        fut: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        await self._queue.put((req, fut))
        return await fut

    async def _loop(self) -> None:
        assert self._queue is not None
        while True:
            items = [await self._queue.get()]
            deadline = time.monotonic() + self.window_s
            while len(items) < self.max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            self.batches.append(len(items))
            reqs = [r for r, _ in items]
            try:
                # the model runs in a worker thread: the event loop keeps accepting requests
                outs = await asyncio.to_thread(self.provider.complete, reqs)
            except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), out in zip(items, outs, strict=True):
                # a waiter whose client went away was cancelled: nobody wants its answer
                if not fut.done():
                    fut.set_result(out)


def create_app(
    provider: Provider,
    model_name: str,
    api_key: str | None = None,
    observer: AnswerObserver | None = None,
) -> Any:
    """The FastAPI application serving `provider` as `model_name`.

    Args:
        provider: the model that answers.
        model_name: the model id clients use.
        api_key: the key clients must send (`Authorization: Bearer <key>`); None: any.
        observer: offered each answered request after its answer went out (`--shadow`);
            closed when the server stops. Its counts are at `GET /still/shadow`.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if observer is not None:
                await asyncio.to_thread(observer.close)

    app = FastAPI(title="still serve", version="1", lifespan=lifespan)

    @app.exception_handler(HTTPException)
    async def openai_error(_: HTTPRequest, exc: HTTPException) -> JSONResponse:
        """Errors in OpenAI's shape, `{"error": {"message", "type"}}`, so SDKs show the
        reason (FastAPI's own `{"detail": ...}` reads as a bare "Error code: 400")."""
        detail = exc.detail if isinstance(exc.detail, dict) else {"message": str(exc.detail)}
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

    batcher = Batcher(provider)
    app.state.batcher = batcher

    def check_key(request: HTTPRequest) -> None:
        if api_key is None:
            return
        got = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(got.encode(), api_key.encode()):
            raise HTTPException(
                status_code=401,
                detail={"message": "invalid or missing API key", "type": "invalid_request_error"},
            )

    @app.get("/v1/models")
    async def models(request: HTTPRequest) -> dict[str, Any]:
        check_key(request)
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "still"}],
        }

    @app.get("/still/shadow")
    async def shadow_stats(request: HTTPRequest) -> Mapping[str, Any]:
        check_key(request)
        return observer.stats() if observer is not None else {}

    @app.post("/v1/chat/completions")
    async def chat(request: HTTPRequest) -> Any:
        check_key(request)
        try:
            body = json.loads(await request.body())
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise HTTPException(
                status_code=400,
                detail={
                    "message": f"the request body is not valid JSON: {exc}",
                    "type": "invalid_request_error",
                },
            ) from exc
        if not isinstance(body, dict):
            raise HTTPException(
                status_code=400,
                detail={
                    "message": "the request body must be a JSON object",
                    "type": "invalid_request_error",
                },
            )
        if body.get("model") not in (model_name, None):
            raise HTTPException(
                status_code=404,
                detail={
                    "message": f"model {body.get('model')!r} is not served here "
                    f"(this server has {model_name!r})",
                    "type": "invalid_request_error",
                },
            )
        try:
            reqs, prop = to_requests(body, provider.name)
        except RequestError as exc:
            raise HTTPException(
                status_code=400, detail={"message": str(exc), "type": "invalid_request_error"}
            ) from exc
        offer = None if observer is None else _offer_to(observer, body, request)
        if body.get("stream"):
            return StreamingResponse(
                _sse(
                    provider,
                    batcher,
                    reqs[0],
                    model_name,
                    prop,
                    include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
                    answered=offer,
                ),
                media_type="text/event-stream",
            )
        try:
            outs = await asyncio.gather(*(batcher.submit(r) for r in reqs))
        except Exception as exc:  # noqa: BLE001 - the provider itself failed: say why
            outs = [Completion(request=reqs[0], error=f"{type(exc).__name__}: {exc}")]
        failed = next((c for c in outs if c.error), None)
        if failed is not None:
            if offer is not None:  # a failed answer is evidence too; offer only queues it
                offer(failed)
            raise HTTPException(
                status_code=500, detail={"message": failed.error, "type": "server_error"}
            )
        content = to_response(outs, model_name, prop)
        if offer is None:
            return content

        async def offered() -> None:  # async: run on the loop, not in a worker thread
            offer(outs[0])

        # a background task runs once the response has been sent
        return JSONResponse(content, background=BackgroundTask(offered))

    return app


def _offer_to(
    observer: AnswerObserver, body: dict[str, Any], request: HTTPRequest
) -> Callable[[Completion], None]:
    """What offers a request's completion to `observer`, with the request's tags."""
    tags = request_tags(body, request.headers.get(TAGS_HEADER))
    return lambda completion: observer.offer(completion, tags)


async def _sse(
    provider: Provider,
    batcher: Batcher,
    req: Request,
    model: str,
    prop: str | None,
    include_usage: bool = False,
    answered: Callable[[Completion], None] | None = None,
) -> AsyncIterator[str]:
    """Server-sent events in the chat.completion.chunk format, ending with [DONE].

    Free text from a provider that can stream is sent token by token; a scored (enum)
    answer, or a provider that cannot stream, is sent as one chunk once it is known. The
    last choice chunk's finish_reason is "length" when max_tokens cut the answer. With
    `stream_options.include_usage`, a last chunk with no choices carries the token counts,
    as OpenAI sends it. A failure ends the stream with one OpenAI-style error event
    (`data: {"error": {...}}`) and no [DONE], which the openai SDK raises as an APIError.
    `answered` gets the whole completion once its last event has been sent.
    """
    cid = "chatcmpl-" + uuid.uuid4().hex[:24]
    t0 = time.perf_counter()

    def chunk(
        delta: dict[str, Any] | None, finish: str | None = None, usage: Usage | None = None
    ) -> str:
        body: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None if usage is None else _usage(usage)
        return f"data: {json.dumps(body)}\n\n"

    def error(message: str) -> str:
        return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    stream = getattr(provider, "stream", None)  # OpenAIProvider.stream is a flag, not this
    usage: list[Usage] = []
    finish: list[str] = []
    pieces: list[str] = []
    c: Completion | None = None
    try:
        if callable(stream) and req.labels is None:
            async for piece in iterate_in_threadpool(stream(req, usage, finish)):
                pieces.append(piece)
                yield chunk({"content": piece})
            yield chunk({}, finish[0] if finish else "stop")
        else:
            c = await batcher.submit(req)
            if c.error:
                yield error(c.error)
                if answered is not None:
                    answered(c)
                return
            usage.append(c.usage)
            yield chunk({"content": json.dumps({prop: c.text}) if prop else c.text})
            yield chunk({}, c.finish_reason or "stop")
    except Exception as exc:  # noqa: BLE001 - the client gets the reason, the server goes on
        yield error(f"{type(exc).__name__}: {exc}")
        if answered is not None:
            answered(Completion(request=req, error=f"{type(exc).__name__}: {exc}"))
        return
    if include_usage and usage:
        yield chunk(None, usage=usage[0])
    yield "data: [DONE]\n\n"
    if answered is not None:  # the generator resumes here once [DONE] has been sent
        if c is None:
            c = Completion(
                request=req,
                text="".join(pieces),
                finish_reason=finish[0] if finish else "stop",
                usage=usage[0] if usage else Usage(),
                latency_s=time.perf_counter() - t0,
            )
        answered(c)


def _usage(u: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    name: str | None = None,
    observer: AnswerObserver | None = None,
) -> None:
    """Load `model` and serve it until interrupted.

    Args:
        observer: offered every answered request (`still.shadow.Shadow` for `--shadow`).
    """
    import uvicorn

    from still.models import get_model

    provider = get_model(model)
    app = create_app(provider, name or model, api_key, observer=observer)
    uvicorn.run(app, host=host, port=port, log_level="info")
