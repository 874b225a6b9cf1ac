"""`still monitor`: how often the served student agrees with its shadowing teacher, live.

It reads the shadow records `still serve --shadow` stores (`still.shadow.read_shadow`),
over a window (the last N records of each group, the last T minutes, or both), and
summarises them per metadata tag: every `key=value` the requests carried gets its own row
(or only the keys given with `--by`), beside one row for all of them. Each row has the
agreement rate and, when the shadow grades with a task (`--task`), the graders' pass
rates, each with its 95% Wilson interval, so a rate measured on 12 requests reads as the
guess it is. Requests whose teacher gave no answer are counted apart and left out of the
rates; a request the student failed counts as a disagreement.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from still.bench import wilson
from still.shadow import ShadowRecord, read_shadow
from still.store import Store

ALL = "(all)"
"""The name of the row that counts every record."""


@dataclass(frozen=True)
class Rate:
    """k of n, with its 95% Wilson interval."""

    k: int
    n: int
    low: float
    high: float

    @classmethod
    def of(cls, outcomes: Iterable[bool]) -> Rate:
        got = list(outcomes)
        k, n = sum(got), len(got)
        low, high = wilson(k, n)
        return cls(k, n, round(low, 4), round(high, 4))

    @property
    def value(self) -> float | None:
        """k / n; None when n is 0."""
        return self.k / self.n if self.n else None


@dataclass(frozen=True)
class TagSummary:
    """One row of the monitor: the shadow records of one tag in the window."""

    tag: str
    """`key=value`, or `(all)`."""
    records: int
    """Shadowed requests in the window."""
    agreement: Rate
    """Student and teacher agree (over records with a teacher answer)."""
    graded: Rate | None
    """Every grader passed (over graded records); None when none was graded."""
    graders: dict[str, Rate] = field(default_factory=dict)
    """Each grader's pass rate."""
    no_teacher: int = 0
    """Records whose teacher failed or gave no answer: not in the rates."""
    student_errors: int = 0
    """Requests the student failed (counted as disagreements)."""
    first_at: float | None = None
    last_at: float | None = None


def summarise(
    records: Sequence[ShadowRecord], by: Sequence[str] | None = None, last: int | None = None
) -> list[TagSummary]:
    """The monitor's rows: all records, then each tag (`key=value`, sorted).

    Args:
        records: shadow records, oldest first.
        by: only these tag keys get rows (None: every key).
        last: each row counts its last this many records (None: all).
    """
    groups: dict[str, list[ShadowRecord]] = {ALL: list(records)}
    for r in records:
        for key, value in r.tags.items():
            if by is None or key in by:
                groups.setdefault(f"{key}={value}", []).append(r)
    order = [ALL] + sorted(k for k in groups if k != ALL)
    return [_summary(tag, groups[tag][-last:] if last else groups[tag]) for tag in order]


def _summary(tag: str, records: Sequence[ShadowRecord]) -> TagSummary:
    judged = [r for r in records if r.agree is not None]
    graded = [r for r in judged if r.passed is not None]
    names = sorted({name for r in graded for name in r.grades})
    return TagSummary(
        tag=tag,
        records=len(records),
        agreement=Rate.of(bool(r.agree) for r in judged),
        graded=Rate.of(bool(r.passed) for r in graded) if graded else None,
        graders={
            name: Rate.of(r.grades[name] for r in graded if name in r.grades) for name in names
        },
        no_teacher=len(records) - len(judged),
        student_errors=sum(1 for r in records if r.student_error),
        first_at=records[0].created_at if records else None,
        last_at=records[-1].created_at if records else None,
    )


@dataclass(frozen=True)
class Window:
    """Which records the monitor reads."""

    last: int | None = 200
    """Each row's last this many records (None: all)."""
    minutes: float | None = None
    """Only the records of the last this many minutes (None: any age)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Only records carrying these tags."""
    model: str | None = None
    """Only this student model."""
    by: Sequence[str] | None = None
    """Only these tag keys get rows (None: every key)."""


def read_summaries(db: str | Path, window: Window, now: float | None = None) -> list[TagSummary]:
    """The monitor's rows for the records of `db` in `window`."""
    since = None
    if window.minutes is not None:
        since = (now if now is not None else time.time()) - window.minutes * 60
    with Store(db) as store:
        records = read_shadow(store, metadata=window.metadata, model=window.model, since=since)
    return summarise(records, window.by, window.last)


def to_json(summaries: Sequence[TagSummary]) -> list[dict[str, Any]]:
    """The rows as plain data (`still monitor --json`): rates as k, n, value, low, high."""

    def rate(r: Rate | None) -> dict[str, Any] | None:
        return None if r is None else {**asdict(r), "value": r.value}

    return [
        {
            **asdict(s),
            "agreement": rate(s.agreement),
            "graded": rate(s.graded),
            "graders": {name: rate(r) for name, r in s.graders.items()},
        }
        for s in summaries
    ]


def table(summaries: Sequence[TagSummary], title: str = "") -> Any:
    """The rows as a rich Table: per tag, n, agreement and each grader with intervals."""
    from rich.table import Table

    names = sorted({name for s in summaries for name in s.graders})
    graded = len(names) > 1  # with one grader, its column says it all
    t = Table(title=title or None, title_justify="left")
    t.add_column("tag")
    t.add_column("n", justify="right")
    t.add_column("agreement [95% CI]", justify="right")
    if graded:
        t.add_column("all graders pass", justify="right")
    for name in names:
        t.add_column(name, justify="right")
    t.add_column("no teacher", justify="right")
    t.add_column("student errors", justify="right")
    t.add_column("last", justify="right")
    for s in summaries:
        row = [s.tag, str(s.agreement.n), _cell(s.agreement)]
        if graded:
            row.append(_cell(s.graded))
        row += [_cell(s.graders.get(name)) for name in names]
        row += [str(s.no_teacher), str(s.student_errors), _ago(s.last_at)]
        t.add_row(*row, style="bold" if s.tag == ALL else None)
    return t


def _cell(r: Rate | None) -> str:
    if r is None or r.value is None:
        return "-"
    return f"{r.value:.1%} [{r.low:.1%}, {r.high:.1%}]"


def _ago(at: float | None, now: float | None = None) -> str:
    """How long ago, shortly.

    >>> _ago(100.0, 190.0), _ago(None)
    ('1m30s ago', '-')
    """
    if at is None:
        return "-"
    secs = max(0, int((now if now is not None else time.time()) - at))
    if secs < 60:
        return f"{secs}s ago"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s ago"
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m ago"
