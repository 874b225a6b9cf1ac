"""The Run: one pipeline execution in its own folder, every stage resumable.

    runs/<task>/
      task.yaml          snapshot of the task file (run.json: where the original lives)
      split.json         train / held-out / few-shot ids (checked again at export)
      still.db           the completion store
      train.jsonl        curated training data (student prompt, teacher answer)
      distilled-<hash>/  the merged student; the hash covers data, recipe and base model
      report.md|json, results.jsonl|parquet

Each stage looks up what is already stored: a second `still run` calls no model for a
request it has answered, and retrains nothing whose inputs did not change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from still.bench import Comparison, ModelResult, evaluate
from still.capture import CaptureStats, build_messages, build_request, capture
from still.cost import Budget, cost_model_for, price_for
from still.curate import ExportStats, Keep, export
from still.graders import Capture, Grader, answer_of, build_grader, grade, prepare_graders
from still.models import get_model
from still.report import print_table, write_reports
from still.store import Store
from still.tasks import Example, LoadReport, Split, Task, load_examples, load_task, split_examples
from still.types import Completion, Request

log = logging.getLogger("still.pipeline")

ROLES = ("teacher", "student", "distilled", "control")


class StageError(RuntimeError):
    """A stage could not do its work (and says so rather than reporting success)."""


@dataclass
class Run:
    """A task, its data split and its folder: what every stage works on."""

    task: Task
    dir: Path
    store: Store
    split: Split
    load_report: LoadReport
    graders: list[Grader] = field(default_factory=list)

    @property
    def heldout_ids(self) -> set[str]:
        return {e.id for e in self.split.heldout}

    def model_for(self, role: str) -> str:
        """The model reference playing `role` (`distilled` needs a trained student)."""
        m = self.task.models
        if role == "teacher":
            return m.teacher
        if role == "student":
            return m.student
        if role == "control":
            return m.control or m.student
        if role == "distilled":
            path = self.distilled_dir()
            if not (path / "config.json").is_file():
                raise StageError(f"no distilled student at {path}: run `still train` first")
            return "local:" + str(path.resolve())
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")

    def examples(self, split: str) -> list[Example]:
        if split == "train":
            return self.split.train
        if split == "heldout":
            return self.split.heldout
        raise ValueError(f"unknown split {split!r}: use train or heldout")

    def requests(
        self, role: str, split: str, limit: int | None = None, model: str | None = None
    ) -> dict[str, Request]:
        """A split's requests as `role` asks them (its prompt), to the role's model or to
        `model` (another student in the role's place: a curve point, a GGUF read-back)."""
        model = model or self.model_for(role)
        exs = self.examples(split)[:limit]
        return {e.id: build_request(self.task, role, model, e, self.split.fewshot) for e in exs}

    @property
    def train_file(self) -> Path:
        return self.dir / "train.jsonl"

    @property
    def dpo_file(self) -> Path:
        """Preference pairs in TRL's format, as `still export-dpo` writes them."""
        return self.dir / "dpo-trl.jsonl"

    @property
    def soft_file(self) -> Path:
        from still.curate import SOFT_FILE

        return self.dir / SOFT_FILE

    def distilled_dir(self) -> Path:
        """Content-addressed: new data, recipe or base model means a new model (and new
        store keys), so stale answers of an older student are never reused."""
        h = hashlib.sha256()
        h.update(self.train_file.read_bytes() if self.train_file.exists() else b"")
        train = self.task.train
        if train.recipe == "sft":  # hashed as before recipes existed: SFT models keep theirs
            h.update(train.model_dump_json(exclude={"recipe", "kd", "dpo"}).encode())
        else:  # KD learns from the teacher's scores (label KD) or the teacher itself
            from still.curate import TOKENS_FILE

            soft = {"kd": self.soft_file if self.task.labels else self.dir / TOKENS_FILE,
                    "dpo": self.dpo_file}[train.recipe]  # fmt: skip
            h.update(soft.read_bytes() if soft.exists() else b"")
            h.update(train.model_dump_json().encode())
            h.update(self.task.models.teacher.encode())
        h.update(self.task.models.student.encode())
        return self.dir / f"distilled-{h.hexdigest()[:10]}"


def open_run(task_path: Path | str, run_dir: Path | str | None = None) -> Run:
    """Load a task, split its data and open (or create) its run folder."""
    task = load_task(task_path)
    examples, report = load_examples(task)
    if not examples:
        raise StageError(f"{task_path}: no usable examples ({report.summary()})")
    fewshot = max((p.fewshot for p in task.prompts.values()), default=0)
    split = split_examples(examples, task.split, fewshot)
    d = Path(run_dir) if run_dir else Path("runs") / task.name
    d.mkdir(parents=True, exist_ok=True)
    snapshot = d / "task.yaml"
    if not snapshot.exists() or not snapshot.samefile(task_path):
        shutil.copyfile(task_path, snapshot)
        # where the task came from: its relative data paths resolve against that folder
        (d / "run.json").write_text(json.dumps({"task_file": str(Path(task_path).resolve())}))
    (d / "split.json").write_text(
        json.dumps(
            {
                "train": [e.id for e in split.train],
                "heldout": [e.id for e in split.heldout],
                "fewshot": [e.id for e in split.fewshot],
            }
        )
    )
    return Run(
        task, d, Store(d / "still.db"), split, report, [build_grader(g) for g in task.graders]
    )


def capture_role(
    run: Run,
    role: str,
    split: str,
    limit: int | None = None,
    budget: Budget | None = None,
    model: str | None = None,
) -> CaptureStats:
    """Stage: answer a split's examples with a role's model (or `model` in its place),
    storing every completion (with its cost, when the model has a price; within `budget`,
    when given)."""
    reqs = run.requests(role, split, limit, model)
    ref = model or run.model_for(role)
    desc = f"{role} on {split}" if model is None else f"{ref.rsplit('/', 1)[-1]} on {split}"
    stats = capture(
        lambda: get_model(ref),
        reqs,
        run.store,
        metadata={"run": run.dir.name, "task": run.task.name, "role": role, "split": split},
        batch_size=run.task.generation.batch_size,
        desc=desc,
        cost_model=cost_model_for(ref, run.task.prices, run.task.tokenizers),
        budget=budget,
    )
    if run.task.labels:
        stats.unparseable = sum(
            answer_of(c, run.task.labels)[1] == "unparseable" for c in stats.completions.values()
        )
    return stats


def judge_capture(run: Run, budget: Budget | None = None) -> Capture:
    """How the run's judge graders are called: through the run's store (cached and
    resumable, tagged role=judge and grader=<name>), priced and within `budget`."""

    def ask(requests: dict[str, Request], grader: str) -> dict[str, Completion]:
        model = next(iter(requests.values())).model
        if model == run.task.models.teacher:
            log.warning(
                "grader %r: the judge %s is also the teacher: it grades its own answers",
                grader,
                model,
            )
        stats = capture(
            lambda: get_model(model),
            requests,
            run.store,
            metadata={
                "run": run.dir.name,
                "task": run.task.name,
                "role": "judge",
                "grader": grader,
            },
            batch_size=run.task.generation.batch_size,
            desc=f"judge {grader}",
            cost_model=cost_model_for(model, run.task.prices, run.task.tokenizers),
            budget=budget,
        )
        return stats.completions

    return ask


def export_stage(
    run: Run,
    keep: Keep = "correct",
    budget: Budget | None = None,
    keep_if: str | None = None,
    force: bool = False,
) -> ExportStats:
    """Stage: write the passing teacher answers as student-prompt chat JSONL (and the
    per-row curation report, curation.jsonl). `keep_if` overrides the task's
    `curate.filter`. With `curate.min_kappa`, judges that decide what is kept must have
    passed `still check-grader` (GraderNotTrusted otherwise, unless `force`)."""
    keep_if = keep_if or run.task.curate.filter
    if run.task.curate.min_kappa is not None and (keep == "correct" or keep_if):
        from still.grader_check import require_trusted
        from still.graders import parse_filter

        deciding = set(parse_filter(keep_if).names) if keep_if else {g.name for g in run.graders}
        require_trusted(run, deciding, run.task.curate.min_kappa, force)
    teacher = _stored(run, "teacher", "train", include_failed=True)
    missing = len(run.split.train) - len(teacher)
    if missing:
        raise StageError(
            f"{missing} training examples have no teacher answer: run "
            "`still capture --role teacher --split train` first"
        )
    stats = export(
        run.task,
        run.split.train,
        teacher,
        run.graders,
        run.heldout_ids,
        run.split.fewshot,
        run.train_file,
        keep=keep,
        capture=judge_capture(run, budget),
        keep_if=keep_if,
    )
    if stats.kept == 0:
        raise StageError(f"export kept no rows ({stats.summary()}); nothing to train on")
    return stats


def export_dpo_stage(run: Run, fmt: str = "trl", budget: Budget | None = None) -> tuple[Path, int]:
    """Stage: preference pairs on the train split, the teacher's passing answer against
    the base student's failing one to the same (student) prompt, written to
    dpo-<fmt>.jsonl. Captures the base student on the train split first (stored).

    Returns the file and the number of pairs.
    """
    from still.preference import pairs_from, write_dpo

    teacher = _stored(run, "teacher", "train", include_failed=True)
    if len(teacher) < len(run.split.train):
        raise StageError("run `still capture --role teacher --split train` first")
    student = capture_role(run, "student", "train", budget=budget).completions
    ask = judge_capture(run, budget)

    def verdicts(comps: dict[str, Completion]) -> dict[str, tuple[str, bool]]:
        pairs = [(ex, comps.get(ex.id)) for ex in run.split.train]
        prepare_graders(run.graders, pairs, run.task.labels, ask)
        out = {}
        for ex, comp in pairs:
            answer, _ = answer_of(comp, run.task.labels)
            if answer is not None:
                grades = grade(run.graders, ex, comp, run.task.labels)
                out[ex.id] = (answer, all(g.passed for g in grades))
        return out

    prompts = {
        ex.id: [m.model_dump() for m in build_messages(run.task, "student", ex, run.split.fewshot)]
        for ex in run.split.train
    }
    pairs = pairs_from(prompts, verdicts(teacher), verdicts(student), run.heldout_ids)
    out = run.dir / f"dpo-{fmt}.jsonl"
    write_dpo(pairs, out, fmt)  # type: ignore[arg-type]
    return out, len(pairs)


@contextmanager
def training_progress(desc: str) -> Iterator[Callable[[int, int, float], None]]:
    """A progress bar for a training run, as the trainers' `on_step(step, total, loss)`."""
    from tqdm import tqdm

    with tqdm(desc=desc, unit="step", leave=False) as bar:

        def on_step(step: int, total: int, loss: float) -> None:
            bar.total = total
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update(1)

        yield on_step


def train_stage(run: Run, force: bool = False) -> dict[str, Any]:
    """Stage: fine-tune the student on train.jsonl (skipped if this exact model exists)."""
    from still.models._local import local_path
    from still.train import train_kd, train_sft

    if not run.train_file.exists():
        raise StageError(f"{run.train_file} does not exist: run `still export` first")
    recipe = run.task.train.recipe
    data = run.train_file
    trainer: Callable[..., Any] = train_sft
    if recipe == "kd" and not run.task.labels:
        from functools import partial

        from still.curate import TOKENS_FILE
        from still.train.kd_tokens import train_kd_tokens

        data = run.dir / TOKENS_FILE
        try:  # a local teacher gives its whole distribution, live
            trainer = partial(train_kd_tokens, teacher_model=local_path(run.task.models.teacher))
        except ValueError:  # an endpoint's: the top-k logprobs stored with its answers
            from still.train.kd_topk import train_kd_topk

            trainer = train_kd_topk
        if not data.exists():
            raise StageError(f"{data} does not exist: run `still export` first")
    elif recipe == "dpo":
        from still.train.dpo import train_dpo_spec

        data, trainer = run.dpo_file, train_dpo_spec
        if not data.exists():
            raise StageError(
                f"{data} does not exist: run `still export-dpo` first (preference pairs: the "
                "teacher's passing answer against the base student's failing one)"
            )
    elif recipe == "kd":
        data, trainer = run.soft_file, train_kd
        if not data.exists():
            raise StageError(
                f"{data} does not exist: the teacher's answers carry no label scores. Local "
                "teachers give them in score mode (generation.mode: score); re-run "
                "`still export` after capturing with one, or use train.recipe: sft"
            )
    out = run.distilled_dir()
    if (out / "train.json").is_file() and not force:
        info: dict[str, Any] = json.loads((out / "train.json").read_text())
        info["skipped"] = True
        return info
    ref = run.task.models.student
    try:
        base = local_path(ref)
    except ValueError as exc:
        raise StageError(f"can't train student {ref!r}: {exc}") from exc
    with training_progress(f"train ({recipe}, {run.task.train.method})") as on_step:
        try:
            trainer(base, data=data, out_dir=out, spec=run.task.train, on_step=on_step)
        except ValueError as exc:  # a tokenizer mismatch, no usable rows: say so plainly
            raise StageError(str(exc)) from exc
    info = json.loads((out / "train.json").read_text())
    info["skipped"] = False
    losses = info.get("losses") or [math.nan]
    log.info(
        "%s: %d steps on %d examples in %.0f s, %.0f tok/s, loss %.3f -> %.3f",
        info.get("recipe", recipe),
        info["steps"],
        info["examples"],
        info["seconds"],
        info.get("tokens_per_s", 0.0),
        losses[0],
        losses[-1],
    )
    if info.get("skipped_too_long"):
        log.warning(
            "%d training rows were longer than train.max_length=%d tokens and left out",
            info["skipped_too_long"],
            run.task.train.max_length,
        )
    if info.get("skipped_no_targets"):
        log.warning(
            "%d training rows had no usable soft targets (no stored top-k logprobs, or "
            "tokens that do not spell the kept answer) and were left out",
            info["skipped_no_targets"],
        )
    return info


def rotated_requests(run: Run, role: str) -> list[tuple[str, int, Request, str]]:
    """For a multiple-choice task: every rotation of the first `multiple_choice.questions`
    held-out questions as `role` would be asked it, as (question id, correct position,
    request, option text by position joined with NUL: what each letter stood for)."""
    spec = run.task.multiple_choice
    if spec is None:
        return []
    from still.bench import rotate_example

    model = run.model_for(role)
    labels = run.task.labels or []
    out = []
    for ex in run.split.heldout[: spec.questions]:
        for rex, ans in rotate_example(ex, spec.options, labels):
            req = build_request(run.task, role, model, rex, run.split.fewshot)
            out.append((ex.id, ans, req, "\0".join(rex.fields[f] for f in spec.options)))
    return out


def position_bias_stage(
    run: Run, role: str, budget: Budget | None = None, call: bool = True
) -> Any:
    """Stage (multiple-choice tasks): a role's position bias over rotated held-out
    questions (still.bench.PositionBias), or None for other tasks. The rotations are
    captured through the store (resumable, priced) when `call`; otherwise only stored
    answers are used and a missing one counts as failed (`still report`)."""
    from still.bench import Answer, summarise

    jobs = rotated_requests(run, role)
    if not jobs:
        return None
    ref = run.model_for(role)
    if call:
        capture(
            lambda: get_model(ref),
            {f"{q}#{i}": req for i, (q, _, req, _) in enumerate(jobs)},
            run.store,
            metadata={
                "run": run.dir.name,
                "task": run.task.name,
                "role": role,
                "split": "heldout-rotated",
            },  # fmt: skip
            batch_size=run.task.generation.batch_size,
            desc=f"{role} position bias",
            cost_model=cost_model_for(ref, run.task.prices, run.task.tokenizers),
            budget=budget,
        )
    labels = run.task.labels or []
    answers = []
    for q, ans, req, options in jobs:
        hit = run.store.lookup(req.key(), include_failed=True)
        picked, _ = answer_of(hit, labels)
        pos = labels.index(picked) if picked in labels else None
        answers.append(Answer(q, ans, pos, None if pos is None else options.split("\0")[pos]))
    bias = summarise(role, answers, labels)
    bias.model = ref
    return bias


def grade_stage(run: Run, role: str, split: str) -> ModelResult:
    """Stage: grade a role's stored completions on a split (no model call) and store the
    grades. Examples without a stored answer count as failed, never skipped."""
    examples = run.examples(split)
    comps = _stored(run, role, split, include_failed=True)
    summary, _, grades = evaluate(
        role,
        run.model_for(role),
        examples,
        comps,
        run.graders,
        run.task.labels,
        capture=judge_capture(run),
    )
    run.store.put_grades(grades)
    return summary


def bench_stage(
    run: Run,
    roles: tuple[str, ...] = ROLES,
    limit: int | None = None,
    show: bool = True,
    budget: Budget | None = None,
) -> Comparison:
    """Stage: every role's model on the held-out split; writes the reports."""
    results: list[ModelResult] = []
    rows: list[dict[str, Any]] = []
    heldout = run.split.heldout[:limit]
    for role in roles:
        stats = capture_role(run, role, "heldout", limit, budget)
        model = run.model_for(role)
        summary, per_example, grades = evaluate(
            role,
            model,
            heldout,
            stats.completions,
            run.graders,
            run.task.labels,
            price_for(model, run.task.prices),
            capture=judge_capture(run, budget),
        )
        run.store.put_grades(grades)
        summary.prompt = run.task.prompt_role(role)
        results.append(summary)
        rows += per_example
        position_bias_stage(run, role, budget)
    cmp = Comparison(results)
    write_reports(
        cmp,
        rows,
        run.dir,
        title=f"{run.task.name}: held-out comparison ({len(heldout)} examples)",
        extra=report_extra(run, cmp, rows),
    )
    if show:
        print_table(cmp, title=f"{run.task.name} — {len(heldout)} held-out examples")
    return cmp


def report_stage(run: Run, roles: tuple[str, ...] = ROLES, show: bool = True) -> Comparison:
    """Stage (`still report`): rebuild the held-out comparison and every report file from
    the store alone. No model is called, judges included: an answer that was never
    captured counts as missing (a failure), never as a fresh call."""
    results: list[ModelResult] = []
    rows: list[dict[str, Any]] = []
    heldout = run.split.heldout
    for role in roles:
        try:
            model = run.model_for(role)
        except StageError:
            continue  # no distilled student yet: nothing of it to report
        comps = _stored(run, role, "heldout", include_failed=True)
        summary, per_example, _ = evaluate(
            role,
            model,
            heldout,
            comps,
            run.graders,
            run.task.labels,
            price_for(model, run.task.prices),
            capture=_stored_only(run),
        )
        summary.prompt = run.task.prompt_role(role)
        results.append(summary)
        rows += per_example
    if not results:
        raise StageError("nothing stored to report on")
    cmp = Comparison(results)
    title = f"{run.task.name}: held-out comparison ({len(heldout)} examples)"
    write_reports(cmp, rows, run.dir, title=title, extra=report_extra(run, cmp, rows))
    if show:
        print_table(cmp, title=f"{run.task.name} — {len(heldout)} held-out examples")
    return cmp


def report_extra(run: Run, cmp: Comparison, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What reports add to the comparison: prompt compression and break-even
    (still.bench.economics) and accuracy by input length."""
    from still.bench import accuracy_by_length, economics
    from still.bench._bias import label_distribution
    from still.bench._paired import compare_pairs, gap_closed_interval

    seconds = None
    try:
        info = run.distilled_dir() / "train.json"
        if info.is_file():
            seconds = float(json.loads(info.read_text()).get("seconds") or 0) or None
    except (OSError, ValueError):
        seconds = None
    teacher_price = price_for(run.task.models.teacher, run.task.prices)
    by_role: dict[str, dict[str, bool]] = {}
    for r in rows:
        by_role.setdefault(r["role"], {})[r["example_id"]] = bool(r["correct"])
    gap: dict[str, Any] = {}
    if {"teacher", "student", "distilled"} <= set(by_role):
        ids = [
            i for i in by_role["teacher"] if i in by_role["student"] and i in by_role["distilled"]
        ]
        point, low, high = gap_closed_interval(
            *([by_role[role][i] for i in ids] for role in ("teacher", "student", "distilled"))
        )
        gap = {"gap_closed": point, "ci_low": low, "ci_high": high}
    return {
        "paired": compare_pairs(rows),
        "gap_closed_interval": gap,
        "economics": economics(cmp, teacher_price, seconds, run.task.train.cost_per_hour),
        "accuracy_by_length": accuracy_by_length(rows),
        "label_distribution": label_distribution(rows, run.task.labels) if run.task.labels else [],
        "position_bias": [
            {"role": r.role, **b.as_dict()}
            for r in cmp.results
            if (b := position_bias_stage(run, r.role, call=False)) is not None
        ],
        "selection": _selection(run),
    }


def _selection(run: Run) -> dict[str, Any] | None:
    """What `still select` decided for this run (selection.json), for the report."""
    path = run.dir / "selection.json"
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError:
        log.warning("%s is not valid JSON: left out of the report", path)
        return None
    return data


def _stored_only(run: Run) -> Capture:
    """A judge capture that answers from the store and never calls a model."""

    def ask(requests: dict[str, Request], grader: str) -> dict[str, Completion]:
        found = {}
        for key, req in requests.items():
            hit = run.store.lookup(req.key(), include_failed=True)
            if hit is not None:
                found[key] = hit
        return found

    return ask


def _stored(run: Run, role: str, split: str, include_failed: bool = False) -> dict[str, Completion]:
    """Completions already in the store for a role on a split (by request hash); failed
    attempts too if asked, so they are counted as failures rather than as missing."""
    out = {}
    for ex_id, req in run.requests(role, split).items():
        hit = run.store.lookup(req.key(), include_failed=include_failed)
        if hit is not None:
            out[ex_id] = hit
    return out


def run_all(
    task_path: Path | str,
    run_dir: Path | str | None = None,
    keep: Keep = "correct",
    budget: Budget | None = None,
) -> tuple[Run, Comparison]:
    """`still run`: capture -> export -> train -> bench, each skipping stored work; every
    model call of every stage counts against one `budget`."""
    run = open_run(task_path, run_dir)
    log.info("%s", run.load_report.summary())
    stats = capture_role(run, "teacher", "train", budget=budget)
    log.info("teacher on train: %s", stats.summary())
    if stats.failed == stats.total:
        raise StageError("every teacher request failed; see `still store ls --errors`")
    log.info("export: %s", export_stage(run, keep, budget).summary())
    train_stage(run)
    return run, bench_stage(run, budget=budget)


def export_gguf_stage(
    run: Run, quants: tuple[str, ...] = ("f16", "q4_k_m"), verify: int | None = None
) -> dict[str, Any]:
    """Stage (`still export-gguf`): the distilled student as GGUF files plus an Ollama
    Modelfile in `<run>/gguf/`, each file read back and asked the first `verify` held-out
    questions (all by default) to measure its agreement with the merged model. A quant
    whose tool is missing is skipped with the reason (in the result and gguf.json)."""
    from still import gguf
    from still.bench import evaluate

    unknown = set(quants) - set(gguf.QUANTS)
    if unknown:
        raise StageError(f"unknown quantization {sorted(unknown)}; choose from {gguf.QUANTS}")
    merged = run.model_for("distilled")  # StageError when not trained yet
    model_dir = Path(merged.removeprefix("local:"))
    out = run.dir / "gguf"
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for q in quants:
        target = out / f"model-{q}.gguf"
        try:
            if q == "q4_k_m":
                f16 = out / "model-f16.gguf"
                if not f16.is_file():
                    gguf.convert(model_dir, f16, "f16")
                files[q] = gguf.quantize(f16, target, "Q4_K_M")
            else:
                files[q] = gguf.convert(model_dir, target, q)
        except gguf.ToolMissing as exc:
            if q != "q4_k_m":
                raise StageError(str(exc)) from exc
            skipped[q] = str(exc)
            log.warning("%s skipped: %s", q, exc)
        except RuntimeError as exc:
            raise StageError(str(exc)) from exc
    heldout = run.split.heldout[:verify]
    reference = capture_role(run, "distilled", "heldout", limit=verify).completions
    report: dict[str, Any] = {"merged_model": merged, "examples": len(heldout), "files": {},
                              "skipped": skipped}  # fmt: skip
    for q, path in files.items():
        back = gguf.load_gguf(path, out / f".{q}-readback")
        ref = f"local:{back.resolve()}"
        got = capture_role(run, "distilled", "heldout", limit=verify, model=ref)
        same = sum(
            got.completions[e.id].text == reference[e.id].text
            for e in heldout
            if e.id in got.completions and e.id in reference
        )
        result, _, _ = evaluate("gguf", ref, heldout, got.completions, run.graders,
                                run.task.labels, capture=judge_capture(run))  # fmt: skip
        report["files"][q] = {
            "file": path.name,
            "megabytes": round(path.stat().st_size / 1e6, 1),
            "agreement": same / len(heldout) if heldout else None,
            "accuracy": result.accuracy,
        }
        shutil.rmtree(back, ignore_errors=True)
    if files:
        smallest = min(files.values(), key=lambda p: p.stat().st_size)
        from transformers import AutoTokenizer

        template = AutoTokenizer.from_pretrained(model_dir).chat_template
        system = run.task.prompt_for("student").system
        (out / "Modelfile").write_text(
            gguf.modelfile(
                smallest.name,
                template if isinstance(template, str) else None,
                system if system and "{" not in system else None,
                list(run.task.generation.stop),
            )
        )
        report["modelfile"] = str(out / "Modelfile")
    (out / "gguf.json").write_text(json.dumps(report, indent=1))
    return report
