"""`still serve` on a real uvicorn server in a thread, for tests that call it over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any, Self

from still.models import get_model
from still.serve import create_app

KEY = "sk-still-test-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AppServer:
    """`app` (any ASGI app) on a real uvicorn server in a thread, on a free loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


class Server(AppServer):
    """`still serve` of the tiny model (named `tiny`) on a real uvicorn server in a thread."""

    def __init__(self, model_dir: Path, api_key: str | None) -> None:
        self.local = get_model(f"local:{model_dir}")
        super().__init__(create_app(self.local, "tiny", api_key=api_key))

    @property
    def ref(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1#tiny"
