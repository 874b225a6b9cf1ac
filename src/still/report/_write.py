"""Every report file of a comparison at once: markdown, JSON, HTML and per-example rows.

Per-example results go to JSONL and Parquet so pandas (or anything) can open them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from still.bench import Comparison
from still.report._html import write_html
from still.report._markdown import markdown
from still.report._sections import markdown_sections


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
    Roles are called by `extra["role_names"]` (the run's, see still.report.role_names) in
    every file, report.json included; by the defaults without it.

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
    names = (extra or {}).get("role_names")
    paths["markdown"].write_text(markdown(cmp, title, names=names) + markdown_sections(extra or {}))
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
