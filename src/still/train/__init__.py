"""Trainers: one readable recipe per method, sharing one config and setup (_common):
SFT on hard labels (sft.py), knowledge distillation on label distributions (kd.py),
DPO on preference pairs (dpo.py)."""

from still.train._common import TrainResult
from still.train.kd import train_kd
from still.train.sft import train_sft

__all__ = ["TrainResult", "train_kd", "train_sft"]
