"""Trainers: one readable recipe per method, sharing one config and setup (_common):
SFT on hard labels (sft.py), knowledge distillation on label distributions (kd.py) or on
a teacher's tokens (kd_tokens.py, kd_topk.py), DPO on preference pairs (dpo.py).

`RECIPES` lists them all (_recipes.py): each recipe's data file and trainer, looked up by
the task's `train.recipe`; plugins add theirs with `register_recipe`.
"""

from still.train._checkpoints import CheckpointMismatch
from still.train._common import TrainResult
from still.train._launch import TrainingProcessFailed
from still.train._parallel import TrainingSetupError
from still.train._recipes import (
    DPO_FILE,
    RECIPES,
    Recipe,
    Trainer,
    get_recipe,
    register_recipe,
    task_recipe,
    teacher_recipe,
)
from still.train.kd import train_kd
from still.train.sft import train_sft

__all__ = [
    "CheckpointMismatch",
    "DPO_FILE",
    "RECIPES",
    "Recipe",
    "TrainResult",
    "TrainingProcessFailed",
    "TrainingSetupError",
    "Trainer",
    "get_recipe",
    "register_recipe",
    "task_recipe",
    "teacher_recipe",
    "train_kd",
    "train_sft",
]
