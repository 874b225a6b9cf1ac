"""The report's sections beyond the comparison table, as data rendered twice.

`report_extra` (still.pipeline) computes the statistics; `sections` turns them into
titled tables and sentences once (roles called by `extra["role_names"]`, the run's
names), and report.md and report.html each render the same `Section` list, so the two
files cannot disagree or drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from still.report._names import role_name


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
        _synthesis(extra),
        _grpo(extra),
        _ensemble(extra),
        _confidence(extra),
        _gap(extra),
        _paired(extra),
        _scores(extra),
        _economics(extra),
        _labels(extra),
        _position(extra),
        _lengths(extra),
        _selection(extra),
        _tune(extra),
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
            f"Train: {splits.get('train', 0)} examples ("
            + ("the student's prompts: it learns from its own answers, rewarded by the "
               "graders" if extra.get("grpo") else
               "the teacher answers them; students learn from those answers")
            + f"). Validation: {splits.get('validation', 0)} examples "
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


def _synthesis(extra: dict[str, Any]) -> Section | None:
    """Teacher-written inputs (`still synthesize`): what was kept, how diverse, how balanced."""
    syn = extra.get("synthesis")
    if not syn:
        return None
    unparseable = syn.get("returned", 0) - syn.get("parsed", 0)
    notes = [
        f"{syn.get('model')} wrote {syn.get('kept', 0)} new inputs of {syn.get('n', 0)} wanted, "
        f"from {syn.get('requested', 0)} requests: {syn.get('duplicates', 0)} duplicates and "
        f"{syn.get('near_duplicates', 0)} near duplicates (similarity >= "
        f"{syn.get('similarity', 0):g}) dropped, {syn.get('leaked', 0)} refused as too close "
        f"to a validation or test input, {unparseable} unparseable, "
        f"{syn.get('failed', 0)} failed calls."
    ]

    def ngrams(d: dict[str, Any] | None) -> str:
        if not d:
            return "n/a"
        return (
            f"distinct-1 {d.get('distinct_1', 0):g} ({d.get('distinct_1_ratio', 0):.1%}), "
            f"distinct-2 {d.get('distinct_2', 0):g} ({d.get('distinct_2_ratio', 0):.1%})"
        )

    k = syn.get("real_inputs", 0)
    notes.append(
        "Diversity (distinct word n-grams, and their share of all n-grams; shares fall as "
        f"text grows, so compare equal sizes): the {k} real training inputs "
        f"{ngrams(syn.get('train_diversity'))}; the first {k} synthetic inputs "
        f"{ngrams(syn.get('diversity_same_size'))}; all {syn.get('kept', 0)} synthetic "
        f"{ngrams(syn.get('diversity'))}."
    )
    real = syn.get("real_labels") or {}
    told = syn.get("teacher_labels") or {}
    if told:
        notes.append(
            "Label balance: the real training inputs' gold labels "
            + ", ".join(f"{lab} {n}" for lab, n in real.items())
            + "; the teacher's answers to the synthetic ones "
            + ", ".join(f"{lab} {told.get(lab, 0)}" for lab in real or told)
            + "."
        )
    s = Section("synthesis", "Teacher-written inputs (still synthesize)", notes)
    per = syn.get("per_label") or {}
    if any(lab for lab in per):  # a label task: one row per label asked for
        s.header = ["label asked for", "requested", "kept", "teacher answers it",
                    "teacher answers another", "no teacher answer"]  # fmt: skip
        requested = syn.get("requested_per_label") or {}
        for lab, c in per.items():
            answered = c["agrees"] + c["other"]
            agree = f"{c['agrees']} ({c['agrees'] / answered:.0%})" if answered else "0"
            s.rows.append([lab, str(requested.get(lab, "n/a")), str(c["kept"]), agree,
                           str(c["other"]), str(c["none"])])  # fmt: skip
    return s


def _grpo(extra: dict[str, Any]) -> Section | None:
    """A grpo student's rewards by step: validation every eval_every steps, the kept step."""
    runs = extra.get("grpo") or []
    if not runs:
        return None
    s = Section(
        "grpo",
        "Reinforcement fine-tuning (train.recipe: grpo): reward by step",
        header=["student", "step", "validation reward", "training reward (steps since the "
                "last evaluation)", "weights kept"],  # fmt: skip
    )
    for run in runs:
        role = f"{run['role']} (grpo)"  # not "teacher answers": it learned from its own
        records = run["records"]
        evals = [r for r in records if r["split"] == "validation"]
        train = [r for r in records if r["split"] == "train"]
        best = next((r for r in evals if r.get("best")), None)
        if evals:
            n = evals[0].get("examples")
            note = (
                f"{role}: mean reward of greedy answers to "
                f"{'the first ' + str(n) + ' ' if n else ''}validation prompts, before "
                "training (step 0), every train.grpo.eval_every steps and after the last"
            )
            if best is not None:
                note += f"; the weights kept are step {best['step']}'s ({best['reward']:.3f})"
            s.notes.append(note + ".")
        if train:
            k = max(1, len(train) // 10)
            first = sum(r["reward"] for r in train[:k]) / k
            last = sum(r["reward"] for r in train[-k:]) / k
            steps = "step" if k == 1 else f"{k} steps"
            s.notes.append(
                f"{role}: mean training reward (sampled answers) {first:.3f} over the first "
                f"{steps}, {last:.3f} over the last {steps}, of {len(train)}."
            )
        previous = -1
        for r in evals:
            window = [t["reward"] for t in train if previous < t["step"] <= r["step"]]
            s.rows.append([
                role, str(r["step"]), f"{r['reward']:.3f}",
                f"{sum(window) / len(window):.3f}" if window else "-",
                "yes" if r.get("best") else "",
            ])  # fmt: skip
            previous = r["step"]
    return s


def _ensemble(extra: dict[str, Any]) -> Section | None:
    """The teacher ensemble: each member's accuracy and the vote's (still.pipeline._ensemble)."""
    ens = extra.get("ensemble")
    if not ens or not ens.get("rows"):
        return None
    splits = list(dict.fromkeys(r["split"] for r in ens["rows"]))
    names = {"validation": "validation", "heldout": "test"}
    s = Section(
        "ensemble",
        "Teacher ensemble",
        notes=[
            f"The teacher is {ens['members']} prompts (member 0: the task's own; the others "
            "show few-shot examples of their own from the training split), combined by "
            "majority vote (hard labels) and mean label probabilities (soft targets). "
            "Accuracy with its 95% interval; members read from the store."
        ],
        header=["member", "model", *(f"{names.get(x, x)} accuracy [95% CI]" for x in splits)],
    )
    by: dict[tuple[str, str], dict[str, Any]] = {(r["member"], r["model"]): {} for r in ens["rows"]}
    for r in ens["rows"]:
        by[(r["member"], r["model"])][r["split"]] = r
    for (member, model), cells in by.items():
        s.rows.append([member, model, *(
            f"{_pct(c['accuracy'])} [{_pct(c['ci_low'])}, {_pct(c['ci_high'])}]"
            if (c := cells.get(x)) else "n/a" for x in splits
        )])  # fmt: skip
    return s


def _confidence(extra: dict[str, Any]) -> Section | None:
    """The gold-free filter of the teacher-only student (still.pipeline._confidence)."""
    conf = extra.get("confidence")
    if not conf:
        return None
    how = "chosen on validation" if conf["chosen_on"] == "validation" else "set in the task"
    s = Section(
        "confidence",
        "Gold-free filtering (teacher-only student)",
        notes=[
            f"The teacher-only student learned from the training answers with {conf['rule']} "
            f">= {conf['threshold']:.3f} ({how}; {conf['train_dropped']} dropped), no gold "
            "of the training rows read. Each rule's threshold keeps the most right answers net "
            f"of wrong ones on validation, keeping at least {conf['min_keep']:.0%} of them."
        ],
        header=["rule", "threshold", "validation kept", "accuracy of kept [all]", "train kept"],
    )
    for r in conf.get("rules") or []:
        if r["threshold"] is None:
            s.rows.append([r["rule"], "n/a", "-", "-", "-"])
            continue
        s.rows.append([
            r["rule"] + (" (used)" if r["chosen"] else ""), f"{r['threshold']:.3f}",
            f"{r['validation_kept']} of {r['validation_rows']}",
            f"{_pct(r['kept_accuracy'])} [{_pct(r['accuracy'])}]",
            f"{r['train_kept']} of {r['train_rows']}",
        ])  # fmt: skip
    return s


def _gap(extra: dict[str, Any]) -> Section | None:
    if not extra.get("gap_meaningful"):
        return None
    notes = []
    names = extra.get("role_names")
    for role, gap in (extra.get("gap_closed_interval") or {}).items():
        if gap.get("ci_low") is None:
            continue
        notes.append(
            f"{role_name(role, names, start=True)}: gap closed {gap['gap_closed']:.0%}, "
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
    names = extra.get("role_names")
    for p in extra.get("paired") or []:
        s.rows.append([
            f"{role_name(p['a'], names)} vs {role_name(p['b'], names)}",
            str(p["n"]),
            f"{_pct(p['diff'], True)} [{_pct(p['diff_low'], True)}, {_pct(p['diff_high'], True)}]",
            str(p["mcnemar_b01"]), str(p["mcnemar_b10"]), _p(p["mcnemar_p"]),
        ])  # fmt: skip
    return s


def _scores(extra: dict[str, Any]) -> Section | None:
    """The graders' mean score per role, with paired differences: the partial credit that
    pass rates hide (a reward's closeness, a judge's scale)."""
    scores = extra.get("scores")
    if not scores or not scores.get("roles"):
        return None
    s = Section(
        "scores",
        "Mean grader score (before the pass threshold)",
        notes=[
            "Each answer's score is the mean of the top-level graders' scores (a failed or "
            "unparseable answer scores 0); 95% percentile bootstrap intervals over the "
            "examples, and paired differences (a - b, examples resampled with both answers "
            "kept together)."
        ],
        header=["role", "n", "mean score [95% CI]", "minus the base student (paired)",
                "minus the teacher (paired)"],  # fmt: skip
    )
    pairs = {(p["a"], p["b"]): p for p in scores.get("paired") or []}

    def diff(a: str, b: str) -> str:
        p = pairs.get((a, b))
        if p is None:
            return "-"
        return f"{p['diff']:+.3f} [{p['diff_low']:+.3f}, {p['diff_high']:+.3f}]"

    names = extra.get("role_names")
    for r in scores["roles"]:
        s.rows.append([
            role_name(r["role"], names), str(r["n"]),
            f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]",
            diff(r["role"], "student"), diff(r["role"], "teacher"),
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
    names = extra.get("role_names")
    for b in bias:
        s.rows.append([
            role_name(b["role"], names), _pct(b["accuracy"]),
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


def _tune(extra: dict[str, Any]) -> Section | None:
    """`still tune`'s grid on validation and its choice (tune/tune.json)."""
    data = extra.get("tune")
    if not data or not data.get("points"):
        return None
    t, b, s = data["teacher"], data["best"], data["student"]
    budget = data.get("budget_minutes")
    sec = Section(
        "tune",
        "Recipe choice on validation (still tune)",
        notes=[
            f"Every point trained a student on the train split's teacher answers and was scored "
            f"on {data['n']} validation examples (the test split was not read): teacher "
            f"{_ci(t)}, base student {_ci(s)}"
            + (f"; no new point after {budget:g} minutes" if budget else "")
            + ".",
            f"Chosen: {b['recipe']}, {b['method']}, {b['epochs']:g} epochs, learning rate "
            f"{b['learning_rate']:g}, keep {b['keep']} ({_ci(b)}; ties go to the faster to "
            "train).",
        ],
        header=["recipe", "method", "epochs", "learning rate", "keep", "kept", "status",
                "accuracy [95% CI]", "gap closed [95% CI]", "train s"],  # fmt: skip
    )
    for p in data["points"]:
        scored = p["accuracy"] is not None
        gap = _pct(p["gap_closed"]) if scored else "-"
        if scored and p["gap_low"] is not None and p["gap_high"] is not None:
            gap += f" [{_pct(p['gap_low'])}, {_pct(p['gap_high'])}]"
        sec.rows.append([
            p["recipe"], p["method"], f"{p['epochs']:g}", f"{p['learning_rate']:g}", p["keep"],
            "-" if p["kept"] is None else str(p["kept"]), p["status"],
            _ci(p) if scored else "-", gap,
            "-" if p["train_seconds"] is None else f"{p['train_seconds']:.0f}",
        ])  # fmt: skip
    return sec


def _ci(r: dict[str, Any]) -> str:
    return f"{_pct(r['accuracy'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"


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
