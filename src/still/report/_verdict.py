"""The verdict: what a comparison may claim, and nothing more.

Every claim a report makes in words (terminal, report.md, report.html) comes from here,
so they cannot disagree. A claim rests on the paired test over the same examples, never
on overlapping Wilson intervals or point estimates:

- "beats" / "is worse than" only when the paired 95% interval of the difference
  excludes zero; otherwise "within noise";
- "gap closed" only when the gap is real and so is the gain: the teacher beats the base
  student (paired), the base student is not below the majority or chance baseline, the
  teacher's interval lies above those baselines, and the distilled student beats the
  base student (paired). Otherwise the percentage is not printed
  and the reason is said instead (a ratio of two noisy differences can read 356% or
  -1550%: it means nothing when the denominator is noise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from still.bench import Comparison
from still.report._names import role_name

DISTILLED = ("distilled", "distilled-verified")


@dataclass(frozen=True)
class Verdict:
    """The headline sentence, its mood and what stands beside it.

    Attributes:
        headline: one sentence on the main distilled student (teacher-only when present).
        mood: "win" (beats the base student, paired), "mixed" (within noise of it, or a
            win that does not beat the baselines), "loss" (worse) or "none" (nothing to judge).
        detail: the accuracies behind it, with the split and the baselines.
        notes: one sentence per further claim or caveat (other students, why no gap).
        gap_meaningful: whether any "gap closed" figure may be shown.
    """

    headline: str
    mood: str
    detail: str
    notes: list[str] = field(default_factory=list)
    gap_meaningful: bool = False


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _diff(p: dict[str, Any]) -> str:
    return f"{_pts(p['diff'])} points [{_pts(p['diff_low'])}, {_pts(p['diff_high'])}]"


def teacher_problems(cmp: Comparison) -> list[str]:
    """Why the teacher is not worth distilling from on this comparison (empty: it is): it
    does not beat the base student (paired), or its interval does not lie above the
    majority-label and chance baselines. `still run` checks these on the validation split
    before training (still.pipeline); a "gap closed" figure needs them too."""
    t, b = cmp.by_role("teacher"), cmp.by_role("student")
    if t is None or b is None:
        return ["there is no teacher and base student to measure a gap between"]
    out = []
    p = cmp.pair("teacher", "student")
    if p is None or p["diff_low"] is None or p["diff_low"] <= 0:
        what = "" if p is None else f" ({_diff(p)}, paired)"
        out.append(f"the teacher does not beat the base student beyond noise{what}")
    for name, value in _baselines(cmp):
        if t.ci_low <= value:
            where = "within its interval of" if value <= t.ci_high else "below"
            out.append(
                f"the teacher ({t.accuracy:.1%} [{t.ci_low:.1%}, {t.ci_high:.1%}]) is "
                f"{where} the {name} baseline ({value:.1%})"
            )
    return out


def _baselines(cmp: Comparison) -> list[tuple[str, float]]:
    """The comparison's baselines that are known, by name."""
    base = cmp.baselines
    if base is None:
        return []
    named = (("majority-label", base.majority), ("chance", base.chance))
    return [(name, value) for name, value in named if value is not None]


def gap_problems(cmp: Comparison) -> list[str]:
    """Why a "gap closed" figure would mean nothing here (empty: it means something): the
    teacher's problems (`teacher_problems`), or a base student below a baseline."""
    out = teacher_problems(cmp)
    b = cmp.by_role("student")
    if b is None or cmp.by_role("teacher") is None:
        return out
    for name, value in _baselines(cmp):
        if b.accuracy < value:
            out.append(
                f"the base student ({b.accuracy:.1%}) is below the {name} baseline "
                f"({value:.1%}), so part of any gain is only reaching that baseline"
            )
    return out


def _against(
    cmp: Comparison, d: str, other: str, names: Mapping[str, str] | None
) -> tuple[str, int] | None:
    """How `d` stands against `other` (paired): the phrase and -1/0/+1."""
    p = cmp.pair(d, other)
    if p is None or p["diff_low"] is None or p["diff_high"] is None:
        return None
    if p["diff_low"] > 0:
        return f"beats the {role_name(other, names)} by {_diff(p)}", 1
    if p["diff_high"] < 0:
        return f"is below the {role_name(other, names)} by {_diff(p)}", -1
    return f"is within noise of the {role_name(other, names)} ({_diff(p)})", 0


def _sentence(
    cmp: Comparison, d: str, gap_ok: bool, names: Mapping[str, str] | None
) -> tuple[str, int]:
    """One distilled student's claims, and its standing against the base student."""
    parts = []
    gap = cmp.gaps.get(d) or {}
    vs_base = _against(cmp, d, "student", names)
    vs_teacher = _against(cmp, d, "teacher", names)
    # a gap closed only for a real gain: a negative share or one within noise means nothing
    if gap_ok and vs_base and vs_base[1] > 0 and gap.get("gap_closed") is not None:
        g = f"closes {gap['gap_closed']:.0%} of the teacher–base-student gap"
        if gap.get("ci_low") is not None:
            g += f" [{gap['ci_low']:.0%}, {gap['ci_high']:.0%}]"
        parts.append(g)
    for found in (vs_base, vs_teacher):
        if found is not None:
            parts.append(found[0])
    res = cmp.by_role(d)
    base = cmp.baselines
    if res is not None and base is not None and base.floor is not None and res.ci_low <= base.floor:
        parts.append(
            f"but does not beat answering without reading the input "
            f"({base.floor:.1%}) beyond its interval"
        )
    if not parts and res is not None:
        parts.append(f"scores {res.accuracy:.1%}")
    text = f"{role_name(d, names, start=True)} " + ", ".join(parts)
    return text, (vs_base[1] if vs_base else 0)


def verdict(cmp: Comparison, names: Mapping[str, str] | None = None) -> Verdict:
    """What the comparison may claim; see the module docstring. `names`: the run's role
    names (still.report._names.role_names; None: the defaults)."""
    present = [d for d in DISTILLED if cmp.by_role(d) is not None]
    detail = _detail(cmp, names)
    if not present:
        best = max(cmp.results, key=lambda r: r.accuracy, default=None)
        if best is None:
            return Verdict("No results.", "none", "")
        return Verdict(
            "No distilled student yet: nothing to celebrate or mourn.",
            "none",
            f"Best so far: {role_name(best.role, names)} at {best.accuracy:.1%}. {detail}",
        )
    problems = gap_problems(cmp)
    gap_ok = not problems
    main, *others = present
    text, standing = _sentence(cmp, main, gap_ok, names)
    notes = [_sentence(cmp, d, gap_ok, names)[0] + "." for d in others]
    if problems:
        notes.append("No gap-closed figure: " + "; ".join(problems) + ".")
    res = cmp.by_role(main)
    base = cmp.baselines
    below_floor = bool(res and base and base.floor is not None and res.ci_low <= base.floor)
    if standing > 0:
        mood = "mixed" if below_floor else "win"
    elif standing < 0:
        mood = "loss"
    else:
        mood = "mixed" if cmp.by_role("student") is not None else "none"
    return Verdict(text + ".", mood, detail, notes, gap_ok)


def _detail(cmp: Comparison, names: Mapping[str, str] | None) -> str:
    """The accuracies behind the verdict, with their split and the baselines."""
    split = "held-out test split" if cmp.split == "heldout" else f"{cmp.split} split"
    n = max((r.n for r in cmp.results), default=0)
    accs = ", ".join(f"{role_name(r.role, names)} {r.accuracy:.1%}" for r in cmp.results)
    text = f"On the {split} ({n} examples): {accs}"
    base = cmp.baselines
    if base is not None:
        extra = []
        if base.majority is not None:
            extra.append(f"always answering {base.majority_label!r} {base.majority:.1%}")
        if base.chance is not None:
            extra.append(f"chance {base.chance:.1%}")
        if extra:
            text += "; baselines: " + ", ".join(extra)
    return text + "."


def verdict_lines(cmp: Comparison, names: Mapping[str, str] | None = None) -> list[str]:
    """The verdict as plain lines (terminal and markdown), roles called by `names`."""
    v = verdict(cmp, names)
    return [v.headline, *v.notes, v.detail]

