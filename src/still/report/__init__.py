"""Reports: the comparison as a terminal table, markdown, JSON, HTML and per-example files.

Per-example results go to JSONL and Parquet so pandas (or anything) can open them; the
HTML page (report.html, see `write_html`) is the one to show people: verdict, table, plots.
The code lives in the private modules; this file only names what other packages may use.
"""

from still.report._html import write_html
from still.report._markdown import console, markdown, print_table
from still.report._names import ROLE_NAMES, role_name, role_names
from still.report._sections import Section, markdown_sections, sections
from still.report._tables import (
    agreement_summary,
    estimate_view,
    gguf_summary,
    grade_summary,
    selection_models,
    selection_view,
    train_summary,
    training_view,
)
from still.report._verdict import (
    Verdict,
    gap_problems,
    teacher_problems,
    verdict,
    verdict_lines,
)
from still.report._write import write_reports

__all__ = [
    "ROLE_NAMES",
    "Section",
    "Verdict",
    "agreement_summary",
    "console",
    "estimate_view",
    "gap_problems",
    "gguf_summary",
    "grade_summary",
    "markdown",
    "markdown_sections",
    "print_table",
    "role_name",
    "role_names",
    "sections",
    "selection_models",
    "selection_view",
    "teacher_problems",
    "train_summary",
    "training_view",
    "verdict",
    "verdict_lines",
    "write_html",
    "write_reports",
]
