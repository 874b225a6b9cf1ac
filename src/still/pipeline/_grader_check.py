"""Grade the grader: how often a grader agrees with gold labels, before it is trusted.

A training filter is only as good as its grader. `check_grader` runs one grader of a task
(a judge, usually) over a role's stored answers and compares its pass/fail verdicts with
gold verdicts: a gold file (JSONL, `{"example_id": ..., "passed": true|false}`), or by
default the task's reference check (its first `string_check`, e.g. "the answer names the
state"). The result (accuracy with its Wilson interval, Cohen's kappa, the confusion
matrix) is saved in the run folder (`grader_checks.json`); export refuses to filter on a
judge whose recorded kappa is below the task's `curate.min_kappa` unless forced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from still.bench import Agreement, agreement, check_trust
from still.graders import Grader, ModelGrader, StringCheck, answer_of, grade, walk
from still.graders import prepare_graders as _prepare
from still.pipeline._run import Run, StageError
from still.tasks import DataError

CHECKS_FILE = "grader_checks.json"


def find_grader(graders: Sequence[Grader], name: str) -> Grader | None:
    """A grader by name, looking inside multi graders too."""
    return next((g for g in walk(graders) if g.name == name), None)


def _reference_check(graders: Sequence[Grader]) -> StringCheck | None:
    return next((g for g in walk(graders) if isinstance(g, StringCheck)), None)


def read_gold(path: Path) -> dict[str, str]:
    """example id -> "pass"/"fail" from a JSONL gold file; bad lines name file and line."""
    out: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            passed = row["passed"]
            if not isinstance(passed, bool):
                raise ValueError("'passed' must be true or false")
            out[str(row["example_id"])] = "pass" if passed else "fail"
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{path}:{n}: not a gold row ({exc}); write "
                '{"example_id": "<id>", "passed": true or false} on each line'
            ) from None
    return out


def load_grader_file(path: Path) -> Grader:
    """A grader from a JSON or YAML file in OpenAI grader JSON shape (to try a candidate
    judge without editing the task).

    Raises:
        TaskError: the file is not YAML/JSON or not a grader (naming file, line and field),
            or the grader cannot be built (a bad formula, an unknown metric).
    """
    from still.errors import GraderError
    from still.graders import build_grader
    from still.tasks import TaskError, load_grader_spec

    spec = load_grader_spec(path)
    try:
        return build_grader(spec)
    except GraderError as exc:  # a FormulaError, an unknown metric: the file's fault
        named = "" if repr(spec.name) in str(exc) else f"grader {spec.name!r}: "
        raise TaskError(f"{path}: {named}{exc}") from exc


def check_grader(
    run: Run,
    name: str | None = None,
    role: str = "teacher",
    split: str = "train",
    gold_file: Path | None = None,
    grader: Grader | None = None,
) -> Agreement:
    """Agreement of a grader with gold verdicts on a role's stored answers.

    Args:
        run: the run (its task's graders, its store).
        name: the task's grader to check (or one inside a multi grader)...
        grader: ...or a grader from elsewhere (`load_grader_file`).
        role, split: whose stored answers are judged.
        gold_file: gold verdicts; default: the task's reference check.

    Raises:
        StageError: no such grader, no gold to compare with, or no stored answers.
    """
    if split == "heldout":
        raise StageError(
            "check-grader chooses whether a grader can be trusted: check it on train or "
            "validation; the held-out test split is read only by the final comparison"
        )
    graders = run.graders
    g = grader if grader is not None else find_grader(graders, name or "")
    if g is None:
        raise StageError(f"no grader {name!r}; the task's graders: {_names(graders)}")
    name = g.name
    examples = run.examples(split)
    comps = run.stored(role, split, include_failed=True)
    if not comps:
        raise StageError(f"no stored {role} answers on {split}: run `still capture` first")
    if gold_file is not None:
        gold = read_gold(gold_file)
    else:
        ref = _reference_check(graders)
        if ref is None or ref is g:
            raise StageError(
                "no reference check to compare with: pass a gold file (--gold) or add a "
                "string_check grader against the reference answer"
            )
        gold = {}
        for ex in examples:
            (verdict,) = grade([ref], ex, comps.get(ex.id), run.task.labels)
            if verdict.error is None or verdict.error == "unparseable":
                gold[ex.id] = "pass" if verdict.passed else "fail"
    pairs = [(ex, comps.get(ex.id)) for ex in examples if ex.id in gold]
    _prepare([g], pairs, run.task.labels, run.judge())
    golds: list[str] = []
    preds: list[str | None] = []
    for ex, comp in pairs:
        if answer_of(comp, run.task.labels).answer is None:
            continue  # nothing to judge: the answer itself failed
        (verdict,) = grade([g], ex, comp, run.task.labels)
        golds.append(gold[ex.id])
        preds.append(None if verdict.error else ("pass" if verdict.passed else "fail"))
    if not golds:
        raise StageError(f"no answers with a gold verdict to check {name!r} on")
    result = agreement(golds, preds)
    _save(run, g, role, split, result, gold_file)
    return result


def fingerprint(grader: Grader) -> str:
    """A hash of a grader's whole configuration (model, messages, labels, thresholds,
    sampling parameters; sub-graders of a multi grader included), so a recorded check
    vouches for exactly the judge it measured: change the judge's model or prompt and it
    must be checked again, and another judge of the same name is not vouched for."""

    def plain(x: Any) -> Any:
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)
                    if not f.name.startswith("_")}  # fmt: skip
        if hasattr(x, "model_dump"):
            return plain(x.model_dump())
        if isinstance(x, Mapping):
            return {str(k): plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, (str, int, float, bool)) or x is None:
            return x
        return {"type": type(x).__name__, **{k: plain(v) for k, v in vars(x).items()
                                             if not k.startswith("_")}}  # fmt: skip

    data = {"type": type(grader).__name__, "config": plain(grader)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _key(grader: Grader) -> str:
    return f"{grader.name}#{fingerprint(grader)}"


def _save(run: Run, g: Grader, role: str, split: str, a: Agreement, gold_file: Path | None) -> None:
    path = run.dir / CHECKS_FILE
    checks: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    checks[_key(g)] = {
        "grader": g.name,
        "fingerprint": fingerprint(g),
        "role": role,
        "split": split,
        "gold": str(gold_file) if gold_file else "reference check",
        **a.as_record(),
    }
    path.write_text(json.dumps(checks, indent=2))


def judged_names(graders: Sequence[Grader], names: set[str] | None = None) -> set[str]:
    """Names of the graders (among `names`, or all) whose verdict comes from a judge model:
    judges themselves and multi graders containing one."""
    return {
        g.name
        for g in graders
        if (names is None or g.name in names) and any(isinstance(s, ModelGrader) for s in walk([g]))
    }


def recorded_check(run: Run, grader: Grader) -> Agreement | None:
    """The agreement `still check-grader` recorded for this exact grader configuration
    (see `fingerprint`), or None: never checked, or checked in another configuration."""
    path = run.dir / CHECKS_FILE
    checks: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    record = checks.get(_key(grader))
    return Agreement.from_record(record) if record is not None else None


def require_trusted(run: Run, names: set[str], min_kappa: float, force: bool) -> None:
    """Refuse (GraderNotTrusted) when a judged grader in `names` has no recorded check of
    its current configuration with kappa >= min_kappa, unless forced (`still.bench.
    check_trust` decides)."""
    by_name = {g.name: g for g in run.graders}
    for name in sorted(judged_names(run.graders, names)):
        check_trust(recorded_check(run, by_name[name]), min_kappa, force, grader=name)


def _names(graders: Sequence[Grader]) -> str:
    return ", ".join(g.name for g in graders) or "none"
