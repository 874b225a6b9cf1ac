"""Stages on a Run: the pipeline's library API (the CLI calls exactly these).

`Run` and its helpers live in `_run`; each stage, or family of stages, in its own module:
`_export` (training data), `_train`, `_bench` (grade, bench, report), `_gguf`, `_select`,
`_curve`, `_estimate`, `_grader_check`, `_calibrate` (contextual calibration, applied by
`Run`), `_teacher_check` (whether to distil at all), `_teacher` (a teacher trained on gold
first), `_tune` (the recipe chosen on validation), and `_flow` (`still run`: all of them
in order).
"""

from still.pipeline._bench import (
    RotatedQuestion,
    bench_stage,
    compare,
    grade_stage,
    position_bias_stage,
    report_extra,
    report_stage,
    rotated_requests,
)
from still.pipeline._curve import CurvePoint, learning_curve, recipe_spec, write_curve
from still.pipeline._estimate import (
    StageEstimate,
    TrainingEstimate,
    estimate_run,
    estimate_training,
    total_cost,
)
from still.pipeline._export import export_dpo_stage, export_stage
from still.pipeline._flow import run_all
from still.pipeline._gguf import export_gguf_stage
from still.pipeline._grader_check import (
    check_grader,
    fingerprint,
    judged_names,
    load_grader_file,
    read_gold,
    require_trusted,
)
from still.pipeline._run import (
    ROLES,
    Engine,
    Run,
    RunRole,
    StageError,
    capture_role,
    open_run,
    open_run_dir,
)
from still.pipeline._select import Selection, apply_policy, select_models, write_selection
from still.pipeline._synthesize import (
    SynthStats,
    estimate_synthesis,
    synthesize_stage,
    synthetic_file,
)
from still.pipeline._teacher import train_teacher_stage
from still.pipeline._teacher_check import NotWorthDistilling, TeacherCheck, check_teacher
from still.pipeline._train import train_stage, training_progress, with_processes
from still.pipeline._tune import TunePoint, Tuning, tune, tune_file, write_tune

__all__ = [
    "ROLES",
    "CurvePoint",
    "Engine",
    "NotWorthDistilling",
    "RotatedQuestion",
    "Run",
    "RunRole",
    "Selection",
    "StageError",
    "StageEstimate",
    "SynthStats",
    "TeacherCheck",
    "TrainingEstimate",
    "TunePoint",
    "Tuning",
    "apply_policy",
    "bench_stage",
    "capture_role",
    "check_teacher",
    "check_grader",
    "compare",
    "estimate_run",
    "estimate_synthesis",
    "estimate_training",
    "export_dpo_stage",
    "export_gguf_stage",
    "export_stage",
    "fingerprint",
    "grade_stage",
    "judged_names",
    "learning_curve",
    "load_grader_file",
    "open_run",
    "open_run_dir",
    "position_bias_stage",
    "read_gold",
    "recipe_spec",
    "report_extra",
    "report_stage",
    "require_trusted",
    "rotated_requests",
    "run_all",
    "select_models",
    "synthesize_stage",
    "synthetic_file",
    "total_cost",
    "train_stage",
    "train_teacher_stage",
    "training_progress",
    "tune",
    "tune_file",
    "with_processes",
    "write_curve",
    "write_selection",
    "write_tune",
]
