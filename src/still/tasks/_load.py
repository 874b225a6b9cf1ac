"""Loading a task file and its examples, with every problem reported and none hidden.

`load_task` validates the YAML against the schema, and compiles the prompt templates,
before anything expensive happens; an error is one line naming the file, the line and the
field, and says what to do (`task.yaml: data.sourc (line 7): unknown field, did you mean
`source`?`). `load_examples` turns the data file's rows into `Example`s and returns a
`LoadReport` saying what was left out and why: duplicate rows, rows without an answer, and
rows whose answer is outside the declared label set (those are also logged as a warning on
the "still.tasks" logger, since they usually mean a missing `label_map` entry).

Imported traffic (`data.source: store:...`) goes through the same steps: each completion is
a row of its metadata tags and `recorded` (its answer), its example keeps the recorded
conversation and takes its id from it, and `LoadReport.recorded` keeps the completion
itself, the teacher's recorded answer, for the pipeline to use instead of asking the
teacher.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from still.errors import StillError
from still.tasks import _schema
from still.tasks._example import Example, dedupe, example_id
from still.tasks._schema import RECORDED, GraderSpec, Task
from still.tasks._sources import DataError, read_recorded, read_rows, resolve_source, store_file
from still.tasks._templates import TemplateError, check_syntax
from still.types import Completion

log = logging.getLogger("still.tasks")

RESERVED = ("labels", "fewshot", "answer")
"""Names templates see besides the example's fields; no data field may take them."""

_KNOWN_KEYS = sorted(
    {
        key
        for model in vars(_schema).values()
        if isinstance(model, type) and issubclass(model, BaseModel)
        for key in model.model_fields
    }
    - {"base_dir"}
)
"""Every field name the schema knows, for "did you mean" on an unknown one."""


class TaskError(StillError):
    """A task file is unreadable or invalid; the message names the file, line and field."""


def load_task(path: str | Path) -> Task:
    """Read and validate a task YAML file.

    Args:
        path: The task file. Its folder becomes `task.base_dir`, against which relative
            data sources are resolved.

    Returns:
        The validated task.

    Raises:
        TaskError: The file is missing, is not valid YAML, or does not fit the schema; the
            message names the file and the line (and, for schema errors, the field).
    """
    p = Path(path)
    root, raw = _read_yaml(p, "task file")
    if not isinstance(raw, dict):
        raise TaskError(
            f"{p}: a task file must be a mapping of fields (name, data, answer, "
            f"prompts, models, ...), got {type(raw).__name__}"
        )
    raw = _extended(p, raw, seen=(p.resolve(),))
    try:
        task = Task.model_validate({**raw, "base_dir": p.resolve().parent})
    except ValidationError as exc:
        raise TaskError(_schema_message(p, root, exc)) from exc
    for role, prompt in task.prompts.items():
        for part in ("system", "template"):
            source = getattr(prompt, part)
            if source is not None:
                where = ("prompts", role, part)
                try:
                    check_syntax(source, name=".".join(where))
                except TemplateError as exc:
                    raise TemplateError(
                        f"{p}:{_locate(root, where)[1]}: {exc}; fix the template there"
                    ) from exc
    return task


EXTENDS = "extends"
"""A task file's field naming another task file it starts from (a variant of a task)."""


def _extended(p: Path, raw: dict[str, Any], seen: tuple[Path, ...]) -> dict[str, Any]:
    """`raw` on top of the task file its `extends:` names (relative to `p`'s folder), if
    any: mappings merge key by key, anything else (a list, a string) is replaced whole.

    A variant (the same task on other models, another split) then says only what differs
    and cannot drift from its base. Relative paths in either file (data sources) are read
    from the extending file's folder, which becomes the task's folder.
    """
    ref = raw.pop(EXTENDS, None)
    if ref is None:
        return raw
    if not isinstance(ref, str) or not ref.strip():
        raise TaskError(f"{p}: {EXTENDS}: must be the path of another task file")
    base = (p.parent / ref).resolve()
    if base in seen:
        chain = " -> ".join(str(s) for s in (*seen, base))
        raise TaskError(f"{p}: {EXTENDS}: {ref} extends itself ({chain}); break the cycle")
    if not base.is_file():
        raise TaskError(f"{p}: {EXTENDS}: no task file {base}; give a path relative to {p.parent}")
    _, base_raw = _read_yaml(base, "task file")
    if not isinstance(base_raw, dict):
        raise TaskError(f"{base}: a task file must be a mapping of fields, extended by {p}")
    return _merge(_extended(base, base_raw, (*seen, base)), raw)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on `base`: nested mappings merged, other values replaced."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        both = isinstance(old, dict) and isinstance(value, dict)
        out[key] = _merge(old, value) if both else value  # type: ignore[arg-type]
    return out


def load_grader_spec(path: str | Path) -> GraderSpec:
    """Read one grader (OpenAI grader JSON, as JSON or YAML) from a file, validated.

    Raises:
        TaskError: the file is unreadable, not JSON/YAML, or not a grader; the message
            names the file, the line and the field, on one line.
    """
    p = Path(path)
    root, raw = _read_yaml(p, "grader file")
    try:
        spec: GraderSpec = TypeAdapter(GraderSpec).validate_python(raw)
    except ValidationError as exc:
        raise TaskError(_schema_message(p, root, exc, what="grader", schema=None)) from exc
    return spec


def _read_yaml(p: Path, what: str) -> tuple[yaml.Node | None, object]:
    """A YAML (or JSON) file's node tree, for line numbers, and its value; an unreadable
    file, bytes that are not UTF-8, a duplicate key or a syntax error is a TaskError
    naming the file and the line."""
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise TaskError(f"{p}: cannot read the {what}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TaskError(
            f"{p}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); save the file as UTF-8"
        ) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_duplicate_keys(p, root)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).replace("\n", " ")
        raise TaskError(f"{p}: invalid YAML{where}: {problem}; fix the syntax there") from exc
    return root, raw


def _schema_message(
    path: Path,
    root: yaml.Node | None,
    exc: ValidationError,
    what: str = "task",
    schema: type[BaseModel] | None = Task,
) -> str:
    """One line for all invalid fields: `task.yaml: split.heldout (line 7): <why> (got 'x')`,
    further fields after `; `.

    A union field (`heldout: int | float`) fails once per member, with the member's type
    appended to the location; those are merged into one part for the field. A missing
    field says to add it; an unknown one, to remove it or fix its spelling (with the
    closest known name).
    """
    merged: dict[tuple[int | str, ...], tuple[int, list[str], str]] = {}
    for err in exc.errors():
        loc, line = _locate(root, tuple(err["loc"]))
        got = err.get("input")
        shown = f" (got {got!r})" if isinstance(got, str | int | float | bool) else ""
        if err["type"] == "missing":
            msg, shown = f"required, add `{loc[-1]}:`" if loc else "required", ""
        elif err["type"] == "extra_forbidden":
            msg, shown = _unknown_field(loc, exc.errors(), schema), ""
        elif err["type"] == "union_tag_invalid":  # a grader `type` no grader has
            loc, line = _locate(root, (*err["loc"], "type"))
            ctx = err.get("ctx") or {}
            msg = f"unknown type {ctx.get('tag')!r}; use one of {ctx.get('expected_tags')}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        _, msgs, _ = merged.setdefault(loc, (line, [], shown))
        if msg not in msgs:
            msgs.append(msg)
    parts = [
        f"{'.'.join(map(str, loc)) or f'({what})'} (line {line}): {' or '.join(msgs)}{shown}"
        for loc, (line, msgs, shown) in merged.items()
    ]
    return f"{path}: " + "; ".join(parts)


def _unknown_field(
    loc: tuple[int | str, ...], errors: list[Any], schema: type[BaseModel] | None
) -> str:
    """An unknown field's message and what to do: the closest known name, if any (a field
    the same object misses counts first: `sourc` beside a missing `source`)."""
    missing = [
        str(e["loc"][-1]) for e in errors if e["type"] == "missing" and e["loc"][:-1] == loc[:-1]
    ]
    known = (_sibling_fields(schema, loc[:-1]) if schema else []) or _KNOWN_KEYS
    close = difflib.get_close_matches(str(loc[-1]), missing + known, n=1, cutoff=0.75)
    hint = f"did you mean `{close[0]}`?" if close else "remove it or fix its spelling"
    return f"unknown field, {hint}"


def _sibling_fields(schema: type[BaseModel], parent: tuple[int | str, ...]) -> list[str]:
    """The field names of the schema object at `parent`, found by walking `schema`
    along the error's location: a typo is matched against its own block's keys first, so
    `data.store.modle` suggests `model`, not `mode` from `generation:`. List indices, dict
    keys and union tags in the location match no field and are stepped over."""
    current = [schema]
    for key in parent:
        inner = [
            m
            for model in current
            if isinstance(key, str) and key in model.model_fields
            for m in _models_in(model.model_fields[key].annotation)
        ]
        current = inner or current
    return sorted({f for model in current for f in model.model_fields} - {"base_dir"})


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (`X | None`, `list[X]`, `dict[str, X]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _locate(
    root: yaml.Node | None, loc: tuple[int | str, ...]
) -> tuple[tuple[int | str, ...], int]:
    """A pydantic error location and the 1-based line of its YAML node.

    The line is that of the deepest node of `loc` present in the file (a missing field
    points at its parent). Location parts below a scalar value (union member tags such as
    `int`, `float`) are cut off.
    """
    if root is None:
        return loc, 1
    node: yaml.Node = root
    line = node.start_mark.line + 1
    for depth, key in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            match = [
                (k, v)
                for k, v in node.value
                if isinstance(k, yaml.ScalarNode) and k.value == str(key)
            ]
            if not match:
                break
            line = match[0][0].start_mark.line + 1
            node = match[0][1]
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(key, int)
            and 0 <= key < len(node.value)
        ):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            if isinstance(node, yaml.ScalarNode):
                return loc[:depth], line
            break
    return loc, line


def _check_duplicate_keys(path: Path, node: yaml.Node | None) -> None:
    """PyYAML silently keeps the last of two equal keys; a task file should not."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                if k.value in seen:
                    raise TaskError(
                        f"{path}:{k.start_mark.line + 1}: duplicate key "
                        f"{k.value!r} (first on line {seen[k.value]}); keep one of them"
                    )
                seen[k.value] = k.start_mark.line + 1
            _check_duplicate_keys(path, v)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicate_keys(path, item)


@dataclass
class LoadReport:
    """What loading read, kept and left out, and why.

    Attributes:
        rows: Rows read from the data file.
        kept: Examples kept (unique, with an answer in the label set, if any).
        duplicates: Rows dropped because an earlier row had the same content.
        empty_answer: Rows dropped because their answer was empty.
        unknown_labels: Answers outside `task.labels` -> how many rows had them (dropped).
        unknown_examples: The first 5 such rows, as `"file:line: 'value'"`.
        source: The data file (or store file) read.
        recorded: For a `store:` source, the imported completion behind each kept example
            (by example id): the teacher's recorded answer.
    """

    rows: int = 0
    kept: int = 0
    duplicates: int = 0
    empty_answer: int = 0
    unknown_labels: dict[str, int] = field(default_factory=dict)
    unknown_examples: list[str] = field(default_factory=list)
    source: str = ""
    recorded: dict[str, Completion] = field(default_factory=dict)

    def nothing_kept(self) -> str:
        """Why no example was kept and what to do, as one line naming the data file."""
        if not self.rows:
            todo = "it has no rows: add examples (a header line, then one row per example)"
        elif self.unknown_labels:
            todo = "map its answers onto the labels with data.label_map, or add them to labels"
        elif self.empty_answer:
            todo = "every answer is empty: check that `answer:` names the answer column"
        else:
            todo = "check the file and the task's data: settings"
        return f"{self.source}: no usable examples ({self.summary()}); {todo}"

    def summary(self) -> str:
        """One line for people, e.g. "120 rows, 100 examples; 3 duplicates dropped; ..."."""
        parts = [f"{self.rows} rows, {self.kept} examples"]
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicates dropped")
        if self.empty_answer:
            parts.append(f"{self.empty_answer} without an answer dropped")
        if self.unknown_labels:
            top = sorted(self.unknown_labels.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{k!r}×{v}" for k, v in top[:5])
            more = f", +{len(top) - 5} more" if len(top) > 5 else ""
            parts.append(
                f"{sum(self.unknown_labels.values())} with labels outside the set "
                f"dropped ({shown}{more})"
            )
        return "; ".join(parts)


def load_examples(task: Task) -> tuple[list[Example], LoadReport]:
    """Read a task's data into Examples, reporting every row left out and why.

    Per row: columns are renamed by `data.fields` (a renamed column is no longer
    available under its old name), the answer field is stripped and rewritten by
    `data.label_map`, then the row is dropped if its answer is empty or (with `labels`)
    outside the label set, and deduplicated by content id. The answer is taken out of
    `Example.fields`, so prompts cannot show it.

    Args:
        task: A validated task (see `load_task`).

    Returns:
        The unique examples in file order, and the report.

    With a `store:` source, a completion without the answer tag counts as a row without
    an answer (traffic is tagged unevenly), its `recorded` answer is not one of its fields,
    and its id is a hash of its messages alone (tags vary per request: the same
    conversation asked twice is one example, so it can never sit in two splits).

    Raises:
        DataError: The file is missing or malformed, a column named in `data.fields` or
            the answer field is missing (the message lists the available ones; with a
            `store:` source, when no completion has it), a field takes a reserved name
            (`labels`, `fewshot`, or `answer` when not the answer), or a `store:` source
            has no store file or no matching completion.
    """
    recorded: list[Completion] = []
    if task.from_store:
        traffic = read_recorded(task.data.source, task.data, task.base_dir)
        path = store_file(task.data.source, task.base_dir)
        rows = [(r.location, r.row) for r in traffic]
        recorded = [r.completion for r in traffic]
        _require_answer_tag(task, rows)
    else:
        path = resolve_source(task.data.source, task.base_dir)
        rows = read_rows(path, task.data, task.base_dir)
    report = LoadReport(rows=len(rows), source=str(path))
    labels = set(task.labels or [])
    unknown: Counter[str] = Counter()
    candidates: list[Example] = []
    for n, (loc, row) in enumerate(rows):
        fields = _rename(loc, row, task.data.fields)
        if task.from_store and task.answer != RECORDED:
            fields.pop(RECORDED, None)  # the teacher's answer: not a field of the example
        if task.from_store and task.answer not in fields:
            fields[task.answer] = ""  # untagged traffic: a row without a reference
        if task.answer not in fields:
            raise DataError(
                f"{loc}: answer field {task.answer!r} not found; set `answer:` (or map a "
                f"column with data.fields) to one of: {', '.join(fields) or '(none)'}"
            )
        raw = fields.pop(task.answer).strip()
        answer = task.data.label_map.get(raw, raw)
        clash = [name for name in RESERVED if name in fields]
        if clash:
            raise DataError(
                f"{loc}: field name(s) {', '.join(clash)} are reserved in "
                f"templates; rename the column with data.fields"
            )
        if not answer:
            report.empty_answer += 1
            continue
        if labels and answer not in labels:
            unknown[answer] += 1
            if len(report.unknown_examples) < 5:
                report.unknown_examples.append(f"{loc}: {answer!r}")
            continue
        if task.from_store:
            msgs = recorded[n].request.messages
            ex_id = example_id({"messages": json.dumps([m.model_dump() for m in msgs])})
            candidates.append(
                Example(id=ex_id, fields=fields, answer=answer, source=loc, messages=msgs)
            )
            report.recorded.setdefault(ex_id, recorded[n])  # dedupe keeps the first too
            continue
        ex_id = example_id({**fields, task.answer: answer})
        candidates.append(Example(id=ex_id, fields=fields, answer=answer, source=loc))
    examples, report.duplicates = dedupe(candidates)
    report.kept = len(examples)
    report.unknown_labels = dict(unknown.most_common())
    if unknown:
        log.warning(
            "%s: %d rows with answers outside the labels %s were left out: %s "
            "(e.g. %s); map them with data.label_map or add them to labels",
            path,
            sum(unknown.values()),
            sorted(labels),
            ", ".join(f"{k!r}×{v}" for k, v in unknown.most_common(10)),
            "; ".join(report.unknown_examples),
        )
    return examples, report


def _require_answer_tag(task: Task, rows: list[tuple[str, dict[str, str]]]) -> None:
    """A store source's answer tag must be on some completion: on none, it is a typo."""
    column = task.data.fields.get(task.answer, task.answer)
    if any(column in row for _, row in rows):
        return
    tags = sorted({k for _, row in rows for k in row} - {RECORDED})
    raise DataError(
        f"data.source {task.data.source!r}: answer {task.answer!r} is a tag of none of the "
        f"{len(rows)} imported completions read; set `answer: {RECORDED}` (the recorded "
        f"answer is the reference) or a tag they carry: {', '.join(tags) or '(none)'}"
    )


def _rename(loc: str, row: dict[str, str], mapping: dict[str, str]) -> dict[str, str]:
    """Apply `data.fields` ({field: column}); unnamed columns keep their names."""
    if not mapping:
        return dict(row)
    missing = [column for column in mapping.values() if column not in row]
    if missing:
        file = loc.rsplit(":", 1)[0]
        raise DataError(
            f"{loc}: column {missing[0]!r} (data.fields) not found in {file}; "
            f"available columns: {', '.join(row) or '(none)'}"
        )
    renamed = set(mapping.values())
    out = {k: v for k, v in row.items() if k not in renamed}
    out.update({name: row[column] for name, column in mapping.items()})
    return out
