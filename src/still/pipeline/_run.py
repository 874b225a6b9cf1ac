"""The Run: one pipeline execution in its own folder, every stage resumable.

    runs/<task>/
      task.yaml          snapshot of the task file (run.json: where the original lives)
      split.json         train / held-out / few-shot ids (checked again at export)
      still.db           the completion store
      train.jsonl        curated training data (student prompt, teacher answer)
      distilled-<hash>/  the merged student; the hash covers data, recipe and base model
      models.json        fingerprints of the model folders named (a changed one is refused)
      report.md|json, results.jsonl|parquet

Each stage looks up what is already stored: a second `still run` calls no model for a
request it has answered, and retrains nothing whose inputs did not change. Every stage
reaches models through `Run.capture` (the store, the run's tags, its price and budget)
and reads stored answers through `Run.stored`, so how a stage tags or finds completions
is decided once, here. Imported traffic (a `store:` data source) enters the same way:
`open_run` stores each recorded answer as the teacher's answer to the request the run
would send (`record_teacher_answers`), so no stage asks the teacher for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal, Protocol

from still.capture import CaptureStats, build_messages, build_request, capture
from still.cost import Budget, cost_model_for, require_prices
from still.curate import Keep
from still.errors import GraderError, StillError, TrainError
from still.graders import Capture, Grader, answer_of, build_grader, judges
from still.models import (
    Provider,
    get_model,
    known_models,
    model_folder,
    schemes,
    use_engine_options,
    use_key_variables,
)
from still.pipeline._calibrate import CONTENT_FREE_SPLIT, Calibration, content_free_examples
from still.settings import runs_root
from still.store import Store
from still.tasks import (
    Example,
    LoadReport,
    Split,
    Task,
    TaskError,
    TemplateError,
    TrainSpec,
    load_examples,
    load_task,
    split_examples,
)
from still.train import Recipe
from still.types import Completion, Request

log = logging.getLogger("still.pipeline")

RunRole = Literal["teacher", "student", "distilled", "distilled-verified", "control"]
"""Who a model is in a run (not the chat role of a message: `still.types.Role`)."""

ROLES: tuple[RunRole, ...] = ("teacher", "student", "distilled", "distilled-verified", "control")

STUDENTS: dict[Keep, RunRole] = {"parsed": "distilled", "correct": "distilled-verified"}
"""The distilled students, by which teacher answers they learn from: `distilled` from
every parseable one (teacher-only: no reference answer used; the number that holds for
production data, which has none), `distilled-verified` from those the graders confirm."""

SPLITS = ("train", "validation", "heldout")


class StageError(StillError, RuntimeError):
    """A stage could not do its work (and says so rather than reporting success)."""


class Engine(Protocol):
    """Where a run's models answer when not in this process: `still.capture_ray.RayEngine`
    (`--ray`) answers on a Ray cluster; the store, tags, prices and budget stay the run's."""

    def model(self, ref: str, batch_size: int, setup: Callable[[], None] | None) -> Provider:
        """A provider for `ref` that answers there, in blocks of `batch_size` requests;
        `setup` makes the run's model settings in each process that loads the model."""
        ...


@dataclass
class Run:
    """A task, its data split and its folder: what every stage works on."""

    task: Task
    dir: Path
    store: Store
    split: Split
    load_report: LoadReport
    graders: list[Grader] = field(default_factory=list)
    engine: Engine | None = None  # None: every model answers in this process
    # with `teacher_training`: the model fine-tuned into the teacher (models.teacher then
    # names the trained one's folder, `still.pipeline._teacher`)
    teacher_base: str | None = None
    # `task.digest()` of the task as its file declares it: `task` itself may be changed
    # since (the trained teacher's folder, `--processes`), and a report names its task file
    declared_digest: str = ""
    # (role, model) -> its contextual calibration, once its content-free answers are stored
    _calibrations: dict[tuple[str, str, int], Calibration] = field(
        default_factory=dict, repr=False
    )

    def require_prices(self, budget: Budget | None) -> None:
        """With a budget, refuse before any call when a paid model this run may call
        (teacher, student, control, judges) has no price: its spending could not be
        counted (`still.cost.UnpricedModel` names it and how to add `prices:`)."""
        if budget is None:
            return
        m = self.task.models
        refs = [m.teacher, m.student, m.control or m.student]
        refs += [j.model for j in judges(self.graders)]
        require_prices(refs, self.task.prices)

    @property
    def heldout_ids(self) -> set[str]:
        """Examples no training file may hold: the test split and the validation split
        (choices made on validation would be biased by training on it)."""
        return {e.id for e in self.split.heldout} | {e.id for e in self.split.validation}

    def model_for(self, role: str) -> str:
        """The model reference playing `role` (`distilled` needs a trained student)."""
        m = self.task.models
        if role == "teacher":
            if self.teacher_base is not None and model_folder(m.teacher) is None:
                raise StageError(
                    f"the teacher is {self.teacher_base} fine-tuned on gold first "
                    "(teacher_training): run `still train --teacher` (or `still run`) first"
                )
            return m.teacher
        if role == "student":
            return m.student
        if role == "control":
            return m.control or m.student
        keep = next((k for k, r in STUDENTS.items() if r == role), None)
        if keep is not None:
            path = self.distilled_dir(keep)
            if not (path / "config.json").is_file():
                flag = "" if keep == "parsed" else " --keep correct"
                raise StageError(
                    f"no {role} student at {path}: run `still export{flag}` and "
                    f"`still train{flag}` first"
                )
            # on the student's engine: a `vllm:` student is benched on vLLM once trained
            engine = "vllm:" if m.student.startswith("vllm:") else "local:"
            return engine + str(path.resolve())
        raise StageError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")

    @property
    def learns_from_teacher(self) -> bool:
        """Whether the students learn from the teacher's answers on the train split. Not
        with a recipe that learns from the student's own graded answers (`train.recipe:
        grpo`): `still run` then asks the teacher nothing on train, exports nothing,
        checks no teacher before training and trains one student (`students`)."""
        from still.train import task_recipe

        try:
            _, recipe = task_recipe(self.task.train.recipe, bool(self.task.labels))
        except TrainError:
            return True  # an unknown recipe is refused, saying so, by the train stage
        return not recipe.prompts

    @property
    def students(self) -> tuple[Keep, ...]:
        """The distilled students `still run` trains: the task's `curate.students`; only
        `parsed` (shown as `distilled`) when they learn from no teacher answer, since which
        teacher answers are kept then changes nothing (one model, trained once)."""
        if not self.learns_from_teacher:
            return ("parsed",)
        return tuple(self.task.curate.students)

    def roles(self, students: Iterable[Keep] | None = None) -> tuple[RunRole, ...]:
        """The roles compared: teacher, base student, the distilled students named (by
        default `students`: the task's `curate.students`), control."""
        keeps = self.students if students is None else students
        wanted = {STUDENTS[k] for k in keeps}
        return tuple(r for r in ROLES if r not in STUDENTS.values() or r in wanted)

    def examples(self, split: str) -> list[Example]:
        if split == "train":
            return self.split.train
        if split == "validation":
            return self.split.validation
        if split == "heldout":
            return self.split.heldout
        raise StageError(f"unknown split {split!r}: use {', '.join(SPLITS)}")

    def requests(
        self, role: str, split: str, limit: int | None = None, model: str | None = None
    ) -> dict[str, Request]:
        """A split's requests as `role` asks them (its prompt), to the role's model or to
        `model` (another student in the role's place: a curve point, a GGUF read-back)."""
        model = model or self.model_for(role)
        exs = self.examples(split)[:limit]
        return {e.id: build_request(self.task, role, model, e, self.split.fewshot) for e in exs}

    def capture(
        self,
        ref: str,
        requests: dict[str, Request],
        tags: dict[str, str],
        desc: str,
        budget: Budget | None = None,
    ) -> CaptureStats:
        """Ask `ref` every request through the run's store: stored answers are reused,
        new ones stored with the run's tags (`run`, `task` plus `tags`) and their cost,
        within `budget` when given; by the run's `engine` when it has one."""
        engine, batch = self.engine, self.task.generation.batch_size

        def load() -> Provider:
            if engine is None:
                return get_model(ref)
            return engine.model(ref, batch, partial(use_model_settings, self.task))

        return capture(
            load,
            requests,
            self.store,
            metadata={"run": self.dir.name, "task": self.task.name, **tags},
            batch_size=batch,
            desc=desc,
            cost_model=cost_model_for(ref, self.task.prices, self.task.tokenizers),
            budget=budget,
        )

    def stored(self, role: str, split: str, include_failed: bool = False) -> dict[str, Completion]:
        """Completions already in the store for a role on a split (by request hash); failed
        attempts too if asked, so they are counted as failures rather than as missing.
        A calibrated role's label scores are read calibrated (`calibrated`); the teacher
        of a task with an `ensemble:` is its members' combined answers."""
        if role == "teacher" and self.task.ensemble is not None:
            from still.pipeline._ensemble import stored_ensemble

            return stored_ensemble(self, split, include_failed)
        return self.calibrated(role, self.lookup(self.requests(role, split), include_failed))

    def calibration(
        self,
        role: str,
        model: str | None = None,
        budget: Budget | None = None,
        call: bool = False,
        fewshot: Sequence[Example] | None = None,
        member: int = 0,
    ) -> tuple[Calibration | None, CaptureStats]:
        """The contextual calibration of `role`'s prompt (`prompts.<role>.calibrate`) for
        its model (or `model` in its place), from the label scores of its content-free
        requests: asked through the store when `call` (stored once, within `budget`),
        else read from it. None when the role's prompt is not calibrated. An ensemble
        member other than the teacher's own prompt (`member` > 0) shows its own `fewshot`
        examples, so its calibration is its own.

        Raises:
            StageError: a content-free answer is missing (with `call` False) or failed.
        """
        inputs = self.task.prompt_for(role).content_free
        if not inputs:
            return None, CaptureStats()
        ref = model or self.model_for(role)
        found = self._calibrations.get((role, ref, member))
        if found is not None:  # its content-free answers are stored
            return found, CaptureStats(total=len(inputs), from_store=len(inputs))
        fields = next(iter(self.split.train + self.split.heldout)).fields
        shots = self.split.fewshot if fewshot is None else fewshot
        requests = {
            ex.id: build_request(self.task, role, ref, ex, shots)
            for ex in content_free_examples(fields, inputs)
        }
        if call:
            tags = {"role": role, "split": CONTENT_FREE_SPLIT}
            desc = f"{role} content-free"
            if member:
                tags["member"] = str(member)
                desc = f"{role} member {member} content-free"
            stats = self.capture(ref, requests, tags, desc, budget)
        else:
            stats = CaptureStats(total=len(requests))
            stats.completions = self.lookup(requests, include_failed=True)
            stats.from_store = len(stats.completions)
        got = [stats.completions.get(k) for k in requests]
        if any(c is None or c.error or not c.label_logprobs for c in got):
            what = "failed" if call else "is not stored"
            who = f"ensemble member {member} ({ref})" if member else ref
            raise StageError(
                f"prompts.{self.task.prompt_role(role)}.calibrate: a content-free answer of "
                f"{who} {what}; run `still capture --role {role}` to ask for it again"
            )
        cal = Calibration.from_scores([c.label_logprobs for c in got if c and c.label_logprobs])
        self._calibrations[(role, ref, member)] = cal
        return cal, stats

    def calibrated(
        self, role: str, completions: dict[str, Completion], model: str | None = None
    ) -> dict[str, Completion]:
        """A role's answers as the run reads them: with calibrated label scores, and the
        label they favour as the answer, when the role's prompt is calibrated (the store
        keeps the raw scores); as they are otherwise."""
        cal, _ = self.calibration(role, model)
        if cal is None:
            return completions
        return {k: cal.apply(c) for k, c in completions.items()}

    def lookup(
        self, requests: dict[str, Request], include_failed: bool = False
    ) -> dict[str, Completion]:
        """The stored answer of each request that has one, under the request's key."""
        out = {}
        for key, req in requests.items():
            hit = self.store.lookup(req.key(), include_failed=include_failed)
            if hit is not None:
                out[key] = hit
        return out

    def judge(self, budget: Budget | None = None, call: bool = True) -> Capture:
        """How the run's judge graders are asked: through the store (cached and resumable,
        tagged role=judge and grader=<name>), priced and within `budget`; with `call`
        False, from the store alone (a judge verdict never captured counts as missing)."""

        def ask(requests: dict[str, Request], grader: str) -> dict[str, Completion]:
            if not call:
                return self.lookup(requests, include_failed=True)
            model = next(iter(requests.values())).model
            if model == self.task.models.teacher:
                log.warning(
                    "grader %r: the judge %s is also the teacher: it grades its own answers",
                    grader,
                    model,
                )
            tags = {"role": "judge", "grader": grader}
            return self.capture(model, requests, tags, f"judge {grader}", budget).completions

        return ask

    def data_dir(self, keep: Keep = "parsed") -> Path:
        """Where a distilled student's training files go: the run folder for the
        teacher-only student, `verified/` for the grader-verified one."""
        return self.dir if keep == "parsed" else self.dir / "verified"

    def train_file(self, keep: Keep = "parsed") -> Path:
        """The curated rows (student prompt, teacher answer): every recipe reads them."""
        from still.curate import TRAIN_FILE

        return self.data_dir(keep) / TRAIN_FILE

    @property
    def teacher_check_file(self) -> Path:
        """The teacher check before training (`still run`, validation split), as JSON."""
        return self.dir / "teacher-check.json"

    @property
    def dpo_file(self) -> Path:
        """Preference pairs in TRL's format, as `still export-dpo` writes them."""
        from still.train import DPO_FILE

        return self.dir / DPO_FILE

    def soft_file(self, keep: Keep = "parsed") -> Path:
        """The teacher's label scores for the kept rows (label KD)."""
        from still.curate import SOFT_FILE

        return self.data_dir(keep) / SOFT_FILE

    def tokens_file(self, keep: Keep = "parsed") -> Path:
        """The teacher's answer tokens for the kept rows (free-text KD)."""
        from still.curate import TOKENS_FILE

        return self.data_dir(keep) / TOKENS_FILE

    def recipe_file(self, recipe: Recipe, keep: Keep = "parsed") -> Path:
        """The file a training recipe learns from: in the student's data folder, or the
        run's own for data shared by both students (the DPO pairs)."""
        return (self.dir if recipe.shared else self.data_dir(keep)) / recipe.data

    def train_spec(self, keep: Keep = "parsed") -> TrainSpec:
        """How a distilled student is trained: the task's `train:`, or with
        `train.from_tune` the settings `still tune` chose for it (`still.pipeline._tune`)."""
        if not self.task.train.from_tune:
            return self.task.train
        from still.pipeline._tune import tuned_spec

        return tuned_spec(self, keep)

    def distilled_dir(self, keep: Keep = "parsed") -> Path:
        """Content-addressed: new data, recipe or base model means a new model (and new
        store keys), so stale answers of an older student are never reused."""
        h = hashlib.sha256()
        train = self.train_spec(keep)
        recipe = None
        if train.recipe != "sft":
            from still.train import task_recipe

            _, recipe = task_recipe(train.recipe, bool(self.task.labels))
        if recipe is not None and recipe.prompts:
            # the student's prompts and the graders that reward its answers: no teacher
            # answer or teacher is read, so neither is part of the address
            prompts = self.recipe_file(recipe, keep)
            h.update(prompts.read_bytes() if prompts.exists() else b"")
            h.update(train.model_dump_json().encode())
            graders = [g.model_dump(mode="json") for g in self.task.graders]
            h.update(json.dumps(graders, sort_keys=True).encode())
            h.update(self.task.models.student.encode())
            return self.dir / f"distilled-{h.hexdigest()[:10]}"
        train_file = self.train_file(keep)
        h.update(train_file.read_bytes() if train_file.exists() else b"")
        if recipe is None:  # sft, hashed as before recipes existed: SFT models keep theirs
            h.update(train.model_dump_json(exclude={"recipe", "kd", "dpo", "grpo"}).encode())
        else:  # KD learns from the teacher's scores (label KD) or the teacher itself
            soft = self.recipe_file(recipe, keep)
            h.update(soft.read_bytes() if soft.exists() else b"")
            h.update(train.model_dump_json().encode())
            h.update(self.task.models.teacher.encode())
        h.update(self.task.models.student.encode())
        return self.dir / f"distilled-{h.hexdigest()[:10]}"


def open_run(task_path: Path | str, run_dir: Path | str | None = None) -> Run:
    """Load a task, split its data and open (or create) its run folder.

    Everything the task file declares is checked before the folder is touched: its model
    references, data, split, graders and every role's prompt (rendered for one example),
    so a mistake fails as one line naming the file and field, not halfway through a stage.
    """
    task = load_task(task_path)
    declared = task.digest()
    _check_models(task_path, task)
    use_model_settings(task)
    examples, report = load_examples(task)
    if not examples:
        raise StageError(report.nothing_kept())
    fewshot = max((p.fewshot for p in task.prompts.values()), default=0)
    taught = task.teacher_training.rows if task.teacher_training else 0
    try:
        split = split_examples(examples, task.split, fewshot, taught)
    except TaskError as exc:
        raise StageError(f"{task_path}: {exc} ({report.source}: {report.summary()})") from exc
    for role in task.prompts:  # a template naming a field the data lacks fails here
        try:
            build_messages(task, role, examples[0], split.fewshot)
        except TemplateError as exc:
            raise TemplateError(f"{task_path}: {exc}") from exc
    graders = []
    for i, spec in enumerate(task.graders):
        try:
            graders.append(build_grader(spec))
        except GraderError as exc:  # a FormulaError, an unknown metric: the spec's fault
            raise TaskError(f"{task_path}: graders.{i} ({spec.name}): {exc}") from exc
    d = confined(Path(run_dir) if run_dir else runs_root() / task.name)
    d.mkdir(parents=True, exist_ok=True)
    snapshot = d / "task.yaml"
    if not snapshot.exists() or not snapshot.samefile(task_path):
        shutil.copyfile(task_path, snapshot)
        # where the task came from: its relative data paths resolve against that folder
        (d / "run.json").write_text(json.dumps({"task_file": str(Path(task_path).resolve())}))
    from still.pipeline._model_folders import check_model_folders

    check_model_folders(task_path, task, d)  # a retrained teacher folder: not its answers
    if task.synthesize is not None and task.synthesize.use:  # teacher-written inputs
        from still.pipeline._synthesize import with_synthetic

        split = with_synthetic(task, split, d)
    (d / "split.json").write_text(
        json.dumps(
            {
                "train": [e.id for e in split.train],
                "validation": [e.id for e in split.validation],
                "heldout": [e.id for e in split.heldout],
                "fewshot": [e.id for e in split.fewshot],
                "teacher": [e.id for e in split.teacher],
            }
        )
    )
    base = None
    if task.teacher_training is not None:  # the teacher is the model trained from this one
        from still.pipeline._teacher import trained_teacher_dir

        base, trained = task.models.teacher, trained_teacher_dir(task, split, d)
        models = task.models.model_copy(update={"teacher": f"local:{trained.resolve()}"})
        task = task.model_copy(update={"models": models})
    run = Run(task, d, Store(d / "still.db"), split, report, graders, teacher_base=base,
              declared_digest=declared)  # fmt: skip
    record_teacher_answers(run)
    return run


def use_model_settings(task: Task) -> None:
    """Make a task's process-wide model settings, before its models load: which variable's
    key each endpoint may get, the engine options of `vllm:` models. `open_run` makes them
    in this process; an `Engine` makes them again in each of its workers."""
    use_key_variables(task.api_key_env)
    use_engine_options(task.vllm.engine_args())


def record_teacher_answers(run: Run) -> int:
    """Imported traffic (a `store:` source): store each example's recorded answer in the
    run's store as the teacher's answer to the very request the run sends it (the
    recorded conversation, to `models.teacher`), so every stage finds it where it looks
    (by request hash: `Run.stored`, `Run.capture`) and the teacher is never asked for it.

    A copy keeps the recorded text, usage, cost, latency and time, and is tagged like a
    capture (run, task, role=teacher, split) plus `imported=<id in the source store>`.
    Idempotent: a request already answered in the run's store is left as it is.

    Returns:
        How many recorded answers were newly stored.
    """
    recorded = run.load_report.recorded
    if not recorded:
        return 0
    teacher = run.task.models.teacher
    copies: list[Completion] = []
    others: Counter[str] = Counter()
    for split in SPLITS:
        for ex in run.examples(split):
            rec = recorded.get(ex.id)
            if rec is None:
                continue
            req = build_request(run.task, "teacher", teacher, ex, run.split.fewshot)
            key = req.key()
            if run.store.lookup(key) is not None:
                continue
            if rec.model != teacher:
                others[rec.model] += 1
            tags = {"run": run.dir.name, "task": run.task.name, "role": "teacher",
                    "split": split, "imported": rec.id}  # fmt: skip
            cid = "cmpl-" + hashlib.sha256(f"{rec.id}\0{key}".encode()).hexdigest()[:24]
            update = {"id": cid, "request": req, "request_hash": key, "metadata": tags}
            copies.append(rec.model_copy(update=update))
    if others:
        log.warning(
            "%s: %s recorded answers stand as the teacher %s's (set data.store.model to "
            "read only the teacher's traffic)",
            run.task.data.source,
            ", ".join(f"{n} of {m}'s" for m, n in others.most_common()),
            teacher,
        )
    return run.store.put_new(copies)


def _check_models(task_path: Path | str, task: Task) -> None:
    """Refuse a model reference no provider takes (`gpt-4o` for `openai:gpt-4o`), before
    any data is read; what the provider makes of the rest is its own check, at first use."""
    known = schemes()
    m = task.models
    named = {"teacher": m.teacher, "student": m.student, "control": m.control}
    for role, ref in named.items():
        if ref is None:
            continue
        scheme, sep, _ = ref.partition(":")
        if not (sep and scheme in known) and model_folder(ref) is None:
            raise TaskError(
                f"{task_path}: models.{role}: unknown model {ref!r}; use a reference "
                f"`still models` lists ({', '.join(known_models())}) or a model folder"
            )


def confined(run_dir: Path) -> Path:
    """`run_dir`, when it lies inside the run root (`still.settings.runs_root`).

    Raises:
        StageError: a folder outside it (an absolute path elsewhere, a `..` leaving it).
    """
    root = runs_root().resolve()
    if not run_dir.resolve().is_relative_to(root):
        raise StageError(
            f"run folder {run_dir} is outside the run root {root}: runs stay under "
            "$STILL_RUNS (default ./runs); set STILL_RUNS to use another folder"
        )
    return run_dir


def open_run_dir(run_dir: Path) -> Run:
    """Reopen an existing run folder from its task snapshot (`still report RUN_DIR`): the
    original task file when run.json names one that still exists (its relative data paths
    resolve there), else the snapshot."""
    info = run_dir / "run.json"
    task_file = run_dir / "task.yaml"
    if info.is_file():
        original = Path(json.loads(info.read_text()).get("task_file", ""))
        if original.is_file():
            task_file = original
    if not task_file.is_file():
        raise StageError(f"{run_dir} is not a run folder (no task.yaml)")
    return open_run(task_file, run_dir)


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
    when given), and the content-free requests of a calibrated role (`Run.calibration`);
    the completions returned are read as `Run.calibrated` reads them. The teacher of a
    task with an `ensemble:` is every member (`still.pipeline._ensemble`)."""
    if role == "teacher" and model is None and run.task.ensemble is not None:
        from still.pipeline._ensemble import capture_ensemble

        return capture_ensemble(run, split, limit, budget)
    reqs = run.requests(role, split, limit, model)
    ref = model or run.model_for(role)
    desc = f"{role} on {split}" if model is None else f"{ref.rsplit('/', 1)[-1]} on {split}"
    stats = run.capture(ref, reqs, {"role": role, "split": split}, desc, budget)
    # a calibrated role: its content-free requests too, counted in the stats
    _, cf = run.calibration(role, model, budget, call=True)
    stats.total += cf.total
    stats.from_store += cf.from_store
    stats.called += cf.called
    stats.failed += cf.failed
    stats.completions = run.calibrated(role, stats.completions, model)
    if run.task.labels:
        stats.unparseable = sum(
            answer_of(c, run.task.labels).why == "unparseable" for c in stats.completions.values()
        )
    return stats
