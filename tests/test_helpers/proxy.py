"""`still proxy` for tests: in this process on a uvicorn thread, or as the real command in
a subprocess (for kill and restart), in front of a loopback upstream."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2

from still.proxy import Recorder, Upstream, create_app, open_upstream
from test_helpers.serve import AppServer, free_port

KEY = "sk-proxy-client-0123456789"
"""The proxy's own key, which its clients send."""


class ProxyServer(AppServer):
    """`create_app` on a real uvicorn server in a thread, recording into `db`."""

    def __init__(
        self, upstream: str | Upstream, db: Path, api_key: str | None = KEY, **kw: float
    ) -> None:
        self.upstream = open_upstream(upstream) if isinstance(upstream, str) else upstream
        self.recorder = Recorder(db, **kw)
        super().__init__(create_app(self.upstream, self.recorder, api_key=api_key))


class ProxyProcess:
    """`still proxy UPSTREAM --db DB` as a subprocess (its log in `log`), for kill tests."""

    def __init__(
        self,
        upstream: str,
        db: Path,
        log: Path,
        env: dict[str, str] | None = None,
        extra: list[str] | None = None,
        verbose: bool = False,
    ) -> None:
        self.port = free_port()
        self.cmd = [
            sys.executable, "-m", "still", *(["-v"] if verbose else []), "proxy", upstream,
            "--db", str(db), "--port", str(self.port), "--api-key", KEY, *(extra or []),
        ]  # fmt: skip
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProxyProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                got = httpx2.get(
                    f"{self.base_url}/models",
                    headers={"Authorization": f"Bearer {KEY}"},
                    timeout=1,
                )
                if got.status_code == 200:
                    return self
            except httpx2.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"still proxy did not start:\n{self.log.read_text()}")

    def stop(self, timeout_s: float = 30) -> int:
        """Interrupt it as Ctrl-C would; its exit status."""
        assert self.proc is not None
        self.proc.send_signal(2)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: nothing is flushed, closed or said
        self.proc.wait()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"
