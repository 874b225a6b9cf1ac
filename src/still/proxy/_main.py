"""`still proxy`: set up the upstream (or the routes), the recorder and the server, and serve
until stopped."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from still.errors import StillError
from still.proxy._app import create_app
from still.proxy._recorder import Recorder
from still.proxy._route import RouteTable
from still.proxy._upstream import open_upstream
from still.route import load_routes


class ProxyError(StillError):
    """A proxy that must not start as asked (open to the network with no key of its own)."""


def proxy(
    upstream: str | None,
    db: str | Path = "still.db",
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    upstream_key_env: str | None = None,
    timeout_s: float = 600.0,
    route: str | Path | None = None,
) -> None:
    """Forward OpenAI-compatible requests to `upstream`, recording each exchange in `db`,
    until interrupted (what is journaled is stored before it exits).

    Args:
        upstream: `openai:[model]`, `azure:<deployment>`, `http(s)://host/v1[#model]`, or
            a local model reference; None with `route`.
        db: the store file the exchanges are recorded in.
        host, port: where to listen; a host other than this machine needs `api_key`.
        api_key: the key the proxy's clients send (not the upstream's).
        upstream_key_env: for a URL upstream, the variable holding its key.
        timeout_s: the longest wait for the upstream's next bytes.
        route: a route file (`still.route`): each call goes to its route's student or
            teacher, as the shadow records in the store say (instead of `upstream`).

    Raises:
        ProxyError: a non-loopback `host` without `api_key`; both or neither of
            `upstream` and `route`.
        RouteError: the route file is invalid.
        ModelError: the upstream's key is missing or would be misdirected.
    """
    import uvicorn

    if api_key is None and not _loopback(host):
        raise ProxyError(
            f"--host {host} opens the proxy (and the upstream's key) to the network: set "
            "--api-key (or STILL_PROXY_API_KEY), or bind 127.0.0.1"
        )
    if (upstream is None) == (route is None):
        raise ProxyError("give the proxy an UPSTREAM or a --route file (which names its own)")
    if route is not None:
        table = RouteTable(load_routes(route), db, upstream_key_env, timeout_s)
        app = create_app(list(table.upstreams.values()), Recorder(db), api_key, router=table)
        table.start()
        try:
            uvicorn.run(app, host=host, port=port, log_level="info")
        finally:
            table.close()
        return
    assert upstream is not None
    app = create_app(open_upstream(upstream, upstream_key_env, timeout_s), Recorder(db),
                     api_key=api_key)  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="info")


def _loopback(host: str) -> bool:
    """Whether `host` is this machine only.

    >>> _loopback("127.0.0.1"), _loopback("localhost"), _loopback("::1"), _loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
