"""What a recipe that learns from the student's own answers needs from a run (`Recipe.prompts`,
train.recipe: grpo): the student's prompts of the train and validation splits with their
references, written to the recipe's data file, and the task's graders as its reward.

The prompts are written before the student's folder is named, since the folder's address
hashes them: another split or prompt template is another model. Judges are asked through
the run's store (`Run.judge`), like every request.
"""

from __future__ import annotations

from pathlib import Path

from still.capture import build_messages
from still.cost import Budget
from still.pipeline._run import Run
from still.train.grpo import PromptRow, Reward, grader_reward, write_prompts


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
