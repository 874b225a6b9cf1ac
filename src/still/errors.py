"""The project's error base: what the CLI shows a user as one line.

Every exception `still` raises on purpose (bad input, a stage that cannot do its work, a
budget reached, a tool missing) derives from `StillError`, and the message says what to
do next. Anything else, a `ValueError` included, is a bug and keeps its traceback.

The families used by several packages live here (`ModelError`, `GraderError`,
`TrainError`); an error of one package lives beside its code (`TaskError`, `DataError`,
`TemplateError` in still.tasks, `StageError` in still.pipeline, `FormulaError` in
still.graders, ...).
"""

from __future__ import annotations


class StillError(Exception):
    """A user-facing error: printed as one line by the CLI, with no traceback."""


class ModelError(StillError):
    """A model reference that names no model, or a provider this environment cannot set up
    (an API key not set, an endpoint named without its model, a key over plain http)."""


class GraderError(StillError):
    """A grader whose configuration cannot work (an unknown metric or operation, a
    threshold or limit out of range, a spec type no grader is registered for); raised
    when the grader is built, never as a failed grade."""


class TrainError(StillError):
    """Training data or settings a recipe cannot train on (no usable rows, a malformed row,
    a loss that diverged, an unknown recipe)."""
