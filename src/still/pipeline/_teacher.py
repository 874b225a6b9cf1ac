"""Trained teachers: two-stage distillation, for tasks no few-shot teacher does well.

Some tasks have gold answers but no teacher worth distilling: the bundled few-shot
teacher is near chance on a five-topic news task. Users with some gold data then train a
teacher first, and distil it on inputs it never saw. A task says so with
`teacher_training:`; `models.teacher` is the model fine-tuned into the teacher:

1. the split gives the teacher its own part of the train split (`Split.teacher`,
   `teacher_training.rows`), disjoint from the students' part, from validation and from
   the test split;
2. `train_teacher_stage` fine-tunes the base model on those examples' gold answers (SFT,
   `teacher_training.train`), with the teacher's prompt, the one it is then asked with;
3. from then on that model is the run's teacher (`open_run` names it in `models.teacher`):
   it answers the students' part, and the students learn from its answers alone
   (`curate.students` defaults to [parsed]: no gold of their part is read).

The teacher's folder, `<run>/teacher/sft-<method>-<hash>`, is addressed by a hash of its
training rows, its training config and the base model's reference, like the students':
a rerun finds it and trains nothing; a change to any of them trains a new teacher (and,
with it, new store keys: stale answers of an older teacher are never reused).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from still.capture import build_messages
from still.curate import TRAIN_FILE, LeakageError
from still.errors import ModelError, TrainError
from still.pipeline._run import Run, StageError
from still.pipeline._train import training_progress
from still.tasks import Split, Task

log = logging.getLogger("still.pipeline")

TEACHER_DIR = "teacher"
"""The run's subfolder for the trained teacher: its rows (train.jsonl) and its model."""


def teacher_rows(task: Task, split: Split) -> list[dict[str, Any]]:
    """The teacher's training rows: each example of its part asked with the teacher's
    prompt (few-shot examples included, as it will be asked), answered with its gold."""
    return [
        {
            "messages": [m.model_dump() for m in build_messages(task, "teacher", ex, split.fewshot)]
            + [{"role": "assistant", "content": ex.answer, "weight": 1}]
        }
        for ex in split.teacher
    ]


def _rows_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def trained_teacher_dir(task: Task, split: Split, run_dir: Path) -> Path:
    """Where the teacher of a `teacher_training` task is (or will be) trained: addressed
    by its rows, its training config and the base model's reference (the base model is not
    loaded: naming the folder must not need it)."""
    assert task.teacher_training is not None
    spec = task.teacher_training.train
    data = _rows_bytes(teacher_rows(task, split))
    h = hashlib.sha256(data)
    h.update(spec.model_dump_json().encode())
    h.update(task.models.teacher.encode())
    return run_dir / TEACHER_DIR / f"sft-{spec.method}-{h.hexdigest()[:10]}"


def train_teacher_stage(run: Run, force: bool = False) -> dict[str, Any] | None:
    """Stage: fine-tune the task's teacher on its part's gold answers (`teacher_training`),
    into the folder `open_run` named as the run's teacher; skipped when that model exists
    (unless `force`). None for a task whose teacher is not trained.

    Raises:
        LeakageError: a teacher row is a validation, test or student training example
            (never: the split keeps them apart; checked, not assumed).
        StageError: the base model is not a local model, or training fails.
    """
    from still.models import local_path
    from still.train import get_recipe

    tt, base_ref = run.task.teacher_training, run.teacher_base
    if tt is None or base_ref is None:
        return None
    out = Path(run.task.models.teacher.removeprefix("local:"))
    students = {e.id for e in run.split.train}
    for ex in run.split.teacher:
        if ex.id in run.heldout_ids or ex.id in students:
            raise LeakageError(
                f"example {ex.id} ({ex.source}) is held out or a student's: refusing to "
                "train the teacher on it"
            )
    data = out.parent / TRAIN_FILE
    rows = _rows_bytes(teacher_rows(run.task, run.split))
    if not data.is_file() or data.read_bytes() != rows:
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_bytes(rows)
    info_file = out / "train.json"
    if info_file.is_file() and not force:
        info: dict[str, Any] = json.loads(info_file.read_text())
        return {**info, "skipped": True}
    try:
        base = local_path(base_ref)
    except ModelError as exc:
        raise StageError(f"teacher_training: can't fine-tune {base_ref!r}: {exc}") from exc
    trainer = get_recipe("sft").load()
    with training_progress(f"train teacher ({tt.train.method})") as on_step:
        try:
            trainer(base, data=data, out_dir=out, spec=tt.train, on_step=on_step)
        except TrainError as exc:
            raise StageError(f"teacher_training: {exc}") from exc
    info = json.loads(info_file.read_text())
    log.info(
        "teacher: %s fine-tuned on %d gold examples in %.0f s (%d steps)",
        base_ref, len(run.split.teacher), info["seconds"], info["steps"],
    )  # fmt: skip
    if info.get("skipped_too_long"):
        log.warning(
            "teacher: %d of its rows were longer than teacher_training.train.max_length=%d "
            "tokens and left out (a trained teacher rarely needs few-shot examples)",
            info["skipped_too_long"], tt.train.max_length,
        )  # fmt: skip
    return {**info, "skipped": False}
