"""`still synthesize`: teacher-written inputs, for tasks with few labelled examples.

A thin command over `still.pipeline.synthesize_stage`: it opens the run, asks the teacher
through the run's store (a rerun sends nothing already answered) and prints the counts
written to synth.json.
"""

from __future__ import annotations

from pathlib import Path

import click

from still.cli._options import MAX_COST, RUN_DIR, TASK, budget, open_task


@click.command("synthesize")
@TASK
@RUN_DIR
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=None,
    help="How many new inputs to keep (default: the task's synthesize.n, else 100).",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed of the examples and instruction of each request (default: synthesize.seed).",
)
@MAX_COST
def synthesize_cmd(
    task_file: Path, run_dir: Path | None, n: int | None, seed: int | None, max_cost: float | None
) -> None:
    """Have the teacher write new inputs from the training examples.

    For a label task each request shows training inputs of one label and asks for a new
    one of that label, the labels in turn; for free text, requests differ by the task's
    `synthesize.instructions`. Exact and near duplicates (of each other and of training
    inputs) are dropped, and inputs too close to a validation or test input refused.
    Writes <run>/synthetic.jsonl (with `synthetic: true` and the label asked for),
    synth.json (the counts) and synth-dropped.jsonl; `synthesize.use: true` makes `still
    run` add them to the train split, answered by the teacher.
    """
    from still.pipeline import synthesize_stage

    run = open_task(task_file, run_dir)
    stats = synthesize_stage(run, n=n, budget=budget(max_cost), seed=seed)
    click.echo(stats.summary())
    click.echo(f"wrote {run.dir / 'synthetic.jsonl'} and {run.dir / 'synth.json'}")
