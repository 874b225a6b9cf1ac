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
from still.pipeline._run import STUDENTS, Engine, Run, StageError, capture_role, open_run
from still.pipeline._synthesize import synthesize_for_run
from still.pipeline._teacher import train_teacher_stage
from still.pipeline._teacher_check import check_teacher
from still.pipeline._train import train_stage, with_processes
from still.pipeline._tune import tune, tune_is_current, write_tune

log = logging.getLogger("still.pipeline")


def run_all(
    task_path: Path | str,
    run_dir: Path | str | None = None,
    keep: Keep | None = None,
    budget: Budget | None = None,
    engine: Engine | None = None,
    force: bool = False,
    processes: int | None = None,
) -> tuple[Run, Comparison]:
    """`still run`: capture -> export -> train -> bench, each skipping stored work; every
    model call of every stage counts against one `budget`.

    One distilled student per `curate.students` entry (or only `keep`): the teacher-only
    one (`parsed`) and the grader-verified one (`correct`), compared side by side. A
    recipe that learns from the student's own graded answers (grpo) trains one, asking
    the teacher nothing before the bench (`_own_answers`). With
    an `engine` (`--ray`), every model answers there; training stays in this process.

    A task with `teacher_training` trains its teacher first (once: `train_teacher_stage`).
    Then, on the validation split, the teacher must beat the base student and the
    baselines (`check_teacher`): otherwise the run stops before the teacher answers the
    training split (NotWorthDistilling, saying what to try), unless `force`. A task with
    `train.from_tune` then runs `still tune` when its tune.json is missing or stale.

    `processes` overrides `train.processes` (how to train, not what: the students'
    folders do not depend on it).
    """
    run = with_processes(open_run(task_path, run_dir), processes)
    run.engine = engine
    run.require_prices(budget)
    log.info("%s", run.load_report.summary())
    train_teacher_stage(run)  # teacher_training: the teacher is fine-tuned on gold first
    if not run.learns_from_teacher:
        return run, _own_answers(run, keep, budget)
    check_teacher(run, budget, force)
    if run.task.train.from_tune and not tune_is_current(run):
        write_tune(run, tune(run, budget=budget))
    synthesize_for_run(run, budget)  # synthesize.use: teacher-written inputs join train
    stats = capture_role(run, "teacher", "train", budget=budget)
    log.info("teacher on train: %s", stats.summary())
    if stats.failed == stats.total:
        raise StageError("every teacher request failed; see `still store ls --errors`")
    students = [keep] if keep is not None else list(run.students)
    for k in list(students):
        try:
            exported = export_stage(run, k, budget)
        except StageError as exc:
            if keep is not None or len(students) == 1:
                raise
            # data without usable references (production traffic): the verified student
            # has nothing to learn from; the teacher-only one still does
            log.warning("no %s student: %s", STUDENTS[k], exc)
            students.remove(k)
            continue
        log.info("export (%s): %s", STUDENTS[k], exported.summary())
        train_stage(run, keep=k)
    return run, bench_stage(run, run.roles(students), budget=budget)


def _own_answers(run: Run, keep: Keep | None, budget: Budget | None) -> Comparison:
    """`still run` for a recipe that learns from the student's own graded answers (grpo):
    the student is trained on its prompts and rewarded by the graders, then benched with
    the others. No teacher answers the train split and none is checked against the base
    student on validation: nothing of the teacher's is learned (it is still benched, as
    the comparison's reference). Inputs `synthesize.use` adds are prompts like the rest."""
    log.info(
        "train.recipe: %s learns from the student's own answers, graded: no teacher check, "
        "no teacher answers on train", run.task.train.recipe,
    )  # fmt: skip
    run.teacher_check_file.unlink(missing_ok=True)  # an earlier recipe's, no longer true
    synthesize_for_run(run, budget)
    k = keep or run.students[0]
    train_stage(run, keep=k)
    return bench_stage(run, run.roles([k]), budget=budget)
