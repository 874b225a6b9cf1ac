"""`still serve`: put a model behind an OpenAI-compatible HTTP API (and shadow it), with
still's own server or vLLM's (`--engine vllm`)."""

from __future__ import annotations

from pathlib import Path

import click

from still.cli._options import store_file


@click.command("serve")
@click.argument("model")
@click.argument("vllm_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- VLLM_ARGS...]")
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
@click.option(
    "--shadow",
    "teacher",
    default=None,
    metavar="TEACHER",
    help="Also ask TEACHER (any model reference) about a sample of the requests, in the "
    "background, and store both answers and whether they agree.",
)
@click.option(
    "--sample",
    default=0.1,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="With --shadow: the fraction of requests the teacher is asked about.",
)
@click.option(
    "--task",
    "task_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --shadow: grade each pair with this task's graders and labels (the "
    "teacher's answer as the reference).",
)
@store_file("With --shadow: the store the pairs go to; still monitor reads it.")
@click.option("--seed", default=None, type=int, help="With --shadow: seed the sample's draws.")
@click.option(
    "--shadow-queue",
    default=256,
    show_default=True,
    type=click.IntRange(1),
    help="With --shadow: sampled requests that may wait for the teacher; more are dropped "
    "(and counted), never waited for.",
)
@click.option(
    "--shadow-workers",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="With --shadow: teacher calls at once.",
)
@click.option(
    "--engine",
    type=click.Choice(["still", "vllm"]),
    default="still",
    show_default=True,
    help="still: still's own server (transformers). vllm: vLLM's OpenAI-compatible server "
    "(`vllm serve`) on the model folder, a LoRA adapter folder on its base model.",
)
@click.option(
    "--vllm-bin",
    default=None,
    metavar="PATH",
    help="With --engine vllm: the `vllm` executable (default: the one on PATH; "
    "`make vllm` puts one in .venv-vllm/bin).",
)
def serve_cmd(
    model: str,
    vllm_args: tuple[str, ...],
    host: str,
    port: int,
    name: str | None,
    api_key: str | None,
    teacher: str | None,
    sample: float,
    task_file: Path | None,
    db: Path,
    seed: int | None,
    shadow_queue: int,
    shadow_workers: int,
    engine: str,
    vllm_bin: str | None,
) -> None:
    """Serve MODEL (e.g. a distilled student: local:runs/trec/distilled-...) with
    /v1/models and /v1/chat/completions.

    A json_schema response format with one string-enum property is answered by label
    scoring, so the answer is always one of the labels. Concurrent requests share batches;
    stream=true streams server-sent events.
    Clients: `http://HOST:PORT/v1#NAME` as a still model, or the openai SDK with
    base_url=http://HOST:PORT/v1.

    With --shadow TEACHER, every request is still answered by MODEL alone; a --sample of
    them is then asked of TEACHER in the background (the client never waits for it), and
    both answers are stored in --db tagged shadow=1 with the request's metadata and
    X-Still-Tags, with their agreement (and grades, with --task). Watch it with
    `still monitor --db DB`; switch traffic on it with `still proxy --route`.

    With --engine vllm, vLLM's own server answers instead (vLLM's sampling and
    structured outputs, no label scoring, no --shadow); arguments after `--` go to it as
    they are: `still serve --engine vllm MODEL -- --dtype float32 --max-model-len 2048`.
    """
    if engine == "vllm":
        if teacher is not None:
            raise click.UsageError("--shadow needs still's own server: drop --engine vllm")
        from still.models import serve_with_vllm, vllm_server

        serve_with_vllm(
            vllm_server(
                model, host=host, port=port, name=name, api_key=api_key, vllm_bin=vllm_bin,
                extra=vllm_args,
            )
        )  # fmt: skip
        return
    if vllm_args or vllm_bin:
        raise click.UsageError("vLLM arguments and --vllm-bin need --engine vllm")
    from still.serve import serve

    observer = None
    if teacher is not None:
        from still.shadow import open_shadow

        observer = open_shadow(
            teacher, db, sample, task_file, seed=seed, queue_size=shadow_queue,
            workers=shadow_workers,
        )  # fmt: skip
    elif task_file is not None:
        raise click.UsageError("--task grades shadowed pairs: give --shadow TEACHER too")
    serve(model, host=host, port=port, api_key=api_key, name=name, observer=observer)
