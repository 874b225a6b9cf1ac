"""The `still` command line: a thin layer, each command calls one library function.

Heavy libraries are imported inside commands, so `still --help` stays instant.
"""

from __future__ import annotations

import logging
import sys

import click

from still.cli.models import models_cmd
from still.cli.pipeline import (
    bench_cmd,
    capture_cmd,
    check_grader_cmd,
    curve_cmd,
    estimate_cmd,
    export_cmd,
    export_dpo_cmd,
    export_gguf_cmd,
    grade_cmd,
    report_cmd,
    run_cmd,
    select_cmd,
    train_cmd,
)
from still.cli.serve import serve_cmd
from still.cli.store import store


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show debug logging.")
@click.version_option(package_name="still")
def main(verbose: bool) -> None:
    """still: distil one task from a large model into a small, cheap one.

    \b
    A typical session:
      still models                         what can answer (bundled models, schemes)
      still estimate examples/trec/task.yaml   tokens and dollars before a run
      still run examples/trec/task.yaml    capture -> export -> train -> bench
    or stage by stage:
      still capture TASK --role teacher --split train
      still grade TASK --role teacher --split train
      still export TASK
      still train TASK
      still bench TASK
      still store ls --db runs/<task>/still.db
      still serve local:runs/<task>/distilled-<hash>   OpenAI-compatible API
    """
    from still.settings import load_dotenv

    load_dotenv()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "urllib3", "transformers", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


main.add_command(models_cmd)
main.add_command(select_cmd)
main.add_command(estimate_cmd)
main.add_command(capture_cmd)
main.add_command(grade_cmd)
main.add_command(check_grader_cmd)
main.add_command(export_cmd)
main.add_command(export_dpo_cmd)
main.add_command(train_cmd)
main.add_command(curve_cmd)
main.add_command(export_gguf_cmd)
main.add_command(bench_cmd)
main.add_command(report_cmd)
main.add_command(run_cmd)
main.add_command(store)
main.add_command(serve_cmd)
