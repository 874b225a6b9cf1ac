"""Benchmarks: run models over held-out examples, grade them, summarise with intervals;
and the statistics behind every claim (Wilson intervals, paired tests, a grader's agreement
with gold)."""

from still.bench._agreement import (
    FAILED,
    Agreement,
    GraderNotTrusted,
    agreement,
    check_trust,
    cohen_kappa,
)
from still.bench._baselines import Baselines, baselines
from still.bench._bench import Comparison, ModelResult, evaluate
from still.bench._bias import label_distribution
from still.bench._economics import accuracy_by_length, economics
from still.bench._paired import (
    compare_pairs,
    compare_scores,
    gap_closed_interval,
    mcnemar_exact,
    paired_bootstrap,
)
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
    "FAILED",
    "Agreement",
    "GraderNotTrusted",
    "agreement",
    "check_trust",
    "cohen_kappa",
    "Baselines",
    "Comparison",
    "baselines",
    "compare_pairs",
    "compare_scores",
    "gap_closed_interval",
    "label_distribution",
    "mcnemar_exact",
    "paired_bootstrap",
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
