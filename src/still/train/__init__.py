"""Trainers: one readable recipe per method (LoRA / full SFT now; KD and on-policy later)."""

from still.train.sft import TrainResult, train_sft

__all__ = ["TrainResult", "train_sft"]
