"""Loading a task file and its examples, with every problem reported, none hidden."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from still.tasks._example import Example, example_id
from still.tasks._schema import Task
from still.tasks._sources import DataError, read_rows, resolve_source

log = logging.getLogger("still.tasks")


class TaskError(ValueError):
    """A task file is unreadable or invalid; the message names the file and the field."""


def load_task(path: str | Path) -> Task:
    """Read and validate a task YAML file."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise TaskError(f"{p}: invalid YAML: {exc}") from exc
    except OSError as exc:
        raise TaskError(f"{p}: {exc.strerror}") from exc
    if not isinstance(raw, dict):
        raise TaskError(f"{p}: a task file must be a mapping")
    try:
        return Task.model_validate({**raw, "base_dir": p.resolve().parent})
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise TaskError(f"{p}: {errs}") from exc


@dataclass
class LoadReport:
    """What loading kept and left out, and why."""

    rows: int = 0
    kept: int = 0
    duplicates: int = 0
    empty_answer: int = 0
    unknown_labels: Counter[str] = field(default_factory=Counter)
    unknown_examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.rows} rows, {self.kept} examples"]
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicates dropped")
        if self.empty_answer:
            parts.append(f"{self.empty_answer} without an answer dropped")
        if self.unknown_labels:
            top = ", ".join(f"{k!r}×{v}" for k, v in self.unknown_labels.most_common(5))
            parts.append(
                f"{sum(self.unknown_labels.values())} with labels outside the set dropped ({top})"
            )
        return "; ".join(parts)


def load_examples(task: Task) -> tuple[list[Example], LoadReport]:
    """Read the task's data into Examples, reporting every row left out and why."""
    path = resolve_source(task.data.source, task.base_dir)
    rows = read_rows(path, task.data)
    report = LoadReport(rows=len(rows))
    labels = set(task.labels or [])
    seen: set[str] = set()
    out: list[Example] = []
    for loc, row in rows:
        fields = dict(row)
        for name, column in task.data.fields.items():
            if column not in row:
                raise DataError(
                    f"{loc}: column {column!r} (for field {name!r}) not found; "
                    f"columns: {', '.join(row)}"
                )
            fields[name] = row[column]
        if task.answer not in fields:
            raise DataError(
                f"{loc}: answer field {task.answer!r} not found; fields: {', '.join(fields)}"
            )
        answer = fields[task.answer].strip()
        answer = task.data.label_map.get(answer, answer)
        fields[task.answer] = answer
        if not answer:
            report.empty_answer += 1
            continue
        if labels and answer not in labels:
            report.unknown_labels[answer] += 1
            if len(report.unknown_examples) < 5:
                report.unknown_examples.append(f"{loc}: {answer!r}")
            continue
        ex_id = example_id(fields)
        if ex_id in seen:
            report.duplicates += 1
            continue
        seen.add(ex_id)
        # The answer lives in `Example.answer` only: prompts see `fields`, and a template
        # must not be able to show the model the reference it is graded against.
        del fields[task.answer]
        out.append(Example(id=ex_id, fields=fields, answer=answer, source=loc))
    report.kept = len(out)
    if report.unknown_labels:
        log.warning(
            "%s: %d rows have labels outside %s and were left out, e.g. %s",
            path,
            sum(report.unknown_labels.values()),
            sorted(labels),
            "; ".join(report.unknown_examples),
        )
    return out, report
