"""Reading a streamed chat completion as it passes through, to store it whole.

The proxy relays a stream's bytes as they arrive and feeds the same bytes to a
`StreamAssembler`, which splits them into server-sent events, reads each
`chat.completion.chunk` and rebuilds the `chat.completion` a non-streamed call would have
returned: content per choice, finish reasons, and the usage when the client asked for it
(`stream_options.include_usage`; the proxy never adds it, which would change the stream).
It says when the stream is over (`data: [DONE]`, or an error event) so the exchange is
recorded before its last bytes reach the client.
"""

from __future__ import annotations

import json
from typing import Any


class StreamAssembler:
    """Rebuilds a chat.completion from the bytes of its event stream, fed in any pieces."""

    def __init__(self) -> None:
        self._buffer = b""
        self._text: dict[int, list[str]] = {}
        self._finish: dict[int, str | None] = {}
        self._role: dict[int, str] = {}
        self._head: dict[str, Any] = {}
        self.usage: dict[str, Any] | None = None
        self.done = False
        """A `data: [DONE]` event arrived."""
        self.error: str | None = None
        """The message of an error event (`data: {"error": ...}`), which ends the stream."""
        self.content_seen = False
        """Some choice has had content (for the time to first token)."""

    @property
    def over(self) -> bool:
        """The stream said it is over: [DONE] or an error event."""
        return self.done or self.error is not None

    def feed(self, data: bytes) -> None:
        """Read the complete events in `data` (with what earlier pieces left unfinished)."""
        self._buffer += data.replace(b"\r\n", b"\n")
        *events, self._buffer = self._buffer.split(b"\n\n")
        for event in events:
            payload = b"\n".join(
                line[5:].removeprefix(b" ")
                for line in event.split(b"\n")
                if line.startswith(b"data:")
            )
            if payload:
                self._event(payload)

    def _event(self, payload: bytes) -> None:
        if payload.strip() == b"[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(payload)
        except ValueError:
            return  # not JSON: relayed as it is, nothing to assemble
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            err = chunk["error"]
            self.error = str(err.get("message") if isinstance(err, dict) else err)
            return
        for key in ("id", "created", "model", "system_fingerprint"):
            if chunk.get(key) is not None:
                self._head[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            i = int(choice.get("index") or 0)
            delta = choice.get("delta") or {}
            if isinstance(delta.get("role"), str):
                self._role[i] = delta["role"]
            if isinstance(delta.get("content"), str):
                self._text.setdefault(i, []).append(delta["content"])
                self.content_seen = self.content_seen or bool(delta["content"])
            if choice.get("finish_reason") is not None:
                self._finish[i] = choice["finish_reason"]

    def finished(self) -> bool:
        """Every choice seen has a finish reason (a stream may end without [DONE])."""
        return bool(self._finish) and set(self._text) <= set(self._finish)

    def completion(self) -> dict[str, Any]:
        """The chat.completion the stream amounts to."""
        indices = sorted(set(self._text) | set(self._finish) | set(self._role)) or [0]
        return {
            "id": self._head.get("id", ""),
            "object": "chat.completion",
            "created": self._head.get("created", 0),
            "model": self._head.get("model", ""),
            "choices": [
                {
                    "index": i,
                    "message": {
                        "role": self._role.get(i, "assistant"),
                        "content": "".join(self._text.get(i, [])),
                    },
                    "finish_reason": self._finish.get(i),
                }
                for i in indices
            ],
            "usage": self.usage,
        }
