"""The commands that write a run's results in other tools' formats: DPO preference pairs
(TRL or OpenAI) and GGUF files for llama.cpp and Ollama.

`still export` (curated chat JSONL, the training data of the run itself) is a stage and
lives in `still.cli.stages`.
"""

from __future__ import annotations

from pathlib import Path

import click

from still.cli._options import MAX_COST, RUN_DIR, TASK, budget, open_task


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

    path, n = export_dpo_stage(open_task(task_file, run_dir), fmt, budget(max_cost))
    click.echo(f"{path}: {n} preference pairs")


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
    from still.report import gguf_summary

    run = open_task(task_file, run_dir)
    quants = tuple(q.strip() for q in quant.split(",") if q.strip())
    report = export_gguf_stage(run, quants, verify)
    for line in gguf_summary(report):
        click.echo(line)
    if report.get("modelfile"):
        click.echo(f"Ollama: cd {run.dir / 'gguf'} && ollama create {run.task.name} -f Modelfile")
