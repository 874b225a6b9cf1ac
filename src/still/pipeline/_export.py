"""Stages that write training data: curated teacher answers (`still export`) and
preference pairs (`still export-dpo`).
"""

from __future__ import annotations

from pathlib import Path

from still.capture import build_messages
from still.cost import Budget
from still.curate import ExportStats, Keep, export
from still.graders import answer_of, grade, prepare_graders
from still.pipeline._confidence import CONFIDENCE_FILE, confidence_stage
from still.pipeline._run import Run, StageError, capture_role
from still.types import Completion


def export_stage(
    run: Run,
    keep: Keep = "parsed",
    budget: Budget | None = None,
    keep_if: str | None = None,
    force: bool = False,
) -> ExportStats:
    """Stage: write teacher answers as student-prompt chat JSONL for one distilled student
    (and the per-row curation report, curation.jsonl, beside it; see `Run.data_dir`).

    `keep="parsed"` keeps every parseable answer: teacher-only distillation, no reference
    answer used. `keep="correct"` keeps those every grader passes, or those passing the
    task's `curate.filter` (which may read references, so it applies to this student
    only). `keep_if` overrides both. With `curate.confidence`, the teacher-only student
    keeps only the answers confident enough, by a threshold chosen on validation
    (`confidence_stage`, written to confidence.json; no gold of the training rows read).
    With `curate.min_kappa`, judges that decide what is kept must have passed `still
    check-grader` (GraderNotTrusted otherwise, unless `force`)."""
    if keep_if is None and keep == "correct":
        keep_if = run.task.curate.filter
    if run.task.curate.min_kappa is not None and (keep == "correct" or keep_if):
        from still.graders import parse_filter
        from still.pipeline._grader_check import require_trusted

        deciding = set(parse_filter(keep_if).names) if keep_if else {g.name for g in run.graders}
        require_trusted(run, deciding, run.task.curate.min_kappa, force)
    run.calibration("teacher", budget=budget, call=True)  # content-free answers, if calibrated
    teacher = run.stored("teacher", "train", include_failed=True)
    missing = len(run.split.train) - len(teacher)
    if missing:
        raise StageError(
            f"{missing} training examples have no teacher answer: run "
            "`still capture --role teacher --split train` first"
        )
    drop = None
    if keep == "parsed" and keep_if is None and run.task.curate.confidence is not None:
        drop = confidence_stage(run, teacher, budget).drops  # gold-free: chosen on validation
    elif keep == "parsed":
        (run.dir / CONFIDENCE_FILE).unlink(missing_ok=True)  # an earlier filter's, no longer true
    stats = export(
        run.task,
        run.split.train,
        teacher,
        run.graders,
        run.heldout_ids,
        run.split.fewshot,
        run.train_file(keep),
        heldout=run.split.heldout + run.split.validation,
        keep=keep,
        capture=run.judge(budget),
        keep_if=keep_if,
        drop=drop,
    )
    if stats.kept == 0:
        raise StageError(f"export kept no rows ({stats.summary()}); nothing to train on")
    return stats


def export_dpo_stage(run: Run, fmt: str = "trl", budget: Budget | None = None) -> tuple[Path, int]:
    """Stage: preference pairs on the train split, the teacher's passing answer against
    the base student's failing one to the same (student) prompt, written to
    dpo-<fmt>.jsonl. Captures the base student on the train split first (stored).

    Returns the file and the number of pairs.
    """
    from still.preference import pairs_from, write_dpo

    teacher = run.stored("teacher", "train", include_failed=True)
    if len(teacher) < len(run.split.train):
        raise StageError("run `still capture --role teacher --split train` first")
    student = capture_role(run, "student", "train", budget=budget).completions
    ask = run.judge(budget)

    def verdicts(comps: dict[str, Completion]) -> dict[str, tuple[str, bool]]:
        pairs = [(ex, comps.get(ex.id)) for ex in run.split.train]
        prepare_graders(run.graders, pairs, run.task.labels, ask)
        out = {}
        for ex, comp in pairs:
            answer, _ = answer_of(comp, run.task.labels)
            if answer is not None:
                grades = grade(run.graders, ex, comp, run.task.labels)
                out[ex.id] = (answer, all(g.passed for g in grades))
        return out

    prompts = {
        ex.id: [m.model_dump() for m in build_messages(run.task, "student", ex, run.split.fewshot)]
        for ex in run.split.train
    }
    pairs = pairs_from(prompts, verdicts(teacher), verdicts(student), run.heldout_ids)
    out = run.dir / f"dpo-{fmt}.jsonl"
    write_dpo(pairs, out, fmt)  # type: ignore[arg-type]
    return out, len(pairs)
