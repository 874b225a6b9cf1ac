"""`still run`: every stage in order, each skipping the work already stored.
"""

from __future__ import annotations

import logging
from pathlib import Path

from still.bench import Comparison
from still.cost import Budget
from still.curate import Keep
from still.pipeline._bench import bench_stage
from still.pipeline._export import export_stage
from still.pipeline._run import Run, StageError, capture_role, open_run
from still.pipeline._train import train_stage

log = logging.getLogger("still.pipeline")

def run_all(
    task_path: Path | str,
    run_dir: Path | str | None = None,
    keep: Keep = "correct",
    budget: Budget | None = None,
) -> tuple[Run, Comparison]:
    """`still run`: capture -> export -> train -> bench, each skipping stored work; every
    model call of every stage counts against one `budget`."""
    run = open_run(task_path, run_dir)
    log.info("%s", run.load_report.summary())
    stats = capture_role(run, "teacher", "train", budget=budget)
    log.info("teacher on train: %s", stats.summary())
    if stats.failed == stats.total:
        raise StageError("every teacher request failed; see `still store ls --errors`")
    log.info("export: %s", export_stage(run, keep, budget).summary())
    train_stage(run)
    return run, bench_stage(run, budget=budget)
