"""The stage commands: capture, grade, export, train, bench, report and run.

Each opens the run, calls its stage in `still.pipeline` and prints the summary that
`still.report` renders. Errors are not handled here: a `StillError` reaches the one
boundary in `still.cli.main`, which prints it as one line.
"""

from __future__ import annotations

from pathlib import Path

import click

from still.cli._options import (
    KEEP,
    MAX_COST,
    PROCESSES,
    RAY,
    ROLES_CHOICE,
    RUN_DIR,
    SPLIT,
    STUDENTS,
    TASK,
    budget,
    open_folder,
    open_task,
    ray_engine,
    role_option,
)
from still.curate import Keep
from still.pipeline import RunRole


@click.command("capture")
@TASK
@RUN_DIR
@role_option("Which model answers.")
@SPLIT
@click.option("--limit", type=int, default=None, help="Only the first N examples of the split.")
@MAX_COST
@RAY
def capture_cmd(
    task_file: Path,
    run_dir: Path | None,
    role: RunRole,
    split_name: str,
    limit: int | None,
    max_cost: float | None,
    ray_address: str | None,
) -> None:
    """Run a role's model over a split and store every completion.

    Already-stored requests are answered from the store, so an interrupted capture
    resumes where it stopped. Exits 1 if every request failed.
    """
    from still.pipeline import capture_role

    engine = ray_engine(ray_address)
    run = open_task(task_file, run_dir)
    run.engine = engine
    stats = capture_role(run, role, split_name, limit, budget(max_cost))
    click.echo(stats.summary())
    if stats.total and stats.failed == stats.total - stats.from_store and stats.failed:
        raise click.ClickException("every request failed; see `still store ls --errors`")


@click.command("grade")
@TASK
@RUN_DIR
@role_option("Whose stored answers to grade.")
@SPLIT
@MAX_COST
def grade_cmd(
    task_file: Path, run_dir: Path | None, role: RunRole, split_name: str, max_cost: float | None
) -> None:
    """Grade a role's stored answers with the task's graders.

    The role's model is not called: answers never captured count as failures. Judge
    graders (score_model, label_model) are called, through the store (a verdict already
    stored is free) and within --max-cost. Prints accuracy with its 95% interval and the
    failed and unparseable counts; grades are written to the store.
    """
    from still.pipeline import grade_stage
    from still.report import grade_summary

    result = grade_stage(open_task(task_file, run_dir), role, split_name, budget(max_cost))
    click.echo(grade_summary(role, split_name, result))


@click.command("export")
@TASK
@RUN_DIR
@KEEP
@click.option(
    "--filter",
    "keep_if",
    default=None,
    metavar="EXPR",
    help="Keep rows whose grade scores pass EXPR, e.g. 'correct == 1 and sarcasm >= 6' "
    "(overrides the task's curate.filter and --keep).",
)
@MAX_COST
@click.option(
    "--force", is_flag=True, help="Export even when a deciding judge fails curate.min_kappa."
)
def export_cmd(
    task_file: Path,
    run_dir: Path | None,
    keep: Keep,
    keep_if: str | None,
    max_cost: float | None,
    force: bool,
) -> None:
    """Write passing teacher answers as chat JSONL (OpenAI fine-tuning format).

    Rows are rebuilt with the STUDENT prompt; held-out example ids are refused; duplicate
    prompts are dropped. Judge graders are asked first (stored and cached, within
    --max-cost). curation.jsonl beside train.jsonl lists every row: kept or dropped, why,
    and its grade scores.
    """
    from still.pipeline import export_stage

    stats = export_stage(open_task(task_file, run_dir), keep, budget(max_cost), keep_if, force)
    click.echo(f"{stats.path}: {stats.summary()}")


@click.command("train")
@TASK
@RUN_DIR
@KEEP
@click.option("--force", is_flag=True, help="Retrain even if this exact model exists.")
@PROCESSES
@click.option(
    "--teacher",
    is_flag=True,
    help="Train the teacher instead (teacher_training: models.teacher fine-tuned on the gold "
    "answers of its part of the train split).",
)
def train_cmd(
    task_file: Path,
    run_dir: Path | None,
    keep: Keep,
    force: bool,
    processes: int | None,
    teacher: bool,
) -> None:
    """Fine-tune a distilled student on its exported data (the task's `train:` recipe,
    LoRA or full), or with --teacher the task's teacher on gold (`teacher_training:`).

    Saves a merged model directory that `local:<dir>` loads; logs loss and tokens/s.
    """
    from still.pipeline import train_stage, train_teacher_stage, with_processes
    from still.report import train_summary

    run = with_processes(open_task(task_file, run_dir), processes)
    if not teacher:
        click.echo(train_summary(train_stage(run, force, keep)))
        return
    info = train_teacher_stage(run, force)
    if info is None:
        raise click.UsageError("--teacher: the task has no teacher_training: block")
    click.echo(train_summary(info))


@click.command("bench")
@TASK
@RUN_DIR
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=ROLES_CHOICE,
    help="Roles to compare (repeatable; default: every role the task trains).",
)
@click.option("--limit", type=int, default=None, help="Only the first N held-out examples.")
@MAX_COST
@RAY
def bench_cmd(
    task_file: Path,
    run_dir: Path | None,
    roles: tuple[RunRole, ...],
    limit: int | None,
    max_cost: float | None,
    ray_address: str | None,
) -> None:
    """Compare the models on the held-out test split: accuracy with 95% intervals beside
    the majority-label and chance baselines, paired tests, gap closed (when meaningful),
    unparseable and failed answers, latency and tokens/s.

    Writes report.md, report.json, results.jsonl and results.parquet to the run folder.
    """
    from still.pipeline import bench_stage

    engine = ray_engine(ray_address)
    run = open_task(task_file, run_dir)
    run.engine = engine
    bench_stage(run, roles or None, limit, budget=budget(max_cost))
    click.echo(f"reports in {run.dir}/")


@click.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report_cmd(run_dir: Path) -> None:
    """Rebuild a run's reports from its store, calling no model (judges included).

    RUN_DIR is a run folder (runs/<task>): its task.yaml snapshot and still.db are used.
    Writes report.md/json (and report.html when available) and results.jsonl/parquet
    again; answers never captured count as missing.
    """
    from still.pipeline import report_stage

    run = open_folder(run_dir)
    report_stage(run)
    click.echo(f"reports in {run.dir}/")


@click.command("run")
@TASK
@RUN_DIR
@STUDENTS
@MAX_COST
@RAY
@PROCESSES
@click.option(
    "--force",
    is_flag=True,
    help="Train even when the teacher does not beat the base student or the baselines "
    "on the validation split.",
)
def run_cmd(
    task_file: Path,
    run_dir: Path | None,
    keep: Keep | None,
    max_cost: float | None,
    ray_address: str | None,
    processes: int | None,
    force: bool,
) -> None:
    """Run the whole loop: check the teacher (validation split) -> capture (teacher,
    train split) -> export -> train -> bench, with a teacher-only and a grader-verified
    distilled student side by side.

    Before training, the teacher must beat the base student (paired) and the
    majority-label and chance baselines on the validation split; otherwise the run stops
    and says what to try (--force trains anyway). Every stage skips work already stored:
    a second run makes no stored model call.
    """
    import time

    from still.pipeline import run_all

    start = time.perf_counter()
    engine = ray_engine(ray_address)
    run, _ = run_all(
        task_file, run_dir, keep, budget(max_cost), engine, force=force, processes=processes
    )
    click.echo(f"done in {time.perf_counter() - start:.0f} s; reports in {run.dir}/")
