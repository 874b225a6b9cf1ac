"""The train stage: the task's recipe on the exported data, into a content-addressed
model folder (skipped when that exact model exists).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from still.curate import Keep
from still.errors import ModelError, TrainError
from still.pipeline._run import Run, StageError

log = logging.getLogger("still.pipeline")


def with_processes(run: Run, processes: int | None) -> Run:
    """`run`, its students trained in `processes` processes (`--processes`) when given.
    How to train, not what: the students' content-addressed folders stay the same."""
    if processes:
        train = run.task.train.model_copy(update={"processes": processes})
        run.task = run.task.model_copy(update={"train": train})
    return run


@contextmanager
def training_progress(desc: str) -> Iterator[Callable[[int, int, float], None]]:
    """A progress bar for a training run, as the trainers' `on_step(step, total, loss)`."""
    from tqdm import tqdm

    with tqdm(desc=desc, unit="step", leave=False) as bar:

        def on_step(step: int, total: int, loss: float) -> None:
            bar.total = total
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update(1)

        yield on_step


def train_stage(run: Run, force: bool = False, keep: Keep = "parsed") -> dict[str, Any]:
    """Stage: fine-tune a distilled student (`keep`: on every parseable teacher answer, or
    on the grader-verified ones) with the task's recipe; skipped if this exact model
    exists. The recipe (its data file, its trainer) comes from `still.train.RECIPES`:
    look it up, check its data, skip if trained, run, log."""
    from still.models import local_path, shutdown_engine
    from still.train import task_recipe, teacher_recipe

    flag = "" if keep == "parsed" else f" --keep {keep}"
    spec = run.train_spec(keep)  # the task's train:, or what `still tune` chose
    try:
        name, recipe = task_recipe(spec.recipe, bool(run.task.labels))
        _, recipe, teacher = teacher_recipe(name, recipe, run.task.models.teacher)
    except (TrainError, ModelError) as exc:
        raise StageError(str(exc)) from exc
    train_file = run.train_file(keep)
    if not recipe.prompts and not train_file.exists():  # grpo reads no teacher answer
        raise StageError(f"{train_file} does not exist: run `still export{flag}` first")
    data = run.recipe_file(recipe, keep)
    extra: dict[str, Any] = {} if teacher is None else {"teacher_model": teacher}
    if recipe.prompts:  # it learns from the student's own answers, graded: no teacher's
        from still.pipeline._grpo import task_reward, write_prompt_rows

        write_prompt_rows(run, data)  # before the model's folder is named: it hashes them
        extra["reward"] = task_reward(run)
    if not data.exists():
        raise StageError(f"{data} does not exist: {recipe.missing.format(flag=flag)}")
    out = run.distilled_dir(keep)
    if (out / "train.json").is_file() and not force:
        info: dict[str, Any] = json.loads((out / "train.json").read_text())
        info["skipped"] = True
        return info
    ref = run.task.models.student
    try:
        base = local_path(ref)
    except ModelError as exc:
        raise StageError(f"can't train student {ref!r}: {exc}") from exc
    from still.pipeline._tune import tuned_model

    tuned = None if force else tuned_model(run, keep, base)
    if tuned is not None:  # `still tune` trained it: the same data, settings and base model
        log.info("the student `still tune` chose, trained on this data: copied from %s", tuned)
        shutil.copytree(tuned, out, dirs_exist_ok=True)
        info = json.loads((out / "train.json").read_text())
        info.update(out_dir=str(out), copied_from=str(tuned))
        (out / "train.json").write_text(json.dumps(info, indent=1))
    else:
        shutdown_engine()  # a vLLM engine left from answering would hold cores and memory
        trainer = recipe.load()
        with training_progress(f"train ({spec.recipe}, {spec.method})") as on_step:
            try:
                trainer(base, data=data, out_dir=out, spec=spec, on_step=on_step, **extra)
            except TrainError as exc:  # a tokenizer mismatch, no usable rows: say so plainly
                raise StageError(str(exc)) from exc
    info = json.loads((out / "train.json").read_text())
    info["skipped"] = False
    losses = info.get("losses") or [math.nan]
    log.info(
        "%s: %d steps on %d examples in %.0f s, %.0f tok/s, loss %.3f -> %.3f",
        info.get("recipe", spec.recipe),
        info["steps"],
        info["examples"],
        info["seconds"],
        info.get("tokens_per_s", 0.0),
        losses[0],
        losses[-1],
    )
    if info.get("skipped_too_long"):
        log.warning(
            "%d training rows were longer than train.max_length=%d tokens and left out",
            info["skipped_too_long"],
            spec.max_length,
        )
    if info.get("skipped_no_targets"):
        log.warning(
            "%d training rows had no usable soft targets (no stored top-k logprobs, or "
            "tokens that do not spell the kept answer) and were left out",
            info["skipped_no_targets"],
        )
    return info
