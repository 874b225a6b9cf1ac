"""The pipeline commands: capture, export, train, bench and run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

TASK = click.argument("task_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
RUN_DIR = click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder (default: runs/<task name>). Holds the store, data, model and reports.",
)

ROLES_CHOICE = click.Choice(["teacher", "student", "distilled", "control"])
SPLIT = click.option(
    "--split",
    "split_name",
    type=click.Choice(["train", "heldout"]),
    default="train",
    show_default=True,
    help="train: the examples the teacher labels; heldout: the ones only ever evaluated.",
)

KEEP = click.option(
    "--keep",
    type=click.Choice(["correct", "parsed"]),
    default="correct",
    show_default=True,
    help="Which teacher answers become training data. correct: those every grader passes; "
    "parsed: any parseable answer (for data without reference answers).",
)


MAX_COST = click.option(
    "--max-cost",
    type=click.FloatRange(min=0),
    default=None,
    metavar="DOLLARS",
    help="Stop before spending more than this on priced models in this command (answers "
    "already stored are free). The next request's cost is bounded with the model's "
    "tokenizer first, so the limit is not crossed; rerun with more to go on. See "
    "`still estimate`.",
)


def _budget(max_cost: float | None) -> Any:
    from still.cost import Budget

    return None if max_cost is None else Budget(max_cost)


def ROLE(help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:  # noqa: N802 - used as a decorator beside TASK and SPLIT
    """The --role option, with a help text per command."""
    return click.option(
        "--role", type=ROLES_CHOICE, default="teacher", show_default=True, help=help
    )


def _open(task_file: Path, run_dir: Path | None) -> Any:
    from still.pipeline import open_run

    try:
        run = open_run(task_file, run_dir)
    except (ValueError, OSError, RuntimeError) as exc:  # bad task, data or template
        _fail(exc)
    click.echo(
        f"{run.task.name}: {run.load_report.summary()}; {len(run.split.train)} train, "
        f"{len(run.split.heldout)} held-out, {len(run.split.fewshot)} few-shot",
        err=True,
    )
    return run


def _fail(exc: Exception) -> NoReturn:
    """Show a still error as one clean line (the traceback only with `still -v`)."""
    import logging

    if logging.getLogger().isEnabledFor(logging.DEBUG):
        raise exc
    raise click.ClickException(str(exc)) from exc


@click.command("capture")
@TASK
@RUN_DIR
@ROLE("Which model answers.")
@SPLIT
@click.option("--limit", type=int, default=None, help="Only the first N examples of the split.")
@MAX_COST
def capture_cmd(
    task_file: Path,
    run_dir: Path | None,
    role: str,
    split_name: str,
    limit: int | None,
    max_cost: float | None,
) -> None:
    """Run a role's model over a split and store every completion.

    Already-stored requests are answered from the store, so an interrupted capture
    resumes where it stopped. Exits 1 if every request failed.
    """
    from still.pipeline import capture_role

    run = _open(task_file, run_dir)
    try:
        stats = capture_role(run, role, split_name, limit, _budget(max_cost))
    except Exception as exc:  # noqa: BLE001 - shown as a clean CLI error
        _fail(exc)
    click.echo(stats.summary())
    if stats.total and stats.failed == stats.total - stats.from_store and stats.failed:
        raise click.ClickException("every request failed; see `still store ls --errors`")


@click.command("grade")
@TASK
@RUN_DIR
@ROLE("Whose stored answers to grade.")
@SPLIT
def grade_cmd(task_file: Path, run_dir: Path | None, role: str, split_name: str) -> None:
    """Grade a role's stored answers with the task's graders (no model is called).

    Prints accuracy with its 95% interval and the failed and unparseable counts; grades are
    written to the store. Answers never captured count as failures.
    """
    from still.pipeline import grade_stage

    run = _open(task_file, run_dir)
    try:
        r = grade_stage(run, role, split_name)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    click.echo(
        f"{role} on {split_name}: {r.correct}/{r.n} correct, accuracy {r.accuracy:.1%} "
        f"[{r.ci_low:.1%}, {r.ci_high:.1%}]; {r.unparseable} unparseable, {r.errors} failed "
        "or missing"
    )


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
    keep: str,
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

    run = _open(task_file, run_dir)
    try:
        stats = export_stage(run, keep, _budget(max_cost), keep_if, force)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    click.echo(f"{stats.path}: {stats.summary()}")


@click.command("train")
@TASK
@RUN_DIR
@click.option("--force", is_flag=True, help="Retrain even if this exact model exists.")
def train_cmd(task_file: Path, run_dir: Path | None, force: bool) -> None:
    """Fine-tune the student on train.jsonl (LoRA or full, per the task's `train:`).

    Saves a merged model directory that `local:<dir>` loads; logs loss and tokens/s.
    """
    from still.pipeline import train_stage

    run = _open(task_file, run_dir)
    try:
        info = train_stage(run, force)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    if info.get("skipped"):
        click.echo(f"already trained: {info['out_dir']}")
        return
    losses = info["losses"]
    click.echo(
        f"{info['out_dir']}: {info['steps']} steps, {info['seconds']:.0f} s, "
        f"{info['tokens_per_s']:.0f} tok/s, loss {losses[0]:.3f} -> {losses[-1]:.3f}"
        + (
            f"; {info['skipped_too_long']} rows over max_length left out"
            if info.get("skipped_too_long")
            else ""
        )
    )


@click.command("bench")
@TASK
@RUN_DIR
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=ROLES_CHOICE,
    help="Roles to compare (repeatable; default all four).",
)
@click.option("--limit", type=int, default=None, help="Only the first N held-out examples.")
@MAX_COST
def bench_cmd(
    task_file: Path,
    run_dir: Path | None,
    roles: tuple[str, ...],
    limit: int | None,
    max_cost: float | None,
) -> None:
    """Compare the models on the held-out split: accuracy with 95% intervals, gap closed,
    unparseable and failed answers, latency and tokens/s.

    Writes report.md, report.json, results.jsonl and results.parquet to the run folder.
    """
    from still.pipeline import ROLES, bench_stage

    run = _open(task_file, run_dir)
    try:
        bench_stage(run, roles or ROLES, limit, budget=_budget(max_cost))
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    click.echo(f"reports in {run.dir}/")


@click.command("run")
@TASK
@RUN_DIR
@KEEP
@MAX_COST
def run_cmd(task_file: Path, run_dir: Path | None, keep: str, max_cost: float | None) -> None:
    """Run the whole loop: capture (teacher, train split) -> export -> train -> bench.

    Every stage skips work already stored: a second run makes no stored model call.
    """
    import time

    from still.pipeline import run_all

    start = time.perf_counter()
    try:
        run, _ = run_all(task_file, run_dir, keep, _budget(max_cost))  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    click.echo(f"done in {time.perf_counter() - start:.0f} s; reports in {run.dir}/")


@click.command("estimate")
@TASK
@RUN_DIR
@click.option("--limit", type=int, default=None, help="Only the first N examples of each split.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def estimate_cmd(task_file: Path, run_dir: Path | None, limit: int | None, as_json: bool) -> None:
    """What `still run` will send and cost, before any model is called.

    \b
    For each capture of the run (teacher on train; teacher, student, distilled and control
    on held-out): requests, how many are already stored (free), prompt tokens counted with
    the model's own tokenizer, answer tokens at most (longest label or max_tokens), and
    dollars at most from the price table (task `prices:` override it). Local models have
    no price unless the task gives one. The total is the figure to pass to --max-cost.
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from still.cost import PRICES_AS_OF
    from still.pipeline import estimate_run, total_cost

    run = _open(task_file, run_dir)
    try:
        stages = estimate_run(run, limit=limit)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in stages], indent=2))
        return

    def dollars(x: float | None, bound: bool = False) -> str:
        return "n/a" if x is None else ("≤ " if bound else "") + f"${x:,.4f}"

    table = Table(title=f"{run.task.name}: estimate (prices as of {PRICES_AS_OF} or the task's)")
    for col in ("role", "split", "model", "tokenizer"):
        table.add_column(col)
    for col in ("requests", "stored", "to send", "prompt tok", "answer tok ≤", "$ in", "$ ≤"):
        table.add_column(col, justify="right")
    for s in stages:
        table.add_row(
            s.role,
            s.split,
            s.model,
            s.tokenizer + ("" if s.exact else " (approx.)"),
            str(s.requests),
            str(s.stored),
            str(s.to_send),
            f"{s.prompt_tokens:,}",
            f"{s.output_tokens_max:,}",
            dollars(s.input_cost),
            dollars(s.cost_max, bound=True),
        )
    console = Console(width=max(Console().width, 160))
    console.print(table)
    console.print(f"at most ${total_cost(stages):,.4f} to spend (unpriced models count 0)")


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
@ROLE("Whose stored answers the grader is checked on.")
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
    role: str,
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

    if (name is None) == (grader_file is None):
        raise click.UsageError("pass --grader NAME or --grader-file FILE")
    run = _open(task_file, run_dir)
    try:
        grader = load_grader_file(grader_file) if grader_file else None
        a = check_grader(run, name, role, split_name, gold_file, grader)
        name = name or (grader.name if grader else "")
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    click.echo(
        f"{name} on {role}/{split_name}: {a.n} answers, accuracy {a.accuracy:.1%} "
        f"[{a.accuracy_ci[0]:.1%}, {a.accuracy_ci[1]:.1%}], Cohen's kappa {a.kappa:.3f}"
    )
    click.echo(a.table())


@click.command("export-dpo")
@TASK
@RUN_DIR
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["trl", "openai"]),
    default="trl",
    show_default=True,
    help="trl: {prompt, chosen, rejected} conversations (DPOTrainer); openai: preference "
    "fine-tuning rows {input, preferred_output, non_preferred_output}.",
)
@MAX_COST
def export_dpo_cmd(task_file: Path, run_dir: Path | None, fmt: str, max_cost: float | None) -> None:
    """Write DPO preference pairs: the teacher's passing answer (chosen) against the base
    student's failing one (rejected), to the student's prompt, on the train split.

    Answers the train split with the base student first (stored, resumable). Held-out
    examples are refused. Writes runs/<task>/dpo-<format>.jsonl.
    """
    from still.pipeline import export_dpo_stage

    run = _open(task_file, run_dir)
    try:
        path, n = export_dpo_stage(run, fmt, _budget(max_cost))
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    click.echo(f"{path}: {n} preference pairs")


@click.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report_cmd(run_dir: Path) -> None:
    """Rebuild a run's reports from its store, calling no model (judges included).

    RUN_DIR is a run folder (runs/<task>): its task.yaml snapshot and still.db are used.
    Writes report.md/json (and report.html when available) and results.jsonl/parquet
    again; answers never captured count as missing.
    """
    import json

    from still.pipeline import report_stage

    task_file = run_dir / "task.yaml"
    meta = run_dir / "run.json"
    if meta.is_file():  # the original task file, whose relative data paths resolve
        original = Path(json.loads(meta.read_text()).get("task_file", ""))
        if original.is_file():
            task_file = original
    if not task_file.is_file():
        raise click.ClickException(f"{run_dir} has no task.yaml: is it a run folder?")
    run = _open(task_file, run_dir)
    try:
        report_stage(run)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    click.echo(f"reports in {run.dir}/")


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
    from rich.console import Console
    from rich.table import Table

    from still.pipeline import select_models, write_selection

    run = _open(task_file, run_dir)
    try:
        sel = select_models(run)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    write_selection(run, sel)
    table = Table(title=f"{run.task.name}: candidates on {sel.results[0].n} gold train examples")
    for col in ("model", "accuracy [95% CI]", "unparseable", "errors", "s/example", "$ / 1k"):
        table.add_column(col)
    for r in sorted(sel.results, key=lambda r: -r.accuracy):
        table.add_row(
            r.model,
            f"{r.accuracy:.1%} [{r.ci_low:.1%}, {r.ci_high:.1%}]",
            str(r.unparseable),
            str(r.errors),
            f"{r.mean_latency_s:.3f}",
            "n/a" if r.cost_per_1k is None else f"${r.cost_per_1k:.4f}",
        )
    console = Console(width=max(Console().width, 150))
    console.print(table)
    for role, why in sel.reasons.items():
        console.print(f"{role}: {why}", markup=False)
    click.echo("models:")
    click.echo(f"  teacher: {sel.teacher}")
    click.echo(f"  student: {sel.student}")
    if sel.control:
        click.echo(f"  control: {sel.control}")


def _ints(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        sizes = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter("comma-separated whole numbers, e.g. 100,200,400") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("one or more positive sizes, e.g. 100,200,400")
    return sizes


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
def curve_cmd(
    task_file: Path,
    run_dir: Path | None,
    sizes: list[int],
    recipes: str,
    methods: str | None,
    keep: str,
) -> None:
    """Held-out accuracy against the number of teacher examples, per training recipe: a
    student per (size, recipe), each benchmarked beside the teacher and the base student
    with the share of the gap closed (paired bootstrap interval), training time and
    tokens/s. Writes curve/curve.json, curve.md and curve.png in the run folder; trained
    students and stored answers are reused on a rerun.
    """
    from still.pipeline import learning_curve, write_curve

    run = _open(task_file, run_dir)
    try:
        points, ends = learning_curve(
            run,
            sizes,
            [r.strip() for r in recipes.split(",") if r.strip()],
            keep,
            [m.strip() for m in methods.split(",") if m.strip()] if methods else None,
        )
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    md = write_curve(run, points, ends, {})
    click.echo(md.read_text())
    click.echo(f"curve in {md.parent}/")


@click.command("export-gguf")
@TASK
@RUN_DIR
@click.option(
    "--quant",
    default="f16,q4_k_m",
    show_default=True,
    help="Comma-separated: f16, q8_0 (llama.cpp's converter) and q4_k_m (llama-quantize, "
    "built by `make gguf-tools`; skipped with a message when missing).",
)
@click.option(
    "--verify",
    type=int,
    default=None,
    help="Check each file on the first N held-out examples (default: all of them).",
)
def export_gguf_cmd(task_file: Path, run_dir: Path | None, quant: str, verify: int | None) -> None:
    """Export the distilled student to GGUF for llama.cpp and Ollama: the files, a
    Modelfile (`ollama create NAME -f Modelfile`) and gguf.json, in <run>/gguf/. Each file
    is read back and answers the held-out questions; its agreement with the merged model
    (same answer) and its accuracy are printed and saved.
    """
    from still.pipeline import export_gguf_stage

    run = _open(task_file, run_dir)
    try:
        report = export_gguf_stage(
            run, tuple(q.strip() for q in quant.split(",") if q.strip()), verify
        )
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    for info in report["files"].values():
        click.echo(
            f"{info['file']}: {info['megabytes']} MB, agrees with the merged model on "
            f"{info['agreement']:.1%} of {report['examples']} held-out examples, accuracy "
            f"{info['accuracy']:.1%}"
        )
    for q, why in report["skipped"].items():
        click.echo(f"{q} skipped: {why}")
    if report.get("modelfile"):
        click.echo(f"Ollama: cd {run.dir / 'gguf'} && ollama create {run.task.name} -f Modelfile")
