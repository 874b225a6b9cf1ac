"""`still serve`: put a model behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import click


@click.command("serve")
@click.argument("model")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; the default serves this machine only.",
)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--name", default=None, help="Model id clients use (default: MODEL as given).")
@click.option(
    "--api-key",
    envvar="STILL_SERVE_API_KEY",
    default=None,
    help="Require `Authorization: Bearer KEY` (or set STILL_SERVE_API_KEY).",
)
def serve_cmd(model: str, host: str, port: int, name: str | None, api_key: str | None) -> None:
    """Serve MODEL (e.g. a distilled student: local:runs/trec/distilled-...) with
    /v1/models and /v1/chat/completions.

    A json_schema response format with one string-enum property is answered by label
    scoring, so the answer is always one of the labels. Concurrent requests share batches;
    stream=true streams server-sent events.
    Clients: `http://HOST:PORT/v1#NAME` as a still model, or the openai SDK with
    base_url=http://HOST:PORT/v1.
    """
    from still.serve import serve

    serve(model, host=host, port=port, api_key=api_key, name=name)
