"""A loopback OpenAI-compatible server with simulated latency and injected faults.

Shipped with still (not only its tests) so users can check their own capture settings
offline, and so benchmarks and tests share one server. It answers `echo: <prompt>`,
streamed as server-sent events when the request asks (`stream=true`: one chunk per word,
`chunk_delay_s` apart, usage last when `stream_options.include_usage`), and lists its one
model at `GET /v1/models`. With `faults=True`, the first attempt of each distinct prompt
fails in one of four ways chosen by the prompt (or succeeds, one prompt in five): 429 with
Retry-After, 500, a response slower than the client's timeout, or a connection dropped in
the middle of the response (of a stream, after its first chunk). Every later attempt
answers. The server counts the requests it saw per prompt, so tests can check that each
prompt was answered exactly once, and keeps each request's `Authorization` header
(`auth`); `echo_auth=True` quotes that header in every answer and error message, as a
misconfigured upstream might, for key-leak tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from collections import Counter
from typing import Any

FAULTS = ("429", "500", "slow", "drop", "ok")


class FaultyServer:
    """ASGI app + uvicorn thread. `seen[prompt]` counts requests per prompt."""

    def __init__(
        self,
        slow_s: float = 2.0,
        latency_s: float = 0.0,
        faults: bool = True,
        chunk_delay_s: float = 0.0,
        echo_auth: bool = False,
    ) -> None:
        self.slow_s = slow_s
        self.latency_s = latency_s
        self.faults = faults
        self.chunk_delay_s = chunk_delay_s
        self.echo_auth = echo_auth
        self.seen: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []  # every request body received, in order
        self.auth: list[str | None] = []  # every request's Authorization header, in order
        self.injected: Counter[str] = Counter()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])

    def fault_for(self, prompt: str) -> str:
        return FAULTS[int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % len(FAULTS)]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        auth = headers.get("authorization")
        self.auth.append(auth)
        if scope.get("method") == "GET":
            model = {"id": "m", "object": "model", "created": 0, "owned_by": "still-testing"}
            await _json(send, 200, {"object": "list", "data": [model]})
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        req = json.loads(body)
        self.bodies.append(req)
        prompt = req["messages"][-1]["content"]
        self.seen[prompt] += 1
        fault = self.fault_for(prompt) if self.faults and self.seen[prompt] == 1 else "ok"
        if fault != "ok":
            self.injected[fault] += 1
        said = f" (auth: {auth})" if self.echo_auth else ""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "429":
            await _json(
                send, 429, {"error": {"message": "slow down" + said}}, [(b"retry-after", b"0.05")]
            )
        elif fault == "500":
            await _json(send, 500, {"error": {"message": "boom" + said}})
        elif fault == "drop" and req.get("stream"):
            await _sse_start(send)
            first = stream_events(req, prompt + said)[0]
            await send({"type": "http.response.body", "body": _event(first), "more_body": True})
            raise ConnectionResetError("dropped on purpose")
        elif fault == "drop":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"1000"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b'{"id": "x", ', "more_body": True})
            raise ConnectionResetError("dropped on purpose")
        else:
            if fault == "slow":
                await asyncio.sleep(self.slow_s)
            if req.get("stream"):
                await self._stream(send, req, prompt + said)
            else:
                await _json(send, 200, answer_body(req, prompt + said))

    async def _stream(self, send: Any, req: dict[str, Any], prompt: str) -> None:
        await _sse_start(send)
        for i, event in enumerate(stream_events(req, prompt)):
            if i and self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            await send({"type": "http.response.body", "body": _event(event), "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    def __enter__(self) -> FaultyServer:
        import uvicorn

        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="critical", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def ref(self, model: str = "m") -> str:
        return f"http://127.0.0.1:{self.port}/v1#{model}"

    @property
    def url(self) -> str:
        """The API root, `http://127.0.0.1:<port>/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"


def stream_events(req: dict[str, Any], prompt: str) -> list[dict[str, Any]]:
    """The chat.completion.chunk objects a streamed answer to `prompt` is sent as, in order
    (before `data: [DONE]`): the role, one chunk per word of `echo: <prompt>`, the finish
    reason, then the usage when the request asks for it (`stream_options.include_usage`)."""
    words = f"echo: {prompt}".split(" ")
    usage = answer_body(req, prompt)["usage"]
    with_usage = bool((req.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": req["model"],
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if with_usage:
            out["usage"] = usage if delta is None else None
        return out

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
    events.append(chunk({}, "stop"))
    if with_usage:
        events.append(chunk(None))
    return events


def _event(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


async def _sse_start(send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )


def answer_body(req: dict[str, Any], prompt: str) -> dict[str, Any]:
    """The chat.completion the server answers `prompt` with (when it does not fail)."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": req["model"],
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": f"echo: {prompt}"},
            }
        ],
        "usage": {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": 2,
            "total_tokens": len(prompt.split()) + 2,
        },
    }


async def _json(
    send: Any, status: int, obj: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(obj).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
