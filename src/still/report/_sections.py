"""The report's sections beyond the comparison table, as data rendered twice.

`report_extra` (still.pipeline) computes the statistics; `sections` turns them into
titled tables and sentences once, and report.md and report.html each render the same
`Section` list, so the two files cannot disagree or drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from still.report._names import ROLE_NAMES


@dataclass
class Section:
    """A titled block: sentences, then a table (header and rows of cell text)."""

    name: str  # stable id (data-section in the HTML)
    title: str | None
    notes: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.1%}" if signed else f"{x:.1%}"


def _p(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2g}"


def sections(extra: dict[str, Any]) -> list[Section]:
    """Every section the extra statistics make, in reading order; empty ones left out."""
    out = [
        _splits(extra),
        _teacher_check(extra),
        _gap(extra),
        _paired(extra),
        _economics(extra),
        _labels(extra),
        _position(extra),
        _lengths(extra),
        _selection(extra),
    ]
    return [s for s in out if s is not None and (s.notes or s.rows)]


def _splits(extra: dict[str, Any]) -> Section | None:
    """Where each number comes from, and what was chosen on validation."""
    splits = extra.get("splits") or {}
    if not splits:
        return None
    s = Section(
        "splits",
        "Where the numbers come from",
        notes=[
            f"Train: {splits.get('train', 0)} examples (the teacher answers them; students "
            f"learn from those answers). Validation: {splits.get('validation', 0)} examples "
            "(every choice below). Held-out test: "
            f"{splits.get('heldout', 0)} examples (the comparison above; read by it alone)."
        ],
        header=["choice", "chosen", "made on", "by"],
    )
    for c in extra.get("choices") or []:
        s.rows.append([str(c["what"]), str(c["chosen"]), str(c["split"]), str(c["how"])])
    return s


def _teacher_check(extra: dict[str, Any]) -> Section | None:
    """What `still run` found before training: was the teacher worth distilling from?"""
    check = extra.get("teacher_check")
    if not check:
        return None
    t_lo, t_hi = check["teacher_ci"]
    s_lo, s_hi = check["student_ci"]
    where = (
        f"On {check['n']} {check['split']} examples, before training: teacher "
        f"{_pct(check['teacher'])} [{_pct(t_lo)}, {_pct(t_hi)}], base student "
        f"{_pct(check['student'])} [{_pct(s_lo)}, {_pct(s_hi)}]"
    )
    problems = check.get("problems") or []
    if not problems:
        notes = [where + ": the teacher beats the base student (paired) and the baselines "
                 "beyond its interval, so it was worth distilling from."]  # fmt: skip
    else:
        forced = "trained anyway (--force)" if check.get("forced") else "not worth distilling"
        notes = [f"{where}: {'; '.join(problems)}: {forced}."]
    if check.get("calibrated"):
        notes.append(
            "Label scores read with contextual calibration: " + ", ".join(check["calibrated"]) + "."
        )
    return Section("teacher_check", "Is the teacher worth distilling?", notes)


def _gap(extra: dict[str, Any]) -> Section | None:
    if not extra.get("gap_meaningful"):
        return None
    notes = []
    for role, gap in (extra.get("gap_closed_interval") or {}).items():
        if gap.get("ci_low") is None:
            continue
        notes.append(
            f"{ROLE_NAMES.get(role, role).capitalize()}: gap closed {gap['gap_closed']:.0%}, "
            f"paired bootstrap 95% interval [{gap['ci_low']:.0%}, {gap['ci_high']:.0%}]."
        )
    return Section("gap", None, notes) if notes else None


def _paired(extra: dict[str, Any]) -> Section:
    s = Section(
        "paired",
        "Paired comparisons (same examples)",
        header=[
            "a vs b",
            "n",
            "accuracy a - b [95% CI]",
            "a wrong, b right",
            "a right, b wrong",
            "McNemar exact p",
        ],  # fmt: skip
    )
    for p in extra.get("paired") or []:
        s.rows.append([
            f"{ROLE_NAMES.get(p['a'], p['a'])} vs {ROLE_NAMES.get(p['b'], p['b'])}",
            str(p["n"]),
            f"{_pct(p['diff'], True)} [{_pct(p['diff_low'], True)}, {_pct(p['diff_high'], True)}]",
            str(p["mcnemar_b01"]), str(p["mcnemar_b10"]), _p(p["mcnemar_p"]),
        ])  # fmt: skip
    return s


def _economics(extra: dict[str, Any]) -> Section:
    eco = extra.get("economics") or {}
    s = Section("economics", "What distillation buys")
    if eco.get("prompt_compression"):
        s.notes.append(
            f"Prompt: {eco['prompt_tokens_teacher']:.0f} tokens (teacher) vs "
            f"{eco['prompt_tokens_student']:.0f} (student), {eco['prompt_compression']:.1f}x "
            f"smaller: {eco['prompt_tokens_saved_per_1k']:,.0f} prompt tokens saved per "
            "1,000 requests"
            + (
                f" (${eco['input_dollars_saved_per_1k']:.4f} at the teacher's input price)."
                if eco.get("input_dollars_saved_per_1k") is not None
                else "."
            )
        )
    if eco.get("dollars_saved_per_1k") is not None:
        s.notes.append(f"Saved per 1,000 requests: ${eco['dollars_saved_per_1k']:.4f}.")
    if eco.get("training_seconds"):
        cost = eco.get("training_cost")
        s.notes.append(
            f"Training: {eco['training_seconds']:.0f} s"
            + (f", ${cost:.4f}" if cost is not None else " (no train.cost_per_hour set)")
            + (
                f"; paid for after {eco['break_even_requests']:,} requests."
                if eco.get("break_even_requests")
                else "."
            )
        )
    return s


def _labels(extra: dict[str, Any]) -> Section | None:
    dist = extra.get("label_distribution") or []
    if not dist:
        return None
    labs = dist[0]["labels"]
    s = Section(
        "label-distribution",
        "Predicted labels against gold (chi-square goodness of fit)",
        header=["role", *labs, "not answered", "chi-square p"],
        rows=[["gold", *(str(x) for x in dist[0]["gold"]), "", ""]],
    )
    for d in dist:
        s.rows.append([d["role"], *(str(x) for x in d["predicted"]), str(d["not_answered"]),
                       _p(d["p_value"])])  # fmt: skip
    return s


def _position(extra: dict[str, Any]) -> Section | None:
    bias = extra.get("position_bias") or []
    if not bias:
        return None
    letters = list(bias[0]["accuracy_by_position"])
    slash = " / ".join(letters)
    s = Section(
        "position-bias",
        "Position bias (every question asked with its options rotated)",
        notes=[
            f"{bias[0]['n_questions']} held-out questions, each asked {bias[0]['k']} times so "
            "the correct option sits at every position once. An unbiased model has the same "
            f"accuracy at every position, predicts each letter {1 / len(letters):.0%} of the "
            "time (chi-square against uniform) and picks the same option in every rotation "
            "(consistency)."
        ],
        header=[
            "role",
            "accuracy",
            f"accuracy with the answer at {slash}",
            f"predicted {slash}",
            "chi-square p",
            "consistency",
            "failed",
        ],  # fmt: skip
    )
    for b in bias:
        s.rows.append([
            ROLE_NAMES.get(b["role"], b["role"]), _pct(b["accuracy"]),
            " / ".join(_pct(b["accuracy_by_position"][x]) for x in letters),
            " / ".join(_pct(b["predicted_share"][x]) for x in letters),
            _p(b["chi2_p"]), _pct(b["consistency"]), str(b["errors"]),
        ])  # fmt: skip
    return s


def _lengths(extra: dict[str, Any]) -> Section:
    s = Section(
        "accuracy-by-length",
        "Accuracy by input length (characters)",
        header=["role", "chars", "n", "accuracy [95% CI]"],
    )
    for b in extra.get("accuracy_by_length") or []:
        acc = f"{_pct(b['accuracy'])} [{_pct(b['ci_low'])}, {_pct(b['ci_high'])}]"
        s.rows.append([b["role"], f"{b['chars_from']}-{b['chars_to']}", str(b["n"]), acc])
    return s


def _selection(extra: dict[str, Any]) -> Section | None:
    sel = extra.get("selection")
    if not sel:
        return None
    s = Section(
        "selection",
        "Model selection (still select, on gold train examples)",
        notes=[
            f"{role}: {sel.get(role) or 'none'} ({why})"
            for role, why in (sel.get("reasons") or {}).items()
            if role != "warning"
        ],  # fmt: skip
        header=[
            "candidate",
            "n",
            "accuracy [95% CI]",
            "s/example",
            "$ / 1k examples",
            "picked as",
        ],  # fmt: skip
    )
    if (sel.get("reasons") or {}).get("warning"):
        s.notes.append("Warning: " + sel["reasons"]["warning"])
    for r in sel.get("results") or []:
        picked = [role for role in ("teacher", "student", "control") if sel.get(role) == r["model"]]
        lat = r.get("mean_latency_s")
        s.rows.append([
            r["model"], str(r["n"]),
            f"{_pct(r['accuracy'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]",
            "n/a" if lat is None or math.isnan(lat) else f"{lat:.3f}",
            "n/a" if r.get("cost_per_1k") is None else f"{r['cost_per_1k']:.4f}",
            ", ".join(picked) or "-",
        ])  # fmt: skip
    return s


def markdown_sections(extra: dict[str, Any]) -> str:
    """The sections as markdown: a ### heading, sentences as bullets, then the table."""
    lines: list[str] = []
    for s in sections(extra):
        lines.append("")
        if s.title:
            lines += [f"### {s.title}", ""]
        bullet = "- " if s.title else ""
        lines += [bullet + n for n in s.notes]
        if s.rows:
            if s.notes:
                lines.append("")
            lines += ["| " + " | ".join(s.header) + " |", "|" + "---|" * len(s.header)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                      for row in s.rows]  # fmt: skip
    return "\n".join(lines) + ("\n" if lines else "")
