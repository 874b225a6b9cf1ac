"""`still proxy`: record production traffic on its way to the model that answers it."""

from __future__ import annotations

import click


@click.command("proxy")
@click.argument("upstream")
@click.option(
    "--db",
    envvar="STILL_DB",
    default="still.db",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Store to record in (or set STILL_DB); a task reads it as data.source: store:<db>.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; another than this machine needs --api-key.",
)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--api-key",
    envvar="STILL_PROXY_API_KEY",
    default=None,
    help="The key clients send as `Authorization: Bearer KEY` (or set STILL_PROXY_API_KEY); "
    "the proxy's own, never the upstream's.",
)
@click.option(
    "--upstream-key-env",
    default=None,
    metavar="VAR",
    help="For a URL upstream: the environment variable holding its key (default: "
    "STILL_API_KEY for a loopback URL, else none). openai: uses OPENAI_API_KEY, azure: "
    "AZURE_OPENAI_API_KEY.",
)
@click.option(
    "--timeout",
    default=600.0,
    show_default=True,
    type=float,
    help="Seconds to wait for the upstream's next bytes before answering 504.",
)
def proxy_cmd(
    upstream: str,
    db: str,
    host: str,
    port: int,
    api_key: str | None,
    upstream_key_env: str | None,
    timeout: float,
) -> None:
    """Forward chat completions to UPSTREAM and record each exchange in the store.

    \b
    UPSTREAM: openai: (the client's model), openai:<model>, azure:<deployment>,
    http(s)://host/v1 (or .../v1#<model>), or a local model (local:..., scripted:...).

    The application changes only its base URL (http://HOST:PORT/v1) and its key (the
    proxy's). Answers and errors come back unchanged, streams chunk by chunk; each
    exchange is stored (source=proxy) with its request, answer, usage, latency and tags:
    the body's `metadata` and an `X-Still-Tags: key=value, ...` header. Recording never
    holds a request up: exchanges go through a journal (<db>.pending/) to the store.
    Then distil from them with a task whose data.source is store:<db>.
    """
    from still.proxy import proxy

    proxy(
        upstream,
        db=db,
        host=host,
        port=port,
        api_key=api_key,
        upstream_key_env=upstream_key_env,
        timeout_s=timeout,
    )
