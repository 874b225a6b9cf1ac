"""A loopback OpenAI-compatible server with simulated latency and injected faults.

Shipped with still (not only its tests) so users can check their own capture settings
offline, and so benchmarks and tests share one server. It answers `echo: <prompt>`.
With `faults=True`, the first attempt of each distinct prompt fails in one of four ways
chosen by the prompt (or succeeds, one prompt in five): 429 with Retry-After, 500, a
response slower than the client's timeout, or a connection dropped in the middle of the
response. Every later attempt answers. The server counts the
requests it saw per prompt, so tests can check that each prompt was answered exactly once.
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

    def __init__(self, slow_s: float = 2.0, latency_s: float = 0.0, faults: bool = True) -> None:
        self.slow_s = slow_s
        self.latency_s = latency_s
        self.faults = faults
        self.seen: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []  # every request body received, in order
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
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "429":
            await _json(send, 429, {"error": {"message": "slow down"}}, [(b"retry-after", b"0.05")])
        elif fault == "500":
            await _json(send, 500, {"error": {"message": "boom"}})
        elif fault == "slow":
            await asyncio.sleep(self.slow_s)
            await _json(send, 200, _answer(req, prompt))
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
            await _json(send, 200, _answer(req, prompt))

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


def _answer(req: dict[str, Any], prompt: str) -> dict[str, Any]:
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
