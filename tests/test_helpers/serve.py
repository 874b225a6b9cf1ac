"""`still serve` on a real uvicorn server in a thread, for tests that call it over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from still.models import get_model
from still.serve import create_app

KEY = "sk-still-test-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A real uvicorn server in a thread, serving the tiny model."""

    def __init__(self, model_dir: Path, api_key: str | None) -> None:
        import uvicorn

        self.local = get_model(f"local:{model_dir}")
        self.app = create_app(self.local, "tiny", api_key=api_key)
        self.port = free_port()
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
