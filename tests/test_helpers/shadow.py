"""`still serve --shadow` for tests: the real command in a subprocess, a teacher whose call
the test holds open, and a body asking for a label (an app on a uvicorn thread:
`test_helpers.serve.AppServer`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2

from still.types import Completion, Request, Usage
from test_helpers.serve import free_port


class HeldTeacher:
    """A teacher that takes `hold_s` seconds to answer `answer`, unless `release` is set
    first: then it answers at once. Each call notes whether `release` came while it was
    still answering (`released_early`), which is how a test shows that the client had its
    answer before the teacher had one."""

    name = "held-teacher"

    def __init__(self, answer: str = "yes", hold_s: float = 2.0) -> None:
        self.answer = answer
        self.hold_s = hold_s
        self.started = threading.Event()
        self.release = threading.Event()
        self.released_early: list[bool] = []

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        self.started.set()
        self.released_early.append(self.release.wait(self.hold_s))
        return [
            Completion(request=r, text=self.answer, finish_reason="stop", usage=Usage())
            for r in requests
        ]


def label_body(question: str, labels: Sequence[str], **extra: Any) -> dict[str, Any]:
    """A chat completion body asking for one of `labels` (a one-enum json_schema)."""
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
    }
    return {
        "model": "student",
        "messages": [{"role": "user", "content": question}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "l", "schema": schema}},
        **extra,
    }


class ServeProcess:
    """`still serve ARGS...` as a subprocess on a free port (its output in `log`)."""

    def __init__(self, args: Sequence[str], log: Path) -> None:
        self.port = free_port()
        self.cmd = [sys.executable, "-m", "still", "serve", *args, "--port", str(self.port)]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServeProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx2.get(f"{self.base_url}/models", timeout=1).status_code == 200:
                    return self
            except httpx2.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"still serve did not start:\n{self.log.read_text()}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout_s: float = 30) -> int:
        """Interrupt it as Ctrl-C would (the shadow stores what it holds); its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout_s)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"
