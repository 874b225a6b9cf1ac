"""Recipe choice on validation: `still tune TASK` tries a small declared grid and picks.

A new task comes with no tuned recipe: SFT or label KD, LoRA or full, how many epochs,
which learning rate, and which teacher answers to learn from are guesses until measured.
`still tune` measures them the way `still curve` measures data sizes, and on the same
machinery: each point of the task's `tune:` grid trains a student on the train split's
exported teacher answers (exactly the files `still run` trains on: `export_stage`) and
scores it on the validation split, beside the teacher and the base student, with its
interval and the share of the gap it closes. Points run cheapest first (fewer epochs,
LoRA before full); once `--budget` minutes have passed since the tune began, no new point
starts (points already trained are always scored: a rerun with a larger budget goes on
where the last one stopped). The best point on validation wins; a tie goes to the
cheaper one (the shorter training).

Everything lands in `<run>/tune/`: each point's student (content-addressed, reused on a
rerun), `tune.json` (every point: settings, status, validation accuracy with its
interval, gap closed, training time; the choice, overall and per `keep`; the store reads
by split) and `tune.md`. The report shows the grid and the choice. `train.from_tune:
true` makes every later stage train with the choice (`Run.train_spec`), and `still run`
tunes first when tune.json is missing or stale; `train_stage` copies the chosen point's student
when it was trained on the very same data, instead of training it again.

A tune CHOOSES, so it never reads the test split: every answer it reads is of the train
or validation split, and `tune.json` records how many of each split's answers it read
from the store (`Store.reads`; the test split's count is zero).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from still.bench import ModelResult, gap_closed, gap_closed_interval
from still.cost import Budget
from still.curate import Keep
from still.errors import ModelError
from still.pipeline._curve import bench_validation, point_model, recipe_spec, train_point
from still.pipeline._export import export_stage
from still.pipeline._run import Run, StageError, capture_role
from still.pipeline._teacher import train_teacher_stage
from still.report import markdown_sections
from still.tasks import TrainSpec

log = logging.getLogger("still.pipeline")

TUNE_DIR = "tune"


@dataclass
class TunePoint:
    """One grid point: its settings, what became of it, and its validation result."""

    recipe: str
    method: str
    epochs: float
    learning_rate: float
    keep: Keep
    status: str = "pending"  # trained, reused, no data, budget spent
    kept: int | None = None
    accuracy: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    gap_closed: float | None = None
    gap_low: float | None = None
    gap_high: float | None = None
    train_seconds: float | None = None
    steps: int | None = None
    model: str | None = None

    @property
    def scored(self) -> bool:
        return self.accuracy is not None

    def settings(self) -> str:
        """The point as one line: `kd, lora, 2 epochs, lr 0.0002, keep parsed`."""
        return (
            f"{self.recipe}, {self.method}, {self.epochs:g} epochs, lr {self.learning_rate:g}, "
            f"keep {self.keep}"
        )


@dataclass
class Tuning:
    """A tune's outcome: every point, the ends of the gap, and the choice."""

    points: list[TunePoint]
    teacher: ModelResult
    student: ModelResult
    grid: dict[str, list[Any]]
    budget_minutes: float | None
    seconds: float
    reads: dict[str, int] = field(default_factory=dict)

    @property
    def best(self) -> TunePoint:
        return pick_best(self.points)

    def best_by_keep(self) -> dict[str, TunePoint]:
        return {
            k: pick_best([p for p in self.points if p.keep == k])
            for k in dict.fromkeys(p.keep for p in self.points if p.scored)
        }


def tune_grid(run: Run) -> dict[str, list[Any]]:
    """The task's grid, every axis filled in (unset axes: the task's `train:` value; the
    default epochs 1, 2 and train.epochs)."""
    spec, train = run.task.tune, run.task.train
    return {
        "recipe": list(spec.recipe),
        "method": list(spec.method) if spec.method else [str(train.method)],
        "epochs": list(spec.epochs or sorted({1.0, 2.0, float(train.epochs)})),
        "learning_rate": list(spec.learning_rate or [train.learning_rate]),
        "keep": list(spec.keep),
    }


def grid_points(grid: dict[str, list[Any]]) -> list[TunePoint]:
    """Every combination, cheapest first (fewer epochs, then LoRA before full), in the
    declared order otherwise."""
    points = [TunePoint(*combo) for combo in itertools.product(*grid.values())]
    return sorted(points, key=lambda p: (p.epochs, p.method == "full"))


def pick_best(points: list[TunePoint]) -> TunePoint:
    """The most accurate scored point; among equals, the one trained fastest.

    Raises:
        StageError: no point was scored.
    """
    scored = [p for p in points if p.scored]
    if not scored:
        raise StageError(
            "no tune point was trained: no teacher answer was kept to train on (or no KD "
            "targets were exported); see the warnings above"
        )
    return min(scored, key=lambda p: (-(p.accuracy or 0.0), p.train_seconds or 0.0))


def tune(
    run: Run,
    budget_minutes: float | None = None,
    budget: Budget | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Tuning:
    """Train and score every point of the task's grid on validation (see the module
    docstring), within `budget_minutes` (default: `tune.budget_minutes`) and, for model
    calls, the spending `budget`.

    Raises:
        StageError: no validation split, a student that is not a local model, or no
            point with anything to train on.
    """
    from still.models import local_path

    start = clock()
    reads_before = dict(run.store.reads)
    minutes = budget_minutes if budget_minutes is not None else run.task.tune.budget_minutes
    if not run.split.validation:
        raise StageError(
            "the task has no validation split (split.validation: 0): a tune chooses, and "
            "choices are made on validation, never on the held-out test split"
        )
    try:
        base = local_path(run.task.models.student)
    except ModelError as exc:
        raise StageError(f"can't train student {run.task.models.student!r}: {exc}") from exc
    grid = tune_grid(run)
    train_teacher_stage(run)  # a trained teacher (teacher_training) first; else nothing
    capture_role(run, "teacher", "train", budget=budget)
    teacher, teacher_ok = bench_validation(run, "teacher", None)
    student, student_ok = bench_validation(run, "student", None)
    kept: dict[str, int] = {}
    points = grid_points(grid)
    for p in points:
        if p.keep not in kept:
            try:
                kept[p.keep] = export_stage(run, p.keep, budget).kept
            except StageError as exc:  # kept no rows
                log.warning("tune: keep %s: %s", p.keep, exc)
                kept[p.keep] = 0
        p.kept = kept[p.keep]
        spec = point_spec(run.task.train, p)
        folder = run.data_dir(p.keep)
        out = point_model(folder, p.recipe, spec, base, into=run.dir / TUNE_DIR / p.keep)
        if out is None or not p.kept:
            p.status = "no data"
            log.warning("tune: %s: nothing to train on", p.settings())
            continue
        trained = (out / "train.json").is_file()
        spent = minutes is not None and clock() - start >= 60 * minutes
        if spent and not trained and any(q.scored for q in points):
            p.status = "budget spent"
            continue
        info = train_point(out, folder, spec, base, f"tune {p.settings()}")
        result, ok = bench_validation(run, "distilled", f"local:{out.resolve()}")
        _, p.gap_low, p.gap_high = gap_closed_interval(teacher_ok, student_ok, ok)
        p.status = "reused" if trained else "trained"
        p.accuracy, p.ci_low, p.ci_high = result.accuracy, result.ci_low, result.ci_high
        p.gap_closed = gap_closed(teacher.accuracy, student.accuracy, result.accuracy)
        p.train_seconds, p.steps = float(info["seconds"]), int(info["steps"])
        p.model = result.model
        log.info("tune: %s: %.1f%%", p.settings(), 100 * p.accuracy)
    reads = {s: n - reads_before.get(s, 0) for s, n in run.store.reads.items()}
    tuning = Tuning(
        points, teacher, student, grid, minutes, clock() - start,
        {s: n for s, n in reads.items() if n},
    )  # fmt: skip
    tuning.best  # noqa: B018 - raise now when nothing was scored
    return tuning


def point_spec(train: TrainSpec, p: TunePoint) -> TrainSpec:
    """The task's training config with a point's settings in it."""
    update = {"method": p.method, "epochs": p.epochs, "learning_rate": p.learning_rate}
    return recipe_spec(train, p.recipe).model_copy(update=update)


def tune_file(run: Run) -> Path:
    """Where `still tune` writes its outcome (read by `train.from_tune` and the report)."""
    return run.dir / TUNE_DIR / "tune.json"


def write_tune(run: Run, tuning: Tuning) -> Path:
    """tune.json and tune.md in `<run>/tune/`; returns the markdown file."""
    best, t, s = tuning.best, tuning.teacher, tuning.student
    path = tune_file(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"split": "validation", "n": t.n, "teacher_model": run.task.models.teacher,
             "student_model": run.task.models.student, "teacher": t.as_dict(),
             "student": s.as_dict(), "grid": tuning.grid, "budget_minutes": tuning.budget_minutes,
             "seconds": tuning.seconds, "store_reads": tuning.reads,
             "points": [asdict(p) for p in tuning.points], "best": asdict(best),
             "best_by_keep": {k: asdict(p) for k, p in tuning.best_by_keep().items()}},
            indent=1,
        )
    )  # fmt: skip
    md = path.with_suffix(".md")
    md.write_text(
        f"## {run.task.name}\n" + markdown_sections({"tune": json.loads(path.read_text())})
    )
    return md


def read_tune(run: Run) -> dict[str, Any]:
    """tune.json, when it was made for this run's teacher, student and grid.

    Raises:
        StageError: there is none, or it chose for another teacher, student or grid.
    """
    path = tune_file(run)
    if not path.is_file():
        raise StageError(
            f"train.from_tune: no {path}: run `still tune` first (or `still run`, which tunes "
            "when it is missing)"
        )
    data: dict[str, Any] = json.loads(path.read_text())
    now = {"teacher_model": run.task.models.teacher, "student_model": run.task.models.student,
           "grid": tune_grid(run)}  # fmt: skip
    stale = [k for k, v in now.items() if data.get(k) != v]
    if stale:
        raise StageError(
            f"train.from_tune: {path} chose for another {', '.join(stale)} than the task's "
            "now; run `still tune` again"
        )
    return data


def tune_is_current(run: Run) -> bool:
    """Whether tune.json exists and chose for this run's teacher, student and grid."""
    try:
        read_tune(run)
    except StageError:
        return False
    return True


def tuned_spec(run: Run, keep: Keep) -> TrainSpec:
    """The training config `still tune` chose for a student: the best point that learnt
    from the same answers (`keep`), else the best overall, in the task's `train:`."""
    data = read_tune(run)
    chosen = data["best_by_keep"].get(keep, data["best"])
    names = ("recipe", "method", "epochs", "learning_rate", "keep")
    return point_spec(run.task.train, TunePoint(*(chosen[k] for k in names)))


def tuned_model(run: Run, keep: Keep, base: Path) -> Path | None:
    """The student `still tune` already trained with the settings chosen for `keep`, when
    it learnt from exactly the data the run now has for it (its folder's content address
    covers data, settings and base model), for `train_stage` to copy instead of training
    it again; None when there is none (or the task does not train from the tune)."""
    if not run.task.train.from_tune:
        return None
    tuned = read_tune(run)
    chosen = tuned["best_by_keep"].get(keep, tuned["best"])
    spec = tuned_spec(run, keep)
    into = run.dir / TUNE_DIR / str(chosen["keep"])
    out = point_model(run.data_dir(keep), str(chosen["recipe"]), spec, base, into=into)
    return out if out is not None and (out / "train.json").is_file() else None
