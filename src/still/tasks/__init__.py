"""Tasks: the YAML schema, data sources, examples, splits and prompt templates.

A task file declares what the models must do (`Task`); this package turns it into
examples a pipeline can use, failing early and precisely when something is off:

- `load_task(path)` validates the YAML (`TaskError` names file, line and field, on one
  line), templates' syntax included; `load_grader_spec(path)` does the same for a grader file;
  a grader `type` and a `train.recipe` may be any name the grader and recipe registries
  (built-ins and plugins) have written down here (`register_grader_spec`,
  `register_recipe_name`);
- `load_examples(task)` reads the data (`resolve_source`, `read_rows`: CSV, TSV, JSONL,
  JSON, Parquet, regex-parsed lines, files inside installed packages; or, for `store:`,
  the completions `still store import` stored, each example keeping its recorded
  conversation and `LoadReport.recorded` the recorded answer), renames columns,
  maps labels, and returns content-addressed `Example`s with a `LoadReport` of every row
  left out (duplicates, empty answers, labels outside the set);
- `split_examples(examples, task.split, fewshot)` makes a deterministic train / held-out /
  few-shot `Split` by seeded hash of the example ids, stable when rows are appended;
- `role_context` and `render` build a role's prompt from strict Jinja2 templates, never
  exposing the asked example's reference answer.
"""

from still.tasks._example import Example, example_id
from still.tasks._load import LoadReport, TaskError, load_examples, load_grader_spec, load_task
from still.tasks._registry import (
    BaseGraderSpec,
    grader_types,
    recipe_names,
    register_grader_spec,
    register_recipe_name,
)
from still.tasks._schema import (
    TUNE_RECIPES,
    ConfidenceSpec,
    CurateSpec,
    DataSpec,
    EnsembleSpec,
    GenerationSpec,
    GraderSpec,
    LabelModelSpec,
    ModelsSpec,
    MultipleChoiceSpec,
    MultiSpec,
    PromptSpec,
    PythonSpec,
    ScoreModelSpec,
    SelectionSpec,
    SplitSpec,
    StringCheckSpec,
    SynthesizeSpec,
    Task,
    TeacherTrainingSpec,
    TextSimilaritySpec,
    TrainSpec,
    TuneSpec,
)
from still.tasks._sources import DataError, package_folder, read_rows, resolve_source
from still.tasks._split import Split, balanced, split_examples
from still.tasks._templates import TemplateError, render, role_context

__all__ = [
    "TUNE_RECIPES",
    "package_folder",
    "BaseGraderSpec",
    "ConfidenceSpec",
    "CurateSpec",
    "DataError",
    "DataSpec",
    "EnsembleSpec",
    "Example",
    "GenerationSpec",
    "GraderSpec",
    "LabelModelSpec",
    "ScoreModelSpec",
    "MultiSpec",
    "PythonSpec",
    "MultipleChoiceSpec",
    "SelectionSpec",
    "StringCheckSpec",
    "TextSimilaritySpec",
    "LoadReport",
    "ModelsSpec",
    "PromptSpec",
    "Split",
    "SplitSpec",
    "SynthesizeSpec",
    "Task",
    "TaskError",
    "TemplateError",
    "TeacherTrainingSpec",
    "TrainSpec",
    "TuneSpec",
    "example_id",
    "grader_types",
    "load_examples",
    "load_grader_spec",
    "load_task",
    "read_rows",
    "recipe_names",
    "register_grader_spec",
    "register_recipe_name",
    "render",
    "resolve_source",
    "role_context",
    "balanced",
    "split_examples",
]
