"""A loopback chat-completions endpoint for provider and capture tests (stdlib only)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Endpoint:
    """A loopback chat-completions server (http.server in a thread) that answers
    `echo: <prompt>`, or the raw body `answers(prompt)` gives. It records each request's
    headers (`auth`: the Authorization one); with `serial_s` it answers one request at a
    time, each after that many seconds, so answers arrive one by one."""

    def __init__(
        self, answers: Callable[[str], bytes | None] | None = None, serial_s: float = 0.0
    ) -> None:
        self.answers = answers or (lambda prompt: None)
        self.serial_s = serial_s
        self.auth: list[str | None] = []
        self.headers: list[dict[str, str]] = []  # every request's headers
        self.answered = 0  # responses written
        self.lock = threading.Lock()
        self.closing = False

    def __enter__(self) -> Endpoint:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # http.server's name for the POST handler
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = req["messages"][-1]["content"]
                outer.auth.append(self.headers.get("Authorization"))
                outer.headers.append(dict(self.headers))
                body = outer.answers(prompt) or json.dumps(_echo(req["model"], prompt)).encode()
                with outer.lock:
                    if outer.closing:
                        return
                    time.sleep(outer.serial_s)
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    outer.answered += 1

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, *args: object) -> None:
                pass  # a client killed mid-request is what some tests do

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing = True
        self.server.shutdown()
        self.server.server_close()

    def ref(self, model: str = "m") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1#{model}"


def _echo(model: str, prompt: str) -> dict[str, object]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": f"echo: {prompt}"},
            }
        ],
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4},
    }


def requests_in(summary: str) -> int:
    """The request count a `still capture` summary line reports ("272 requests: ...")."""
    found = re.search(r"(\d+) requests: ", summary)
    assert found, summary
    return int(found.group(1))
