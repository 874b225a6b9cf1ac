"""Tasks: the YAML schema, data sources, examples, splits and prompt templates."""

from still.tasks._example import Example, example_id
from still.tasks._load import LoadReport, TaskError, load_examples, load_task
from still.tasks._schema import (
    DataSpec,
    GenerationSpec,
    GraderSpec,
    ModelsSpec,
    PromptSpec,
    SplitSpec,
    Task,
    TrainSpec,
)
from still.tasks._sources import DataError, read_rows, resolve_source
from still.tasks._split import Split, split_examples
from still.tasks._templates import TemplateError, render, role_context

__all__ = [
    "DataError",
    "DataSpec",
    "Example",
    "GenerationSpec",
    "GraderSpec",
    "LoadReport",
    "ModelsSpec",
    "PromptSpec",
    "Split",
    "SplitSpec",
    "Task",
    "TaskError",
    "TemplateError",
    "TrainSpec",
    "example_id",
    "load_examples",
    "load_task",
    "read_rows",
    "render",
    "resolve_source",
    "role_context",
    "split_examples",
]
