"""`still proxy`: record production traffic on its way to the model that answers it."""

from __future__ import annotations

from pathlib import Path

import click

from still.cli._options import store_file


@click.command("proxy")
@click.argument("upstream", required=False)
@store_file("Store to record in; a task reads it as data.source: store:<db>.")
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
    "--route",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="Route by a route file instead of UPSTREAM: per tag, a student and a teacher, and "
    "the agreement (shadowed by `still serve --shadow` into --db) that moves the tag's "
    "calls to the student and back.",
)
@click.option(
    "--timeout",
    default=600.0,
    show_default=True,
    type=float,
    help="Seconds to wait for the upstream's next bytes before answering 504.",
)
def proxy_cmd(
    upstream: str | None,
    db: Path,
    host: str,
    port: int,
    api_key: str | None,
    upstream_key_env: str | None,
    timeout: float,
    route: str | None,
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

    With --route FILE (and no UPSTREAM), each call goes to the student or the teacher of
    the first route its tags match: a route moves to its student once the last `window`
    shadowed requests of its tags agree at `min_agreement` or more, the lower end of the
    95% interval included, and back as soon as the rate falls below it; until then a
    `canary` fraction goes to the student. Each switch is logged with its evidence and
    appended to <db>.switches.jsonl.
    """
    try:
        from still.proxy import proxy
    except ImportError as exc:  # fastapi, uvicorn (serve extra) or httpx2 (openai extra)
        raise click.ClickException(
            f"still proxy needs {exc.name or 'its server'}: pip install 'still[serve,openai]'"
        ) from exc

    proxy(
        upstream,
        route=route,
        db=db,
        host=host,
        port=port,
        api_key=api_key,
        upstream_key_env=upstream_key_env,
        timeout_s=timeout,
    )
