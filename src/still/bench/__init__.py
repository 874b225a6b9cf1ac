"""Benchmarks: run models over held-out examples, grade them, summarise with intervals."""

from still.bench._bench import Comparison, ModelResult, evaluate
from still.bench._economics import accuracy_by_length, economics
from still.bench._position import (
    Answer,
    MCItem,
    PositionBias,
    position_bias,
    rotate_example,
    rotations,
    summarise,
)
from still.bench._stats import gap_closed, percentile, wilson

__all__ = [
    "Comparison",
    "accuracy_by_length",
    "economics",
    "Answer",
    "MCItem",
    "ModelResult",
    "PositionBias",
    "evaluate",
    "gap_closed",
    "percentile",
    "position_bias",
    "rotate_example",
    "summarise",
    "rotations",
    "wilson",
]
