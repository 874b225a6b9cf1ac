"""Benchmarks: run models over held-out examples, grade them, summarise with intervals."""

from still.bench._bench import Comparison, ModelResult, evaluate
from still.bench._stats import gap_closed, percentile, wilson

__all__ = ["Comparison", "ModelResult", "evaluate", "gap_closed", "percentile", "wilson"]
