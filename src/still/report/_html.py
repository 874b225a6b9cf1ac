"""The comparison as one self-contained HTML page: a verdict, the table and the plots.

One file that opens anywhere, offline, with nothing beside it: the CSS is inline, every
plot is a PNG inside the page (a data: URL) and a Content-Security-Policy forbids loading
anything else, so the page can be mailed, attached to a CI run or archived as it is.
Every piece of text that comes from the data (model names, prompts, labels, the title) is
HTML-escaped: model references and labels are user input.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from still.bench import Comparison, ModelResult
from still.report._verdict import verdict

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Fixed colours per role, so a role looks the same in every plot.
_ROLE_COLOURS = {
    "teacher": "#4c72b0",
    "student": "#dd8452",
    "distilled": "#55a868",
    "control": "#8172b3",
}
_OTHER_COLOURS = ["#c44e52", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]
# Plots with two panels, given the page's whole width.
_WIDE = {"position-bias"}
# The column of the confusion matrix for answers that are no label: unparseable or failed.
_NO_LABEL = "(not answered)"

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d232a; background: #fbfbfc; margin: 0; }
main { max-width: 1280px; margin: 0 auto; padding: 1.5rem 2rem 3rem; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; }
h2 { font-size: 1.15rem; margin: 2rem 0 .6rem; }
.headline { font-size: 1.35rem; font-weight: 600; padding: .9rem 1.1rem; border-radius: 8px;
            border-left: 6px solid; margin: 0 0 .4rem; }
.headline.win { background: #e8f5ec; border-color: #2e8b57; }
.headline.mixed { background: #fff6e0; border-color: #d49a00; }
.headline.loss { background: #fdeaea; border-color: #c0392b; }
.headline.none { background: #eef1f5; border-color: #7a8699; }
.detail { color: #4a5563; margin: .2rem 0 0; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: .9rem; }
th, td { padding: .35rem .6rem; border-bottom: 1px solid #dde2e8; white-space: nowrap; }
th { background: #eef1f5; text-align: left; vertical-align: bottom; white-space: normal; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #f4f6f9; }
code { font-size: .85rem; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr));
         gap: 1.2rem; }
figure.plot { margin: 0; background: #fff; border: 1px solid #dde2e8; border-radius: 8px;
              padding: .6rem; }
figure.plot img { display: block; width: 100%; height: auto; }
figure.plot.wide { grid-column: 1 / -1; }
figure.plot.wide img { max-width: 1100px; }
figcaption { color: #4a5563; font-size: .85rem; margin-top: .4rem; }
footer { color: #7a8699; font-size: .8rem; margin-top: 2.5rem; }
"""


@dataclass
class _Plot:
    """One rendered plot: its name (the figure's data-plot), PNG bytes, alt text, caption."""

    name: str
    png: bytes
    alt: str
    caption: str


def write_html(
    cmp: Comparison,
    rows: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    title: str,
    labels: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the comparison as one self-contained HTML page at `path` and return `path`.

    The page says first whether distillation paid off (the headline), then shows the
    comparison table and the plots: accuracy with 95% intervals, accuracy against cost
    (or against latency when nothing is priced), latency per role and, for label tasks
    (`labels` given), a confusion matrix per role and the predicted labels against the
    gold ones. `rows` are the per-example rows of `still.bench.evaluate`. `extra` (see
    still.pipeline.report_extra) adds its sections (paired tests, economics, label and
    position bias, length buckets, model selection) as tables, and plots for position
    bias and the selection candidates.

    Needs matplotlib (imported here: it is slow to import and only this page uses it).
    """
    from still.report._markdown import COLUMNS, baseline_cells, cells, short
    from still.report._sections import sections
    from still.report._verdict import verdict as _v

    extra = dict(extra or {})
    names = extra.get("role_names")  # the run's (still.report._names.role_names)
    plots = _plots(cmp, rows, labels, extra)
    text, mood, detail = headline(cmp, names)
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
    body = []
    for r in cmp.results:
        tds = []
        for i, (column, cell) in enumerate(zip(COLUMNS, cells(r, names), strict=True)):
            if i == 1:  # the model: shortened, in full on hover
                tds.append(f'<td title="{esc(r.model)}"><code>{esc(short(cell))}</code></td>')
            else:
                numeric = column not in ("role", "model", "prompt")
                tds.append(
                    f'<td class="num">{esc(cell)}</td>' if numeric else f"<td>{esc(cell)}</td>"
                )
        body.append(f'<tr data-role="{esc(r.role)}">' + "".join(tds) + "</tr>")
    for base in baseline_cells(cmp):
        row = "".join(f"<td>{esc(c)}</td>" for c in base)
        body.append(f'<tr class="baseline">{row}</tr>')
    figures = "\n".join(
        f'<figure class="plot{" wide" if p.name in _WIDE else ""}" data-plot="{esc(p.name)}">'
        f'<img alt="{esc(p.alt)}" src="data:image/png;base64,{base64.b64encode(p.png).decode()}">'
        f"<figcaption>{esc(p.caption)}</figcaption></figure>"
        for p in plots
    )
    notes = _v(cmp, names).notes
    blocks = []
    for sec in sections(extra):
        block = [f'<section class="extra" data-section="{esc(sec.name)}">']
        if sec.title:
            block.append(f"<h2>{esc(sec.title)}</h2>")
        block += [f'<p class="detail">{esc(n)}</p>' for n in sec.notes]
        if sec.rows:
            block.append('<div class="table-wrap"><table><thead><tr>')
            block.append("".join(f"<th>{esc(h)}</th>" for h in sec.header) + "</tr></thead>")
            block.append("<tbody>")
            block += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                      for row in sec.rows]  # fmt: skip
            block.append("</tbody></table></div>")
        block.append("</section>")
        blocks.append("\n".join(block))
    extra_html = "\n".join(blocks)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<main>
<h1>{esc(title)}</h1>
<p class="headline {mood}" data-mood="{mood}">{esc(text)}</p>
<p class="detail">{esc(detail)}</p>
{"".join(f'<p class="detail note">{esc(n)}</p>' for n in notes)}
<h2>Comparison</h2>
<div class="table-wrap">
<table id="comparison">
<thead><tr>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody>
</table>
</div>
{extra_html}
<h2>Plots</h2>
<section class="plots">
{figures}
</section>
<footer>Written by still. Accuracy intervals are 95% Wilson intervals; failed and unparseable
answers count as wrong.</footer>
</main>
</body>
</html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def headline(cmp: Comparison, names: Mapping[str, str] | None = None) -> tuple[str, str, str]:
    """The one sentence a reader wants first: did distillation pay off? (See
    still.report._verdict: the same claims as report.md and the terminal.)

    Returns the sentence, its mood ("win", "mixed", "loss", "none") and a line of the
    numbers behind it. `names`: the run's role names (None: the defaults).
    """
    v = verdict(cmp, names)
    t, d = cmp.by_role("teacher"), cmp.by_role("distilled") or cmp.by_role("distilled-verified")
    text = v.headline
    if d is not None and v.mood == "win":
        savings = _savings(t, d)
        if savings:
            text = text.rstrip(".") + f"; it runs{savings}."
    return text, v.mood, v.detail


def _savings(t: ModelResult | None, d: ModelResult) -> str:
    """' at 1/10 the latency and 1/40 the cost of the teacher', or what part of it is known."""
    if t is None:
        return ""
    parts = []
    lat = _ratio(t.mean_latency_s, d.mean_latency_s)
    if lat is not None:
        parts.append(f"{lat} latency")
    if t.cost_per_1k is not None and d.cost_per_1k is not None:
        cost = _ratio(t.cost_per_1k, d.cost_per_1k)
        if cost is not None:
            parts.append(f"{cost} cost")
    return f" at {' and '.join(parts)} of the teacher" if parts else ""


def _ratio(teacher: float, distilled: float) -> str | None:
    """'1/10 the' or '80% of the': the distilled student's share of the teacher's latency or
    cost, in words; None when unknown or not lower (then there is nothing to boast of)."""
    if not (teacher > 0 and distilled > 0) or math.isnan(teacher) or math.isnan(distilled):
        return None
    ratio = teacher / distilled
    if ratio >= 1.95:
        return f"1/{ratio:.0f} the"
    if ratio > 1.05:
        return f"{1 / ratio:.0%} of the"
    return None


def _role(role: str, names: Mapping[str, str] | None) -> str:
    from still.report._names import role_name

    return role_name(role, names)


def _colour(role: str, i: int) -> str:
    return _ROLE_COLOURS.get(role, _OTHER_COLOURS[i % len(_OTHER_COLOURS)])


def _plots(
    cmp: Comparison,
    rows: Sequence[Mapping[str, Any]],
    labels: Sequence[str] | None,
    extra: Mapping[str, Any],
) -> list[_Plot]:
    """Render every plot, roles called by `extra["role_names"]`. Math text is off: a '$' in
    a label must stay a dollar sign."""
    import matplotlib

    names = extra.get("role_names")

    with matplotlib.rc_context({"text.parse_math": False, "font.size": 10}):
        plots = [_accuracy(cmp, names), _accuracy_cost(cmp, names), _latency(cmp, rows, names)]
        if labels:
            plots += [_confusion(r.role, rows, labels, names) for r in cmp.results]
            plots.append(_label_distribution(cmp, rows, labels, names))
        if extra.get("position_bias"):
            plots.append(_position_bias(extra["position_bias"], names))
        if extra.get("grpo"):
            plots.append(_grpo_rewards(extra["grpo"]))
        sel = extra.get("selection") or {}
        if sel.get("results"):
            known = {f.name for f in dataclasses.fields(ModelResult)}  # an older/newer file
            candidates = Comparison(
                [
                    ModelResult(
                        **{k: v for k, v in r.items() if k in known and k != "role"},
                        role=_short_model(r["model"]),
                    )
                    for r in sel["results"]
                ]
            )
            plots.append(
                _accuracy_cost(
                    candidates, names, name="selection", what="Selection candidates: accuracy"
                )
            )
    return plots


def _short_model(model: str) -> str:
    from still.report._markdown import short

    return short(model, 32)


def _position_bias(bias: Sequence[Mapping[str, Any]], names: Mapping[str, str] | None) -> _Plot:
    """Two panels per role: which letters it predicts (uniform is unbiased) and how
    accurate it is with the correct answer at each position (flat is unbiased)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    letters = list(bias[0]["predicted_share"])
    fig = Figure(figsize=(9.6, 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    share_ax, acc_ax = fig.subplots(1, 2)
    width = 0.8 / len(bias)
    for i, b in enumerate(bias):
        offset = (i - (len(bias) - 1) / 2) * width
        xs = [x + offset for x in range(len(letters))]
        colour = _colour(b["role"], i)
        share_ax.bar(xs, [b["predicted_share"][x] for x in letters], width, color=colour,
                     label=_role(b["role"], names))  # fmt: skip
        acc_ax.bar(xs, [b["accuracy_by_position"][x] for x in letters], width, color=colour,
                   label=_role(b["role"], names))  # fmt: skip
    share_ax.axhline(1 / len(letters), linestyle="--", color="#333", linewidth=1,
                     label="unbiased")  # fmt: skip
    for ax, what in ((share_ax, "Share of predictions naming each letter"),
                     (acc_ax, "Accuracy with the correct answer at each letter")):  # fmt: skip
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_xticks(range(len(letters)), letters)
        ax.yaxis.set_major_formatter(_percent())
        ax.set_ylim(0, 1.05)
        ax.set_title(what)
    share_ax.legend(fontsize=8, frameon=False, loc="upper right")
    return _Plot(
        "position-bias",
        _png(fig),
        "Bar charts of predicted-letter shares and accuracy by the correct answer's position",
        "Each question asked with its options rotated so the answer sits at every letter "
        "once. Left: how often each letter is predicted (dashed: unbiased). Right: accuracy "
        "by where the answer was.",
    )


def _grpo_rewards(runs: Sequence[Mapping[str, Any]]) -> _Plot:
    """A grpo student's mean reward by step: its sampled answers' at every training step
    (thin), greedy validation answers' at each evaluation (points), the kept step ringed."""
    fig, ax = _figure(6.4, 3.6)
    for i, run in enumerate(runs):
        colour = _colour(run["role"], i)
        records = run["records"]
        train = [r for r in records if r["split"] == "train"]
        evals = [r for r in records if r["split"] == "validation"]
        if train:
            ax.plot([r["step"] for r in train], [r["reward"] for r in train], color=colour,
                    alpha=0.35, linewidth=1, label="training (sampled)")  # fmt: skip
        if evals:
            ax.plot([r["step"] for r in evals], [r["reward"] for r in evals], color=colour,
                    marker="o", linewidth=2, label="validation (greedy)")  # fmt: skip
        for r in evals:
            if r.get("best"):
                ax.plot([r["step"]], [r["reward"]], marker="o", markersize=13,
                        markerfacecolor="none", color="#333", label="weights kept")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.legend(fontsize=8, frameon=False)
    return _Plot(
        "grpo-reward",
        _png(fig),
        "Line plot of the mean reward by training step, training and validation",
        "Reinforcement fine-tuning (grpo): the mean reward of the student's sampled answers "
        "at each step, and of its greedy answers to validation prompts at each evaluation; "
        "the ringed point is the step whose weights were kept.",
    )


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    """A figure on the Agg canvas, outside pyplot: no global state, no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _accuracy(cmp: Comparison, names: Mapping[str, str] | None) -> _Plot:
    fig, ax = _figure(6.4, 3.6)
    results = cmp.results
    xs = range(len(results))
    accs = [r.accuracy for r in results]
    err = [
        [max(0.0, r.accuracy - r.ci_low) for r in results],
        [max(0.0, r.ci_high - r.accuracy) for r in results],
    ]
    colours = [_colour(r.role, i) for i, r in enumerate(results)]
    ax.bar(xs, accs, color=colours, width=0.6, yerr=err, capsize=6, ecolor="#333")
    for x, r in zip(xs, results, strict=True):
        ax.text(x, r.ci_high + 0.02, f"{r.accuracy:.1%}", ha="center", va="bottom")
    ax.set_xticks(list(xs), [_role(r.role, names) for r in results])
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("accuracy")
    ax.yaxis.set_major_formatter(_percent())
    ax.set_title("Accuracy with 95% interval")
    return _Plot(
        "accuracy",
        _png(fig),
        "Bar chart of accuracy per role with 95% confidence intervals",
        "Accuracy per role on the held-out examples; the bars are 95% Wilson intervals.",
    )


def _accuracy_cost(
    cmp: Comparison,
    names: Mapping[str, str] | None,
    name: str = "accuracy-cost",
    what: str = "Accuracy",
) -> _Plot:
    """Accuracy against dollars per 1k examples; against mean latency when nothing is
    priced (local models have no price), so the trade-off is shown either way."""
    fig, ax = _figure(6.4, 3.6)
    priced = [r for r in cmp.results if r.cost_per_1k is not None]
    by_cost = bool(priced)
    unpriced = [r for r in cmp.results if r.cost_per_1k is None] if by_cost else []
    shown = priced if by_cost else [r for r in cmp.results if not math.isnan(r.mean_latency_s)]
    index = {r.role: i for i, r in enumerate(cmp.results)}
    xs = [r.cost_per_1k if r.cost_per_1k is not None else r.mean_latency_s for r in shown]
    for r, x in zip(shown, xs, strict=True):
        ax.errorbar(
            [x],
            [r.accuracy],
            yerr=[[max(0.0, r.accuracy - r.ci_low)], [max(0.0, r.ci_high - r.accuracy)]],
            fmt="o",
            markersize=9,
            capsize=5,
            color=_colour(r.role, index[r.role]),
            label=_role(r.role, names),
        )
        ax.annotate(
            _role(r.role, names), (x, r.accuracy), xytext=(8, 6), textcoords="offset points"
        )
    for r in unpriced:  # no price: its accuracy as a reference line
        ax.axhline(
            r.accuracy,
            linestyle="--",
            linewidth=1.2,
            color=_colour(r.role, index[r.role]),
            label=f"{_role(r.role, names)} (no price)",
        )
    positive = [x for x in xs if x > 0]
    if len(positive) == len(xs) >= 2 and max(positive) / min(positive) > 20:
        _log(ax, "x")
    elif xs:
        ax.set_xlim(0, max(xs) * 1.25 or 1)
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(_percent())
    ax.set_ylabel("accuracy")
    ax.set_xlabel("$ per 1,000 examples" if by_cost else "mean latency (s / example)")
    ax.set_title(f"{what} against " + ("cost" if by_cost else "latency"))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, frameon=False)  # away from the points
    if by_cost:
        caption = "Accuracy (95% interval) against dollars per 1,000 examples."
        if unpriced:
            caption += (
                " No price for "
                + ", ".join(_role(r.role, names) for r in unpriced)
                + ": shown as dashed lines at their accuracy."
            )
    else:
        caption = (
            "No model has a price, so accuracy (95% interval) is plotted against mean "
            "latency per example instead of cost."
        )
    if name == "selection":
        caption = "Selection candidates on gold train examples. " + caption
    return _Plot(name, _png(fig), f"Scatter of {what.lower()} against cost", caption)


def _latency(
    cmp: Comparison, rows: Sequence[Mapping[str, Any]], names: Mapping[str, str] | None
) -> _Plot:
    """Latency of answered requests per role (failed requests have no meaningful time)."""
    fig, ax = _figure(6.4, 3.6)
    data: list[list[float]] = []
    shown: list[str] = []
    colours: list[str] = []
    missing: list[str] = []
    for i, r in enumerate(cmp.results):
        values = [
            float(row["latency_s"])
            for row in rows
            if row.get("role") == r.role
            and isinstance(row.get("latency_s"), int | float)
            and row.get("failure") not in ("error", "missing")
        ]
        if values:
            data.append(values)
            shown.append(_role(r.role, names))
            colours.append(_colour(r.role, i))
        else:
            missing.append(_role(r.role, names))
    if data:
        box = ax.boxplot(data, patch_artist=True, widths=0.55, showfliers=True)
        ax.set_xticks(range(1, len(shown) + 1), [n.replace(" ", "\n") for n in shown])
        for patch, colour in zip(box["boxes"], colours, strict=True):
            patch.set_facecolor(colour)
            patch.set_alpha(0.75)
        for median in box["medians"]:
            median.set_color("#222")
        flat = [v for vs in data for v in vs if v > 0]
        if flat and max(flat) / min(flat) > 10:  # a slow teacher would flatten the rest
            _log(ax, "y")
    else:
        ax.text(0.5, 0.5, "no latencies recorded", ha="center", va="center")
    ax.set_ylabel("seconds per example")
    ax.set_title("Latency per example")
    caption = "Latency of each answered request per role (box: quartiles; line: median)."
    if missing:
        caption += " No latencies for " + ", ".join(missing) + "."
    return _Plot("latency", _png(fig), "Box plot of latency per role", caption)


def _label_of(value: Any, labels: Sequence[str]) -> str:
    return str(value) if value is not None and str(value) in labels else _NO_LABEL


def _confusion(
    role: str,
    rows: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    names: Mapping[str, str] | None,
) -> _Plot:
    """Gold label (rows) against predicted label (columns); unparseable and failed answers
    get a column of their own, since they are where a weak student usually fails."""
    gold = list(labels)
    predicted = [*labels, _NO_LABEL]
    counts = [[0] * len(predicted) for _ in gold]
    extra_gold = 0
    for row in rows:
        if row.get("role") != role:
            continue
        ref = row.get("reference")
        if ref is None or str(ref) not in labels:
            extra_gold += 1
            continue
        counts[gold.index(str(ref))][predicted.index(_label_of(row.get("prediction"), labels))] += 1
    fig, ax = _figure(max(6.4, 0.9 * len(predicted) + 2), max(3.6, 0.45 * len(gold) + 1.6))
    top = max((c for line in counts for c in line), default=0) or 1
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=top, aspect="auto")
    for i, line in enumerate(counts):
        for j, c in enumerate(line):
            ax.text(j, i, str(c), ha="center", va="center",
                    color="white" if c > top / 2 else "#1d232a")  # fmt: skip
    ax.set_xticks(range(len(predicted)), predicted, rotation=30, ha="right")
    ax.set_yticks(range(len(gold)), gold)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"Confusion matrix: {_role(role, names)}")
    ax.spines[:].set_visible(False)  # the counts are written in the cells: no colour bar
    caption = (
        f"{_role(role, names)}: gold label against predicted label, counts of examples; "
        f"{_NO_LABEL}: unparseable or failed answers."
    )
    if extra_gold:
        caption += f" {extra_gold} examples with a gold answer outside the labels are left out."
    return _Plot(
        f"confusion-{role}", _png(fig), f"Confusion matrix for {_role(role, names)}", caption
    )


def _label_distribution(
    cmp: Comparison,
    rows: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    names: Mapping[str, str] | None,
) -> _Plot:
    """How often each role predicts each label, beside how often it is the gold answer:
    a model that collapses onto one label shows here at a glance."""
    buckets = [*labels, _NO_LABEL]
    gold: Counter[str] = Counter()
    seen: set[Any] = set()
    for row in rows:  # every role answers the same examples: count each gold answer once
        if row.get("example_id") in seen:
            continue
        seen.add(row.get("example_id"))
        gold[_label_of(row.get("reference"), labels)] += 1
    series: list[tuple[str, str, list[int]]] = [("gold", "#333333", [gold[b] for b in buckets])]
    for i, r in enumerate(cmp.results):
        got = Counter(
            _label_of(row.get("prediction"), labels) for row in rows if row.get("role") == r.role
        )
        series.append((_role(r.role, names), _colour(r.role, i), [got[b] for b in buckets]))
    fig, ax = _figure(max(6.4, 0.3 * len(buckets) * len(series)), 3.6)
    width = 0.8 / len(series)
    for k, (name, colour, values) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * width
        ax.bar(
            [x + offset for x in range(len(buckets))],
            values,
            width=width,
            color=colour,
            label=name,
            hatch="//" if name == "gold" else None,
            alpha=0.55 if name == "gold" else 0.9,
            edgecolor="white" if name != "gold" else "#333333",
        )
    ax.set_xticks(range(len(buckets)), buckets)
    ax.set_ylabel("examples")
    ax.set_title("Predicted labels against gold labels")
    ax.legend(fontsize=8, frameon=False, ncols=min(len(series), 5), loc="upper right")
    ax.set_ylim(0, max(max(v) for _, _, v in series) * 1.3 + 1)
    return _Plot(
        "label-distribution",
        _png(fig),
        "Bar chart of predicted label counts per role against the gold label counts",
        "How often each role predicts each label, against the gold distribution (hatched).",
    )


def _log(ax: Axes, which: str) -> None:
    """A log axis labelled 0.05, 0.1, 0.2 ... in plain numbers: the default labels are
    math text (10^-1), which is switched off here and is harder to read anyway."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis: Any
    if which == "x":
        ax.set_xscale("log")
        axis = ax.xaxis
    else:
        ax.set_yscale("log")
        axis = ax.yaxis
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _percent() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(xmax=1.0, decimals=0)
