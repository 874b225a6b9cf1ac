"""Where `still proxy` sends each request: an endpoint, called with the client's own body.

An `Upstream` is one destination: OpenAI (`openai:`, `openai:<model>`), Azure OpenAI
(`azure:<deployment>`), any OpenAI-compatible URL (`http(s)://host/v1`, `#<model>` to fix
the model), or a local model (`local:...`, `scripted:...`, any other model reference),
which is put behind `still serve` on a loopback port of its own so that every destination
is reached the same way. The request body is sent as the client wrote it: only its `model`
is replaced, when the reference names one (a local model always does).

Keys follow the provider rules of `still.models.endpoint_access` (OPENAI_API_KEY to
OpenAI only, a URL's key from the variable named for it, never over plain http to another
machine). The key lives in this object's headers and nowhere else: `scrub` takes it out of
whatever the upstream sends back before it reaches a client, the store or a log. A router
(issue 16's `--route`) holds several upstreams and picks one per request; each keeps its own
connection pools.
"""

from __future__ import annotations

import itertools
import json
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx2

from still.errors import StillError
from still.models import EndpointAccess, endpoint_access
from still.serve import TAGS_HEADER, format_tags

ENDPOINT_SCHEMES = ("openai", "azure", "http", "https")
"""References forwarded over the network as they are; any other is a local model."""


class UpstreamError(StillError):
    """An upstream that cannot be set up (a local model that does not start)."""


class Upstream:
    """One destination of forwarded requests, with its connection pool.

    Args:
        access: the URL, credentials and model of the endpoint (`endpoint_access`).
        timeout_s: the longest wait for the upstream to connect or to send the next bytes
            of its answer; a slower one is a 504 for the client.
    """

    POOLS = 16
    """Connection pools requests are spread over, in turn. One pool's every request scans
    all its connections (httpcore's pool is O(connections) per request, with a syscall per
    idle one): at 64 concurrent requests that scan cost more CPU than the rest of the
    forwarding (benchmarks/bench_proxy.py); 16 pools of a few connections each do not."""

    forward_tags = False
    """Whether a call's `X-Still-Tags` go along to this upstream: yes to a `still serve`
    (its shadow stores them with each pair), never to OpenAI or Azure by default (they
    are the application's, and the body's `metadata` goes as it is anyway)."""

    def __init__(self, access: EndpointAccess, timeout_s: float = 600.0) -> None:
        self.access = access
        self.name = access.name
        self.timeout_s = timeout_s
        self._clients: list[httpx2.AsyncClient] = []
        self._turn = itertools.count()
        self._secret = access.secret.encode() if access.secret else None

    def __repr__(self) -> str:
        return f"Upstream({self.name!r})"

    def model_ref(self, asked: str | None) -> str:
        """The still model reference an exchange asking for `asked` is stored under:
        `openai:<model>`, `azure:<deployment>`, `<base URL>#<model>`, or the local model's
        own reference. A `store:` task's `data.store.model` selects by it."""
        return self.access.model_ref(asked)

    @property
    def provider(self) -> str:
        """The scheme prices are looked up under (openai, azure; none for others)."""
        return self.access.provider

    def body_for(self, raw: bytes, body: dict[str, Any] | None) -> bytes:
        """The bytes to send: the client's body as it is, or with `model` replaced when
        the reference names one (Azure names its deployment in the URL instead)."""
        model = self.access.model
        if model is None or body is None or self.provider == "azure" or body.get("model") == model:
            return raw
        return json.dumps({**body, "model": model}).encode()

    def scrub(self, data: bytes) -> bytes:
        """`data` with this upstream's key replaced by `***`."""
        if self._secret is None or len(self._secret) < 4:
            return data
        return data.replace(self._secret, b"***")

    def scrub_text(self, text: str) -> str:
        """`text` with this upstream's key replaced by `***`."""
        return self.scrub(text.encode()).decode("utf-8", errors="replace")

    async def start(self) -> None:
        """Open the connection pools (in the serving event loop)."""
        if not self._clients:
            tls = httpx2.create_ssl_context()  # one for all pools: each loads the CA bundle
            self._clients = [
                httpx2.AsyncClient(
                    verify=tls,
                    timeout=httpx2.Timeout(self.timeout_s, connect=min(self.timeout_s, 30.0)),
                    limits=httpx2.Limits(max_connections=256, max_keepalive_connections=32),
                    trust_env=True,  # HTTPS_PROXY and friends, as the openai SDK honours them
                )
                for _ in range(self.POOLS)
            ]

    async def aclose(self) -> None:
        """Close the connection pools."""
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()

    async def _client(self) -> httpx2.AsyncClient:
        await self.start()
        return self._clients[next(self._turn) % len(self._clients)]

    async def send(
        self, body: bytes, stream: bool, tags: Mapping[str, str] | None = None
    ) -> httpx2.Response:
        """Post a chat completion body; the response is open for streaming (the caller
        reads and closes it).

        Args:
            body: the body to send.
            stream: whether the client asked for a stream.
            tags: the call's `X-Still-Tags`, sent along when `forward_tags` is set.

        Raises:
            httpx2.HTTPError: the upstream cannot be reached, or does not answer in time.
        """
        client = await self._client()
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            # unencoded bytes: each streamed chunk can go to the client as it arrives
            "Accept-Encoding": "identity",
            **self.access.headers,
        }
        if tags and self.forward_tags:
            headers[TAGS_HEADER] = format_tags(tags)
        request = client.build_request("POST", self.access.chat_url, content=body, headers=headers)
        return await client.send(request, stream=True)

    async def models(self) -> tuple[int, bytes, str]:
        """The upstream's `GET /models` (status, body, content type); the one model the
        reference names, when it names one.

        Raises:
            httpx2.HTTPError: the upstream cannot be reached.
        """
        if self.access.model is not None:
            listing = {
                "object": "list",
                "data": [{"id": self.access.model, "object": "model", "created": 0,
                          "owned_by": "still-proxy"}],
            }  # fmt: skip
            return 200, json.dumps(listing).encode(), "application/json"
        client = await self._client()
        resp = await client.get(self.access.base_url + "/models", headers=self.access.headers)
        kind = resp.headers.get("content-type", "application/json")
        return resp.status_code, self.scrub(resp.content), kind


class LocalUpstream(Upstream):
    """A local model (any reference `get_model` resolves that is not an endpoint), served
    by `still serve` on a loopback port of its own with a random key, in a thread."""

    forward_tags = True

    def __init__(self, ref: str, timeout_s: float = 600.0) -> None:
        import uvicorn

        from still.models import get_model
        from still.serve import create_app

        key = "sk-still-local-" + secrets.token_hex(16)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        app = create_app(get_model(ref), ref, api_key=key)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="still-local", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise UpstreamError(f"{ref}: the local model's server did not start")
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}/v1"
        access = EndpointAccess(
            ref, base, base + "/chat/completions", ref, "local",
            {"Authorization": f"Bearer {key}"}, key,
        )  # fmt: skip
        super().__init__(access, timeout_s)

    def model_ref(self, asked: str | None) -> str:
        return self.name

    async def aclose(self) -> None:
        await super().aclose()
        self._server.should_exit = True


def open_upstream(ref: str, key_variable: str | None = None, timeout_s: float = 600.0) -> Upstream:
    """The upstream a reference names: an endpoint (`openai:`, `azure:<deployment>`, a
    URL) or a local model.

    Args:
        ref: the reference.
        key_variable: for a URL, the environment variable holding its key.
        timeout_s: see `Upstream`.

    Raises:
        ModelError: a key missing or misdirected (see `endpoint_access`), or a model
            reference that names no model.
        UpstreamError: a local model whose server does not start.
    """
    if ref.partition(":")[0] in ENDPOINT_SCHEMES:
        return Upstream(endpoint_access(ref, key_variable), timeout_s)
    return LocalUpstream(ref, timeout_s)
