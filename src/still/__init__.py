"""still: task distillation, from a large teacher model to a small, cheap student.

The library API, one call per stage (the CLI calls exactly these):

    >>> import still
    >>> run = still.open_run("examples/trec/task.yaml")      # doctest: +SKIP
    >>> still.capture_role(run, "teacher", "train")          # doctest: +SKIP
    >>> still.export_stage(run); still.train_stage(run)      # doctest: +SKIP
    >>> still.bench_stage(run)                               # doctest: +SKIP

or `still.run_all("examples/trec/task.yaml")` for all of it. Lower-level pieces:
`load_task`, `load_examples`, `split_examples`, `get_model`, `Store`, `grade`, `export`,
`train_sft`, `evaluate`, and the module `still.capture` (`still.capture.capture`: a model
over examples, into a store). Heavy libraries load only when a model or trainer is used.
No name here shadows a module of the package: `still.capture` is the module, as
`import still.capture` promises.
"""

from still import capture
from still.bench import evaluate
from still.capture import CaptureStats, build_request
from still.curate import LeakageError, export
from still.graders import grade
from still.models import get_model
from still.pipeline import (
    Run,
    StageError,
    bench_stage,
    capture_role,
    export_stage,
    open_run,
    run_all,
    train_stage,
)
from still.store import Store
from still.tasks import load_examples, load_task, split_examples
from still.train import train_sft
from still.types import Completion, Grade, Message, Request, SamplingParams

__all__ = [
    "CaptureStats",
    "Completion",
    "Grade",
    "LeakageError",
    "Message",
    "Request",
    "Run",
    "SamplingParams",
    "StageError",
    "Store",
    "bench_stage",
    "build_request",
    "capture",
    "capture_role",
    "evaluate",
    "export",
    "export_stage",
    "get_model",
    "grade",
    "load_examples",
    "load_task",
    "open_run",
    "run_all",
    "split_examples",
    "train_sft",
    "train_stage",
]
