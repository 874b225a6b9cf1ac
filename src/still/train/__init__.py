"""Trainers: one readable recipe per method, sharing one config and setup (_common):
SFT on hard labels (sft.py), knowledge distillation on label distributions (kd.py) or on
a teacher's tokens (kd_tokens.py, kd_topk.py), DPO on preference pairs (dpo.py).

`RECIPES` lists them all (_recipes.py): each recipe's data file and trainer, looked up by
the task's `train.recipe`; plugins add theirs with `register_recipe`. What a training will
hold in memory, worked out before the model loads (`still estimate`, and the refusal of a
training that cannot fit), is _memory.py's.
"""

from still.train._checkpoints import CheckpointMismatch
from still.train._common import TrainResult
from still.train._launch import TrainingProcessFailed
from still.train._memory import (
    DeviceMemory,
    DoesNotFit,
    MemoryEstimate,
    ModelShape,
    NotACausalLM,
    check_fits,
    device_memory,
    estimate_memory,
    flops_per_token,
    matmul_rate,
    model_shape,
    needed,
)
from still.train._parallel import TrainingSetupError, precision_for
from still.train._parallel import processes as training_processes
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
    "DeviceMemory",
    "DoesNotFit",
    "MemoryEstimate",
    "ModelShape",
    "NotACausalLM",
    "Recipe",
    "TrainResult",
    "TrainingProcessFailed",
    "TrainingSetupError",
    "Trainer",
    "check_fits",
    "device_memory",
    "estimate_memory",
    "flops_per_token",
    "get_recipe",
    "matmul_rate",
    "model_shape",
    "needed",
    "precision_for",
    "register_recipe",
    "task_recipe",
    "teacher_recipe",
    "train_kd",
    "train_sft",
    "training_processes",
]
