"""Reports: the comparison as a terminal table, markdown, JSON, HTML and per-example files.

Per-example results go to JSONL and Parquet so pandas (or anything) can open them; the
HTML page (report.html, see `write_html`) is the one to show people: verdict, table, plots.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from still.bench import Comparison, ModelResult
from still.report._html import write_html
from still.report._names import ROLE_NAMES
from still.report._sections import Section, markdown_sections, sections
from still.report._tables import (
    agreement_summary,
    estimate_view,
    gguf_summary,
    grade_summary,
    selection_models,
    selection_view,
    train_summary,
)
from still.report._verdict import Verdict, gap_problems, verdict, verdict_lines

__all__ = [
    "ROLE_NAMES",
    "Verdict",
    "gap_problems",
    "verdict",
    "verdict_lines",
    "Section",
    "agreement_summary",
    "console",
    "estimate_view",
    "gguf_summary",
    "grade_summary",
    "sections",
    "selection_models",
    "selection_view",
    "markdown",
    "print_table",
    "train_summary",
    "write_html",
    "write_reports",
]

_COLUMNS = [
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


def _cells(r: ModelResult) -> list[str]:
    def f(x: float, fmt: str) -> str:
        return "n/a" if math.isnan(x) else format(x, fmt)

    return [
        ROLE_NAMES.get(r.role, r.role),
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


def _short(model: str, width: int = 48) -> str:
    """A model reference short enough for a table: a path keeps its last component."""
    scheme, sep, rest = model.partition(":")
    if sep and "/" in rest:
        model = f"{scheme}:…/{rest.rstrip('/').rsplit('/', 1)[-1]}"
    return model if len(model) <= width else "…" + model[-(width - 1) :]


def _baseline_cells(cmp: Comparison) -> list[list[str]]:
    """Rows for the no-model baselines, beside the roles: accuracy only."""
    base = cmp.baselines
    if base is None:
        return []
    blank = ["—"] * (len(_COLUMNS) - 4)
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


def markdown(cmp: Comparison, title: str = "Comparison") -> str:
    """The comparison as a markdown table (baselines beneath the roles) with the verdict."""
    lines = [f"## {title}", "", "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for r in cmp.results:
        cells = _cells(r)
        cells[1] = f"`{_short(cells[1])}`"
        lines.append("| " + " | ".join(cells) + " |")
    for cells in _baseline_cells(cmp):
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(_verdict(cmp))
    return "\n".join(lines) + "\n"


def _verdict(cmp: Comparison) -> str:
    """The verdict's lines as one paragraph each (see still.report._verdict)."""
    return "\n\n".join(verdict_lines(cmp))


def console() -> Any:
    """A rich console at least 180 columns wide: pipes and CI logs default to 80, which
    folds every table cell into three lines."""
    from rich.console import Console

    return Console(width=max(Console().width, 180))


def print_table(cmp: Comparison, title: str = "Comparison") -> None:
    """Print the comparison as a rich table on the terminal."""
    from rich.table import Table

    table = Table(title=title)
    for c in _COLUMNS:
        table.add_column(c, justify="left" if c in ("role", "model", "prompt") else "right")
    for r in cmp.results:
        cells = _cells(r)
        cells[1] = _short(cells[1], 40)
        table.add_row(*cells)
    for cells in _baseline_cells(cmp):
        table.add_row(*cells, style="dim")
    out = console()
    out.print(table)
    for line in verdict_lines(cmp):
        out.print(line)


def write_reports(
    cmp: Comparison,
    rows: Sequence[dict[str, Any]],
    out_dir: Path,
    title: str,
    extra: dict[str, Any] | None = None,
    *,
    labels: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write report.md, report.json, report.html, results.jsonl and results.parquet into
    `out_dir`. `labels` (a label task's labels) add confusion matrices to report.html;
    without them the labels of `extra["label_distribution"]` (see report_extra) are used.

    report.html needs matplotlib; without it the page is skipped with a warning rather
    than failing a benchmark whose other reports are already written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out_dir / "report.md",
        "json": out_dir / "report.json",
        "jsonl": out_dir / "results.jsonl",
        "parquet": out_dir / "results.parquet",
    }
    paths["markdown"].write_text(markdown(cmp, title) + markdown_sections(extra or {}))
    paths["json"].write_text(json.dumps({**cmp.as_dict(), **(extra or {})}, indent=1))
    with paths["jsonl"].open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    import pandas as pd

    pd.DataFrame(list(rows)).to_parquet(paths["parquet"], index=False)
    dist = (extra or {}).get("label_distribution") or []
    if labels is None and dist:
        labels = dist[0]["labels"]
    try:
        paths["html"] = write_html(
            cmp, rows, out_dir / "report.html", title=title, labels=labels, extra=extra
        )
    except ModuleNotFoundError as e:  # matplotlib is not a core dependency
        if e.name is None or not e.name.startswith("matplotlib"):
            raise
        logging.getLogger(__name__).warning(
            "report.html not written: matplotlib is not installed (pip install matplotlib)"
        )
    return paths
