"""The recipe table: every way to train a distilled student, its data file and its trainer.

A task's `train.recipe` names a row here. `train_stage` looks the recipe up, checks its
data file exists (saying which command writes it), and calls its trainer; it knows no
recipe by name. Trainers are named as "module:function" and imported only when training
starts, so listing recipes loads no torch. A plugin adds a row with `register_recipe`
(see `still.plugins`), the same call the built-ins below go through; it also writes the
name down in the task schema, so a task file's `train.recipe` may name it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from still.curate import SOFT_FILE, TOKENS_FILE, TRAIN_FILE
from still.errors import ModelError, TrainError
from still.models import local_path
from still.plugins import load_plugins
from still.tasks import register_recipe_name

DPO_FILE = "dpo-trl.jsonl"
"""The preference pairs in TRL's format, as `still export-dpo` writes them (one per run)."""

GRPO_FILE = "grpo.jsonl"
"""The student's prompts of the train and validation splits with their references, which
the train stage writes for a recipe that learns from `prompts` (one per run)."""

Trainer = Callable[..., Any]
"""`trainer(base_model, data=, out_dir=, spec=, on_step=)` (and `teacher_model=` when the
recipe reads a local teacher), saving the merged student and its train.json in out_dir."""


@dataclass(frozen=True)
class Recipe:
    """One way to train a distilled student.

    Attributes:
        data: the file it learns from, in the student's data folder (`shared`: the run's).
        trainer: "module:function", imported when training starts, or the function itself.
        missing: what to do when `data` is absent, after "<file> does not exist: ";
            `{flag}` becomes the export's `--keep` flag.
        shared: one data file for the run (the DPO pairs), not one per distilled student.
        teacher: the trainer also takes `teacher_model`, the local teacher's folder.
        free_text: on a task without labels, train with this recipe instead.
        endpoint_teacher: when the teacher is no local model, train with this one instead.
        prompts: it learns from the student's own answers to the task's prompts, graded
            by the task's graders, not from the teacher's: the train stage writes `data`
            (the prompts with their references) and passes the trainer `reward=`, the
            graders as a reward function (still.train.grpo.Reward).
    """

    data: str
    trainer: str | Trainer
    missing: str = "run `still export{flag}` first"
    shared: bool = False
    teacher: bool = False
    free_text: str | None = None
    endpoint_teacher: str | None = None
    prompts: bool = False

    def load(self) -> Trainer:
        """The trainer function (importing its module: torch loads here)."""
        if not isinstance(self.trainer, str):
            return self.trainer
        module, _, name = self.trainer.partition(":")
        fn: Trainer = getattr(importlib.import_module(module), name)
        return fn


RECIPES: dict[str, Recipe] = {}
"""Recipes by name: the built-ins below, then any a plugin registers."""


def register_recipe(name: str, recipe: Recipe) -> Recipe:
    """Add (or replace) the recipe `name`, and let task files name it in `train.recipe`
    (`still.tasks.register_recipe_name`); built-ins use this too."""
    register_recipe_name(name)
    RECIPES[name] = recipe
    return recipe


_BUILTIN = {
    "sft": Recipe(data=TRAIN_FILE, trainer="still.train.sft:train_sft"),
    "kd": Recipe(  # label KD: the teacher's scores over the labels
        data=SOFT_FILE,
        trainer="still.train.kd:train_kd",
        missing="the teacher's answers carry no label scores. Local teachers give them in "
        "score mode (generation.mode: score); re-run `still export` after capturing with "
        "one, or use train.recipe: sft",
        free_text="kd-tokens",
    ),
    "kd-tokens": Recipe(  # free-text KD from a local teacher: its whole distribution, live
        data=TOKENS_FILE,
        trainer="still.train.kd_tokens:train_kd_tokens",
        teacher=True,
        endpoint_teacher="kd-topk",
    ),
    "kd-topk": Recipe(  # free-text KD from an endpoint: the top-k logprobs stored with it
        data=TOKENS_FILE, trainer="still.train.kd_topk:train_kd_topk"
    ),
    "dpo": Recipe(
        data=DPO_FILE,
        trainer="still.train.dpo:train_dpo",
        missing="run `still export-dpo` first (preference pairs: the teacher's passing "
        "answer against the base student's failing one)",
        shared=True,
    ),
    "grpo": Recipe(  # reinforcement fine-tuning: the task's graders score sampled answers
        data=GRPO_FILE,
        trainer="still.train.grpo:train_grpo",
        missing="`still train` writes it from the task's train and validation splits",
        shared=True,
        prompts=True,
    ),
}
for _name, _recipe in _BUILTIN.items():
    register_recipe(_name, _recipe)


def get_recipe(name: str) -> Recipe:
    """The recipe `name` (plugins loaded first).

    Raises:
        TrainError: no such recipe; the message lists the known ones.
    """
    load_plugins()
    if name not in RECIPES:
        raise TrainError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def task_recipe(name: str, labels: bool) -> tuple[str, Recipe]:
    """The recipe a task's `train.recipe` means for its kind of task: a recipe with a
    `free_text` variant (kd) uses it on a task without labels. The teacher is not looked
    at: see `teacher_recipe`."""
    recipe = get_recipe(name)
    if not labels and recipe.free_text is not None:
        name = recipe.free_text
        recipe = get_recipe(name)
    return name, recipe


def teacher_recipe(name: str, recipe: Recipe, teacher: str) -> tuple[str, Recipe, Path | None]:
    """The recipe to run given the task's teacher: one that reads a local teacher gets its
    folder, or gives way to its `endpoint_teacher` variant when the teacher is an endpoint.

    Raises:
        ModelError: the recipe needs a local teacher and has no endpoint variant.
    """
    if not recipe.teacher:
        return name, recipe, None
    try:
        return name, recipe, local_path(teacher)
    except ModelError:
        if recipe.endpoint_teacher is None:
            raise
        name = recipe.endpoint_teacher
        return name, get_recipe(name), None
