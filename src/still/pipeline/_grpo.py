"""What a recipe that learns from the student's own answers needs from a run (`Recipe.prompts`,
train.recipe: grpo): the student's prompts of the train and validation splits with their
references, written to the recipe's data file, and the task's graders as its reward; and, for the
report, the rewards the training wrote beside each student (`grpo_report`).

The prompts are written before the student's folder is named, since the folder's address
hashes them: another split or prompt template is another model. Judges are asked through
the run's store (`Run.judge`), like every request.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from still.capture import build_messages
from still.cost import Budget
from still.pipeline._run import STUDENTS, Run, StageError
from still.train.grpo import EVAL_FILE, PromptRow, Reward, grader_reward, write_prompts

log = logging.getLogger("still.pipeline")


def write_prompt_rows(run: Run, path: Path) -> int:
    """Write the student's prompts of the train and validation splits to `path`, unless
    the same rows are already there; returns the number of rows."""
    rows = [
        PromptRow(
            id=ex.id,
            split=split,
            messages=build_messages(run.task, "student", ex, run.split.fewshot),
            fields=dict(ex.fields),
            answer=ex.answer,
        )
        for split, examples in (("train", run.split.train), ("validation", run.split.validation))
        for ex in examples
    ]
    tmp = path.with_name(path.name + ".new")
    write_prompts(tmp, rows)
    if path.exists() and path.read_bytes() == tmp.read_bytes():
        tmp.unlink()
    else:
        tmp.replace(path)
    return len(rows)


def task_reward(run: Run, budget: Budget | None = None) -> Reward:
    """The task's graders as a reward, judges asked through the run's store."""
    return grader_reward(run.graders, run.task.labels, run.task.output_schema, run.judge(budget))


def grpo_report(run: Run) -> list[dict[str, Any]]:
    """For the report: each trained student's grpo-eval.jsonl (validation reward every
    `eval_every` steps, training reward every step, the step whose weights were kept), as
    `{"role", "records"}`; empty when no student was trained by grpo. Unreadable lines
    are left out, said in the log."""
    out: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for keep in run.students:
        try:
            folder = run.distilled_dir(keep)
        except (StageError, OSError):  # not addressable yet (a `still tune` not run)
            continue
        path = folder / EVAL_FILE
        if folder in seen or not path.is_file():
            continue
        seen.add(folder)
        records = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                r = json.loads(line)
                records.append(
                    {**r, "step": int(r["step"]), "reward": float(r["reward"]),
                     "split": str(r["split"])}
                )  # fmt: skip
            except (ValueError, KeyError, TypeError):
                log.warning("%s:%d is not a reward record: left out of the report", path, n)
        if records:
            out.append({"role": STUDENTS[keep], "records": records})
    return out
