"""The commands that measure before (or beside) a run: estimate, select, check-grader,
curve and tune.

Like the stage commands, each opens the run, calls `still.pipeline` and prints what
`still.report` renders; a `StillError` goes to the boundary in `still.cli.main`.
"""

from __future__ import annotations

from pathlib import Path

import click

from still.cli._options import (
    KEEP,
    MAX_COST,
    PROCESSES,
    RUN_DIR,
    SPLIT,
    TASK,
    budget,
    open_task,
    role_option,
)
from still.curate import Keep
from still.pipeline import RunRole


@click.command("estimate")
@TASK
@RUN_DIR
@click.option("--limit", type=int, default=None, help="Only the first N examples of each split.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def estimate_cmd(task_file: Path, run_dir: Path | None, limit: int | None, as_json: bool) -> None:
    """What `still run` will send and cost, and what training its student takes, before
    any model is called or loaded.

    \b
    For each capture of the run (teacher on train; teacher, student, distilled and control
    on held-out): requests, how many are already stored (free), prompt tokens counted with
    the model's own tokenizer, answer tokens at most (longest label or max_tokens), and
    dollars at most from the price table (task `prices:` override it). Local models have
    no price unless the task gives one. The total is the figure to pass to --max-cost.

    \b
    For a local student, from its config alone: parameters; per training process and
    method (lora, full, and qlora on a GPU), the memory of weights, gradients, optimizer
    state and activations at train.batch_size (or micro_batch_size) rows of max_length
    tokens, and whether it fits this machine's GPU (or RAM); the training time at the
    tokens/s an earlier training of the task measured here, else an assumed one.
    --json prints {"captures": [...], "training": {...} or null}.
    """
    import json

    from still.pipeline import estimate_run, estimate_training, total_cost
    from still.prices import PRICES_AS_OF
    from still.report import console, estimate_view, training_view

    run = open_task(task_file, run_dir)
    stages = estimate_run(run, limit=limit)
    training = estimate_training(run)
    if as_json:
        out = {
            "captures": [s.as_dict() for s in stages],
            "training": training.as_dict() if training else None,
        }
        click.echo(json.dumps(out, indent=2))
        return
    console().print(estimate_view(run.task.name, stages, total_cost(stages), PRICES_AS_OF))
    if training is not None:
        console().print(training_view(training))


@click.command("select")
@TASK
@RUN_DIR
def select_cmd(task_file: Path, run_dir: Path | None) -> None:
    """Pick teacher, student and control from evidence: every `selection.candidates`
    model answers the same gold train examples; the policy picks the most accurate as
    teacher, the cheapest reaching `selection.student.floor` (else the weakest) as student,
    and the control `selection.control` names. Prints the table and every reason, writes
    selection.json, and the `models:` block to paste into the task.
    """
    from still.pipeline import select_models, write_selection
    from still.report import console, selection_models, selection_view

    run = open_task(task_file, run_dir)
    sel = select_models(run)
    write_selection(run, sel)
    console().print(selection_view(run.task.name, sel))
    click.echo(selection_models(sel))


@click.command("check-grader")
@TASK
@RUN_DIR
@click.option(
    "--grader", "name", default=None, help="The task's grader to check (a judge, usually)."
)
@click.option(
    "--grader-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Or a grader from a JSON/YAML file (OpenAI grader JSON): try a judge before "
    "putting it in the task.",
)
@role_option("Whose stored answers the grader is checked on.")
@SPLIT
@click.option(
    "--gold",
    "gold_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='JSONL of {"example_id": ..., "passed": true|false}. Default: the task\'s '
    "reference check (its first string_check).",
)
def check_grader_cmd(
    task_file: Path,
    run_dir: Path | None,
    name: str | None,
    grader_file: Path | None,
    role: RunRole,
    split_name: str,
    gold_file: Path | None,
) -> None:
    """Grade the grader: agreement of a grader's pass/fail verdicts with gold verdicts.

    Prints accuracy with its 95% interval, Cohen's kappa and the confusion matrix (rows:
    gold, columns: the grader; "(failed)": the grader errored), and records them in the
    run folder (grader_checks.json), where `still export` looks when the task sets
    curate.min_kappa. Judge calls go through the store (cached).
    """
    from still.pipeline import check_grader, load_grader_file
    from still.report import agreement_summary

    if (name is None) == (grader_file is None):
        raise click.UsageError("pass --grader NAME or --grader-file FILE")
    run = open_task(task_file, run_dir)
    grader = load_grader_file(grader_file) if grader_file else None
    agreement = check_grader(run, name, role, split_name, gold_file, grader)
    shown = name or (grader.name if grader else "")
    click.echo(agreement_summary(shown, role, split_name, agreement))


def _ints(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        sizes = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter("comma-separated whole numbers, e.g. 100,200,400") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("one or more positive sizes, e.g. 100,200,400")
    return sizes


def _names(value: str | None) -> list[str]:
    """A comma-separated option as its non-empty, stripped items."""
    return [x.strip() for x in (value or "").split(",") if x.strip()]


@click.command("curve")
@TASK
@RUN_DIR
@click.option(
    "--sizes",
    default="100,200,400",
    show_default=True,
    callback=_ints,
    help="Numbers of teacher examples (the first n of the train split) to train on.",
)
@click.option(
    "--recipes",
    default="sft,kd",
    show_default=True,
    help="Comma-separated: sft (teacher answers), kd (teacher label distributions, the "
    "task's train.kd), or kd:forward_kl, kd:reverse_kl, kd:jsd.",
)
@click.option(
    "--methods",
    default=None,
    help="Comma-separated lora and/or full (default: the task's train.method): measure "
    "which fine-tuning to use.",
)
@KEEP
@PROCESSES
def curve_cmd(
    task_file: Path,
    run_dir: Path | None,
    sizes: list[int],
    recipes: str,
    methods: str | None,
    keep: Keep,
    processes: int | None,
) -> None:
    """Held-out accuracy against the number of teacher examples, per training recipe: a
    student per (size, recipe), each benchmarked beside the teacher and the base student
    with the share of the gap closed (paired bootstrap interval), training time and
    tokens/s. Writes curve/curve.json, curve.md and curve.png in the run folder; trained
    students and stored answers are reused on a rerun.
    """
    from still.pipeline import learning_curve, with_processes, write_curve

    run = with_processes(open_task(task_file, run_dir), processes)
    points, ends = learning_curve(run, sizes, _names(recipes), keep, _names(methods) or None)
    md = write_curve(run, points, ends, {})
    click.echo(md.read_text())
    click.echo(f"curve in {md.parent}/")


@click.command("tune")
@TASK
@RUN_DIR
@click.option(
    "--budget",
    "minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Start no new point after this many minutes (default: tune.budget_minutes, else "
    "the whole grid); points already trained are always scored.",
)
@MAX_COST
def tune_cmd(
    task_file: Path, run_dir: Path | None, minutes: float | None, max_cost: float | None
) -> None:
    """Choose the training recipe on the validation split: every point of the task's
    `tune:` grid (recipe, method, epochs, learning rate, keep) trains a student on the
    train split's teacher answers and is scored on validation beside the teacher and the
    base student; the best wins (ties: the faster to train). Writes tune/tune.json (every
    point and the choice) and tune/tune.md; `train.from_tune: true` trains with the
    choice. The test split is never read; trained points are reused on a rerun.
    """
    from still.pipeline import tune, write_tune

    run = open_task(task_file, run_dir)
    md = write_tune(run, tune(run, minutes, budget(max_cost)))
    click.echo(md.read_text())
    click.echo(f"tune in {md.parent}/")
