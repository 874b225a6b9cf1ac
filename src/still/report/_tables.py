"""What the CLI prints after a stage: tables and one-line summaries of stage results.

They live here, beside the comparison's table and markdown, so commands stay one library
call and a print, and so the words a user reads about a result are chosen in one package.
Functions return rich renderables or plain strings and print nothing themselves; the
caller picks the console. `still.pipeline` imports this package, not the other way round,
so the stage results shown here are described by what the tables read (`Estimated`,
`Selected`): `still.pipeline.StageEstimate` and `still.pipeline.Selection` are both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Group

    from still.bench import Agreement, ModelResult


class Estimated(Protocol):
    """One capture's estimate, as `estimate_view` reads it (`still.pipeline.StageEstimate`)."""

    @property
    def role(self) -> str: ...
    @property
    def split(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def tokenizer(self) -> str: ...
    @property
    def exact(self) -> bool: ...
    @property
    def requests(self) -> int: ...
    @property
    def stored(self) -> int: ...
    @property
    def to_send(self) -> int: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def output_tokens_max(self) -> int: ...
    @property
    def input_cost(self) -> float | None: ...
    @property
    def cost_max(self) -> float | None: ...


class MemoryShown(Protocol):
    """One method's memory, as `training_view` reads it (`still.train.MemoryEstimate`)."""

    @property
    def method(self) -> str: ...
    @property
    def weights(self) -> float: ...
    @property
    def gradients(self) -> float: ...
    @property
    def optimizer(self) -> float: ...
    @property
    def activations(self) -> float: ...
    @property
    def rows(self) -> int: ...
    @property
    def tokens(self) -> int: ...
    @property
    def total(self) -> float: ...


class TrainingEstimated(Protocol):
    """A training's estimate, as `training_view` reads it (`still.pipeline.TrainingEstimate`)."""

    @property
    def student(self) -> str: ...
    @property
    def parameters(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def processes(self) -> int: ...
    @property
    def precision(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def device_name(self) -> str: ...
    @property
    def free(self) -> float: ...
    @property
    def memory(self) -> Sequence[MemoryShown]: ...
    @property
    def fits(self) -> Sequence[bool]: ...
    @property
    def trainable(self) -> Mapping[str, int]: ...
    @property
    def rows(self) -> int: ...
    @property
    def tokens(self) -> int: ...
    @property
    def steps(self) -> int: ...
    @property
    def tokens_per_s(self) -> float: ...
    @property
    def rate_from(self) -> str: ...
    @property
    def seconds(self) -> float: ...


class Selected(Protocol):
    """A model selection, as `selection_view` reads it (`still.pipeline.Selection`)."""

    @property
    def results(self) -> Sequence[ModelResult]: ...
    @property
    def teacher(self) -> str: ...
    @property
    def student(self) -> str: ...
    @property
    def control(self) -> str | None: ...
    @property
    def reasons(self) -> Mapping[str, str]: ...


def _dollars(x: float | None, bound: bool = False) -> str:
    return "n/a" if x is None else ("≤ " if bound else "") + f"${x:,.4f}"


def estimate_view(
    task_name: str, stages: Sequence[Estimated], total: float, prices_as_of: str
) -> Group:
    """`still estimate`: one row per capture (requests, stored, tokens, dollars at most),
    then the total to pass to --max-cost.

    Args:
        task_name: The task's name, for the title.
        stages: The captures, as `still.pipeline.estimate_run` returns them.
        total: Their dollar bound (`still.pipeline.total_cost`).
        prices_as_of: The date of the built-in price table (`still.prices.PRICES_AS_OF`).
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{task_name}: estimate (prices as of {prices_as_of} or the task's)")
    for col in ("role", "split", "model", "tokenizer"):
        table.add_column(col)
    for col in ("requests", "stored", "to send", "prompt tok", "answer tok ≤", "$ in", "$ ≤"):
        table.add_column(col, justify="right")
    for s in stages:
        table.add_row(
            s.role,
            s.split,
            s.model,
            s.tokenizer + ("" if s.exact else " (approx.)"),
            str(s.requests),
            str(s.stored),
            str(s.to_send),
            f"{s.prompt_tokens:,}",
            f"{s.output_tokens_max:,}",
            _dollars(s.input_cost),
            _dollars(s.cost_max, bound=True),
        )
    return Group(table, Text(f"at most ${total:,.4f} to spend (unpriced models count 0)"))


def training_view(est: TrainingEstimated) -> Group:
    """`still estimate`: the student's training here: memory per method and process
    (weights, gradients, optimizer, activations), whether it fits, and the time."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    gib = 1024**3
    where = "GPU" if est.device == "cuda" else "RAM available"
    each = " (together)" if est.device != "cuda" and est.processes > 1 else ""
    table = Table(
        title=f"training {est.student}: {est.parameters / 1e6:,.1f}M parameters, "
        f"{est.processes} process(es), {est.precision}, on {est.device_name} "
        f"({est.free / gib:,.1f} GiB {where})"
    )
    table.add_column("method")
    for col in ("trainable", "weights", "gradients", "optimizer", "activations", "per process"):
        table.add_column(col, justify="right")
    table.add_column(f"fits{each}")
    for m, fits in zip(est.memory, est.fits, strict=True):
        chosen = " (task's)" if m.method == est.method else ""
        table.add_row(
            m.method + chosen,
            f"{est.trainable.get(m.method, 0) / 1e6:,.2f}M",
            *(f"{x / gib:,.2f} GiB" for x in (m.weights, m.gradients, m.optimizer)),
            f"{m.activations / gib:,.2f} GiB ({m.rows} x {m.tokens} tok)",
            f"{m.total / gib:,.2f} GiB",
            "yes" if fits else "NO",
        )
    minutes = est.seconds / 60
    time = Text(
        f"{est.method}: {est.rows} rows at most, {est.tokens:,} tokens over the epochs, "
        f"{est.steps} steps: about {minutes:,.1f} min at {est.tokens_per_s:,.0f} tok/s "
        f"({est.rate_from})"
    )
    return Group(table, time)


def selection_view(task_name: str, sel: Selected) -> Group:
    """`still select`: the candidates, most accurate first, then each pick's reason."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    n = sel.results[0].n if sel.results else 0
    table = Table(title=f"{task_name}: candidates on {n} gold train examples")
    for col in ("model", "accuracy [95% CI]", "unparseable", "errors", "s/example", "$ / 1k"):
        table.add_column(col)
    for r in sorted(sel.results, key=lambda r: -r.accuracy):
        table.add_row(
            r.model,
            f"{r.accuracy:.1%} [{r.ci_low:.1%}, {r.ci_high:.1%}]",
            str(r.unparseable),
            str(r.errors),
            f"{r.mean_latency_s:.3f}",
            "n/a" if r.cost_per_1k is None else f"${r.cost_per_1k:.4f}",
        )
    # Text, not markup: a reason quotes model references, which may hold brackets
    return Group(table, *(Text(f"{role}: {why}") for role, why in sel.reasons.items()))


def selection_models(sel: Selected) -> str:
    """The `models:` block a selection picks, ready to paste into the task file."""
    lines = ["models:", f"  teacher: {sel.teacher}", f"  student: {sel.student}"]
    if sel.control:
        lines.append(f"  control: {sel.control}")
    return "\n".join(lines)


def grade_summary(role: str, split: str, r: ModelResult) -> str:
    """`still grade`: accuracy with its interval, and what could not be graded."""
    return (
        f"{role} on {split}: {r.correct}/{r.n} correct, accuracy {r.accuracy:.1%} "
        f"[{r.ci_low:.1%}, {r.ci_high:.1%}]; {r.unparseable} unparseable, {r.errors} failed "
        "or missing"
    )


def train_summary(info: Mapping[str, Any]) -> str:
    """`still train`: where the model went, steps, time, throughput and the loss's fall.

    Args:
        info: What `still.pipeline.train_stage` returns (the model's train.json, with
            `skipped` when that exact model already existed).
    """
    if info.get("skipped"):
        return f"already trained: {info['out_dir']}"
    losses = info["losses"]
    line = (
        f"{info['out_dir']}: {info['steps']} steps, {info['seconds']:.0f} s, "
        f"{info['tokens_per_s']:.0f} tok/s, loss {losses[0]:.3f} -> {losses[-1]:.3f}"
    )
    if info.get("skipped_too_long"):
        line += f"; {info['skipped_too_long']} rows over max_length left out"
    return line


def agreement_summary(name: str, role: str, split: str, a: Agreement) -> str:
    """`still check-grader`: agreement with gold (interval and kappa), then the confusion."""
    lo, hi = a.accuracy_ci
    return (
        f"{name} on {role}/{split}: {a.n} answers, accuracy {a.accuracy:.1%} "
        f"[{lo:.1%}, {hi:.1%}], Cohen's kappa {a.kappa:.3f}\n{a.table()}"
    )


def gguf_summary(report: Mapping[str, Any]) -> list[str]:
    """`still export-gguf`: per file its size, agreement with the merged model and accuracy;
    then the quantizations skipped and why.

    Args:
        report: What `still.pipeline.export_gguf_stage` returns (gguf.json).
    """
    lines = [
        f"{info['file']}: {info['megabytes']} MB, agrees with the merged model on "
        f"{info['agreement']:.1%} of {report['examples']} held-out examples, accuracy "
        f"{info['accuracy']:.1%}"
        for info in report["files"].values()
    ]
    return lines + [f"{q} skipped: {why}" for q, why in report["skipped"].items()]
