"""The comparison as a table: its columns and cells, in markdown (report.md) and on the
terminal (a rich table), each followed by the verdict. report.html shows the same cells.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from still.bench import Comparison, ModelResult
from still.report._names import role_name
from still.report._verdict import verdict_lines

COLUMNS = [
    "role",
    "model",
    "prompt",
    "accuracy [95% CI]",
    "unparseable",
    "errors",
    "s/example (mean)",
    "s/example (p95)",
    "TTFT p50 (s)",
    "tok/s",
    "prompt tok",
    "$ / 1k examples",
]


def cells(r: ModelResult, names: Mapping[str, str] | None = None) -> list[str]:
    """One role's row of the table, as text (NaN shows as n/a); the role called by `names`
    (a run's role_names; None: the defaults)."""

    def f(x: float, fmt: str) -> str:
        return "n/a" if math.isnan(x) else format(x, fmt)

    return [
        role_name(r.role, names),
        r.model,
        r.prompt,
        f"{r.accuracy:.1%} [{r.ci_low:.1%}, {r.ci_high:.1%}]",
        f"{r.unparseable}/{r.n}",
        f"{r.errors}/{r.n}",
        f(r.mean_latency_s, ".3f"),
        f(r.p95_latency_s, ".3f"),
        f(r.ttft_p50_s, ".3f"),
        f(r.tokens_per_s, ".0f"),
        f(r.prompt_tokens_mean, ".0f"),
        "n/a" if r.cost_per_1k is None else f"{r.cost_per_1k:.4f}",
    ]


def short(model: str, width: int = 48) -> str:
    """A model reference short enough for a table: a path keeps its last component."""
    scheme, sep, rest = model.partition(":")
    if sep and "/" in rest:
        model = f"{scheme}:…/{rest.rstrip('/').rsplit('/', 1)[-1]}"
    return model if len(model) <= width else "…" + model[-(width - 1) :]


def baseline_cells(cmp: Comparison) -> list[list[str]]:
    """Rows for the no-model baselines, beside the roles: accuracy only."""
    base = cmp.baselines
    if base is None:
        return []
    blank = ["—"] * (len(COLUMNS) - 4)
    rows = []
    if base.majority is not None and base.majority_ci is not None:
        lo, hi = base.majority_ci
        rows.append(
            ["majority baseline", f"always {base.majority_label!r}", "—",
             f"{base.majority:.1%} [{lo:.1%}, {hi:.1%}]", *blank]
        )  # fmt: skip
    if base.chance is not None:
        rows.append(["chance", "uniform over the labels", "—", f"{base.chance:.1%}", *blank])
    return rows


def markdown(
    cmp: Comparison, title: str = "Comparison", *, names: Mapping[str, str] | None = None
) -> str:
    """The comparison as a markdown table (baselines beneath the roles) with the verdict,
    roles called by `names` (a run's role_names; None: the defaults)."""
    lines = [f"## {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in cmp.results:
        row = cells(r, names)
        row[1] = f"`{short(row[1])}`"
        lines.append("| " + " | ".join(row) + " |")
    for row in baseline_cells(cmp):
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(verdict_text(cmp, names))
    return "\n".join(lines) + "\n"


def verdict_text(cmp: Comparison, names: Mapping[str, str] | None = None) -> str:
    """The verdict's lines as one paragraph each (see still.report._verdict)."""
    return "\n\n".join(verdict_lines(cmp, names))


def console() -> Any:
    """A rich console at least 180 columns wide: pipes and CI logs default to 80, which
    folds every table cell into three lines."""
    from rich.console import Console

    return Console(width=max(Console().width, 180))


def print_table(
    cmp: Comparison, title: str = "Comparison", *, names: Mapping[str, str] | None = None
) -> None:
    """Print the comparison as a rich table on the terminal, roles called by `names`."""
    from rich.table import Table

    table = Table(title=title)
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("role", "model", "prompt") else "right")
    for r in cmp.results:
        row = cells(r, names)
        row[1] = short(row[1], 40)
        table.add_row(*row)
    for row in baseline_cells(cmp):
        table.add_row(*row, style="dim")
    out = console()
    out.print(table)
    for line in verdict_lines(cmp, names):
        out.print(line)
