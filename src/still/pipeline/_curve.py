"""Learning curves: validation accuracy against the number of teacher examples, per recipe.

`still curve TASK --sizes 100,200,400 --recipes sft,kd` answers the two questions a
practitioner asks before paying for more teacher labels or a fancier recipe: does more
teacher data still help, and does learning the teacher's whole label distribution (KD)
beat learning its answers (SFT) at the same data? Every point trains a student on the
first n training examples (the same n for every recipe, curated by the same graders) and
benchmarks it on the validation split, beside the teacher and the base student, with the
share of the gap closed and its paired-bootstrap interval. The curve CHOOSES (a recipe, a
method, how much teacher data to buy), so it never reads the held-out test split: that
is read once, by the final comparison of the configuration chosen here.

Everything lands in `<run>/curve/`: one folder per n (its train files and one model per
recipe, each skipped when already trained), `curve.json`, `curve.md` and `curve.png`.
Answers go through the run's store, so a rerun recomputes nothing it has.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from still.bench import ModelResult, evaluate, gap_closed, gap_closed_interval
from still.curate import TRAIN_FILE, Keep, export
from still.errors import ModelError
from still.pipeline._run import Run, StageError, capture_role
from still.pipeline._train import training_progress
from still.tasks import TUNE_RECIPES, TrainSpec

log = logging.getLogger("still.pipeline")

RECIPES = TUNE_RECIPES


@dataclass
class CurvePoint:
    """One trained student: recipe, teacher examples offered and kept, held-out result."""

    recipe: str
    method: str  # lora or full
    n: int
    kept: int
    accuracy: float
    ci_low: float
    ci_high: float
    gap_closed: float | None
    gap_low: float | None
    gap_high: float | None
    train_seconds: float
    tokens_per_s: float
    steps: int
    model: str


def recipe_spec(base: TrainSpec, recipe: str) -> TrainSpec:
    """The task's training config with a recipe swapped in: `sft`, `kd` (the task's
    train.kd) or `kd:<divergence>`.

    Raises:
        StageError: an unknown recipe name.
    """
    if recipe not in RECIPES:
        raise StageError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    if recipe == "sft":
        return base.model_copy(update={"recipe": "sft"})
    kd = base.kd
    if ":" in recipe:
        kd = kd.model_copy(update={"divergence": recipe.split(":", 1)[1]})
    return base.model_copy(update={"recipe": "kd", "kd": kd})


def learning_curve(
    run: Run,
    sizes: list[int],
    recipes: list[str],
    keep: Keep = "parsed",
    methods: list[str] | None = None,
) -> tuple[list[CurvePoint], dict[str, ModelResult]]:
    """Train and benchmark a student per (size, recipe, method: lora or full, default
    the task's train.method); see the module docstring.

    Returns:
        The points in (size, recipe) order, and the teacher's and base student's held-out
        results (the ends of the gap).

    Raises:
        StageError: no sizes, a size larger than the train split, a student that is
            not a local model, or no point with anything to train on.
    """
    from still.models import local_path

    for r in recipes:
        recipe_spec(run.task.train, r)  # fail on a bad name before any work
    methods = methods or [run.task.train.method]
    if set(methods) - {"lora", "full", "qlora"}:
        raise StageError(f"unknown method in {methods}: lora, full or qlora")
    if not sizes:
        raise StageError("no sizes given")
    if not run.split.validation:
        raise StageError(
            "the task has no validation split (split.validation: 0): a curve chooses, and "
            "choices are made on validation, never on the held-out test split"
        )
    if max(sizes) > len(run.split.train):
        raise StageError(
            f"largest size {max(sizes)} exceeds the {len(run.split.train)} training examples"
        )
    try:
        base = local_path(run.task.models.student)
    except ModelError as exc:
        raise StageError(f"can't train student {run.task.models.student!r}: {exc}") from exc
    capture_role(run, "teacher", "train", limit=max(sizes))
    teacher_train = run.stored("teacher", "train", include_failed=True)
    teacher, teacher_ok = bench_validation(run, "teacher", None)
    student, student_ok = bench_validation(run, "student", None)
    ends = {"teacher": teacher, "student": student}
    points = []
    for n in sorted(sizes):
        folder = run.dir / "curve" / f"n{n}"
        folder.mkdir(parents=True, exist_ok=True)
        stats = export(
            run.task,
            run.split.train[:n],
            teacher_train,
            run.graders,
            run.heldout_ids,
            run.split.fewshot,
            folder / TRAIN_FILE,
            heldout=run.split.heldout + run.split.validation,
            keep=keep,
            capture=run.judge(),
        )
        for recipe, method in [(r, m) for r in recipes for m in methods]:
            spec = recipe_spec(run.task.train, recipe).model_copy(update={"method": method})
            out = point_model(folder, recipe, spec, base)
            if out is None or stats.kept == 0:
                log.warning("n=%d %s: nothing to train on", n, recipe)
                continue
            info = train_point(out, folder, spec, base, f"train n={n} {recipe} ({method})")
            result, ok = bench_validation(run, "distilled", f"local:{out.resolve()}")
            _, low, high = gap_closed_interval(teacher_ok, student_ok, ok)
            points.append(
                CurvePoint(
                    recipe, method, n, stats.kept, result.accuracy, result.ci_low, result.ci_high,
                    gap_closed(teacher.accuracy, student.accuracy, result.accuracy), low, high,
                    float(info["seconds"]), float(info["tokens_per_s"]), int(info["steps"]),
                    result.model,
                )
            )  # fmt: skip
            log.info("n=%d %s: %.1f%%", n, recipe, 100 * result.accuracy)
    if not points:
        raise StageError(
            "no student was trained: no size kept a teacher answer to train on (or no KD "
            "targets were exported); see the warnings above"
        )
    return points, ends


def point_model(
    folder: Path, recipe: str, spec: TrainSpec, base: Path, into: Path | None = None
) -> Path | None:
    """Where the student of one point (a curve's, a tune's) is or will be, trained with
    `spec` on the data exported to `folder` (in `into`, default `folder`); None when that
    recipe's data file is not there (label KD from a teacher without label scores)."""
    from still.train import get_recipe

    data = folder / get_recipe(spec.recipe).data  # sft, or label KD: no teacher needed
    return model_dir(into or folder, recipe, spec, data, base) if data.exists() else None


def train_point(out: Path, folder: Path, spec: TrainSpec, base: Path, desc: str) -> dict[str, Any]:
    """Train the student `point_model` named, unless it is there; its train.json."""
    from still.train import get_recipe

    if not (out / "train.json").is_file():
        recipe = get_recipe(spec.recipe)
        with training_progress(desc) as on_step:
            recipe.load()(base, folder / recipe.data, out, spec, on_step=on_step)
    info: dict[str, Any] = json.loads((out / "train.json").read_text())
    return info


def model_dir(folder: Path, recipe: str, spec: TrainSpec, data: Path, base: Path) -> Path:
    """Where a curve point's student goes: named by recipe and method, addressed by a hash
    of its data, full training config and base model, so a changed export (another
    --keep, a relabelled teacher) or recipe trains a new student instead of reusing a
    stale one."""
    h = hashlib.sha256(data.read_bytes())
    h.update(spec.model_dump_json().encode())
    h.update(str(base).encode())
    return folder / f"{recipe.replace(':', '-')}-{spec.method}-{h.hexdigest()[:10]}"


def bench_validation(run: Run, role: str, model: str | None) -> tuple[ModelResult, list[bool]]:
    """One model on the validation split through the run's store (the role's prompt): its
    summary and whether each example was right (for paired intervals)."""
    stats = capture_role(run, role, "validation", model=model)
    result, rows, _ = evaluate(
        role, model or run.model_for(role), run.split.validation, stats.completions,
        run.graders, run.task.labels, capture=run.judge(),
    )  # fmt: skip
    return result, [bool(r["correct"]) for r in rows]


def write_curve(
    run: Run, points: list[CurvePoint], ends: dict[str, ModelResult], extra: dict[str, Any]
) -> Path:
    """curve.json, curve.md and curve.png in `<run>/curve/`; returns the markdown path."""
    folder = run.dir / "curve"
    t, b = ends["teacher"], ends["student"]
    best = max(points, key=lambda p: p.accuracy, default=None)
    (folder / "curve.json").write_text(
        json.dumps(
            {"split": "validation", "teacher": t.as_dict(), "student": b.as_dict(),
             "points": [asdict(p) for p in points], "best": asdict(best) if best else None,
             **extra},
            indent=1,
        )
    )  # fmt: skip
    lines = [
        f"## {run.task.name}: validation accuracy by teacher examples and recipe",
        "",
        f"Teacher {_acc(t.accuracy, t.ci_low, t.ci_high)}; base student "
        f"{_acc(b.accuracy, b.ci_low, b.ci_high)}; {len(run.split.validation)} validation "
        "examples (the held-out test split is not read).",
        "",
        "| recipe | method | teacher examples | kept | accuracy [95% CI] | gap closed [95% CI] "
        "| train s | steps | tok/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        gap = "n/a" if p.gap_closed is None else f"{p.gap_closed:.0%}"
        if p.gap_low is not None and p.gap_high is not None:
            gap += f" [{p.gap_low:.0%}, {p.gap_high:.0%}]"
        lines.append(
            f"| {p.recipe} | {p.method} | {p.n} | {p.kept} | "
            f"{_acc(p.accuracy, p.ci_low, p.ci_high)} | {gap} | {p.train_seconds:.0f} | "
            f"{p.steps} | {p.tokens_per_s:.0f} |"
        )
    if best is not None:
        lines += ["", f"Best on validation: {best.recipe}, {best.method}, {best.n} teacher "
                  f"examples ({_acc(best.accuracy, best.ci_low, best.ci_high)})."]  # fmt: skip
    md = folder / "curve.md"
    md.write_text("\n".join(lines) + "\n")
    _plot(folder / "curve.png", points, t, b)
    return md


def _acc(a: float, lo: float, hi: float) -> str:
    return f"{a:.1%} [{lo:.1%}, {hi:.1%}]"


def _plot(path: Path, points: list[CurvePoint], t: ModelResult, b: ModelResult) -> None:
    """Accuracy (95% interval) against teacher examples, a line per recipe, with the
    teacher and the base student as horizontal bands."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ModuleNotFoundError:
        log.warning("curve.png not written: matplotlib is not installed")
        return
    fig = Figure(figsize=(6.4, 4.0), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for res, name, colour in ((t, "teacher", "#4c72b0"), (b, "base student", "#dd8452")):
        ax.axhspan(res.ci_low, res.ci_high, color=colour, alpha=0.15)
        ax.axhline(res.accuracy, color=colour, linestyle="--", label=name)
    for line in dict.fromkeys((p.recipe, p.method) for p in points):
        ps = [p for p in points if (p.recipe, p.method) == line]
        recipe = line[0] if len({p.method for p in points}) == 1 else f"{line[0]} ({line[1]})"
        ax.errorbar(
            [p.n for p in ps], [p.accuracy for p in ps],
            yerr=[[p.accuracy - p.ci_low for p in ps], [p.ci_high - p.accuracy for p in ps]],
            marker="o", capsize=4, label=recipe,
        )  # fmt: skip
    ax.set_xlabel("teacher examples")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Accuracy by teacher examples and recipe")
    fig.savefig(path)
