"""Model folders a run folder's answers came from, and a refusal when one changes.

The store keys an answer by its request, and a request names its model by reference:
`local:runs/countdown/rft-teacher` is the same string whichever weights lie behind it.
Bundled models and endpoints are fixed by name, but a folder can be retrained or relinked
(RFT, then distil: the GRPO student is linked under a fixed name and used as a teacher),
and the run would then reuse the old model's answers as the new one's, silently. So
`open_run` fingerprints every model that is a folder the first time a run folder sees it
(`models.json`) and refuses, naming the role and what to do, when the weights differ.

The fingerprint hashes the config and every weights file whole: a LoRA merge changes only
some tensors, which can sit anywhere in the file. Hashing is paid once per change: the
record keeps each folder's file names, sizes and modification times beside its hash, and a
folder whose files still match them is not read again (every `still report` opens the
run). A relinked or rewritten folder is hashed again, and an identical copy passes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from still.models import model_folder
from still.pipeline._run import StageError
from still.tasks import Task

RECORD = "models.json"
"""The run folder's file of model folder fingerprints, by model reference."""

_CHUNK = 8 << 20  # bytes hashed at a time
_WEIGHTS = (".safetensors", ".bin", ".gguf", ".pt")


def _files(folder: Path) -> list[Path]:
    """The files that decide what a model answers: its config and its weights."""
    return [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and (p.name == "config.json" or p.suffix in _WEIGHTS)
    ]


def file_stats(folder: Path) -> str:
    """Names, sizes and modification times of the model's files (links followed): when
    they are as recorded, the recorded hash still holds."""
    stats = ((p.name, p.stat()) for p in _files(folder))
    return ";".join(f"{name}:{st.st_size}:{st.st_mtime_ns}" for name, st in stats)


def fingerprint(folder: Path) -> str:
    """A content hash of a model folder: its config and weights files, whole."""
    h = hashlib.sha256()
    for path in _files(folder):
        h.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()[:16]


def model_refs(task: Task) -> Iterator[tuple[str, str]]:
    """(where in the task file, reference) for every model the task names: its roles, any
    `model` field below them (judges) and `models` list (an ensemble's members)."""
    for role, ref in task.models.model_dump().items():
        if isinstance(ref, str):
            yield f"models.{role}", ref

    def walk(node: Any, where: str) -> Iterator[tuple[str, str]]:
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{where}.{key}" if where else str(key)
                if key == "model" and isinstance(value, str):
                    yield here, value
                elif key == "models" and isinstance(value, list):  # ensemble members
                    yield from (
                        (f"{here}.{i}", v) for i, v in enumerate(value) if isinstance(v, str)
                    )
                else:
                    yield from walk(value, here)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}.{i}")

    yield from walk(task.model_dump(mode="json", exclude={"models"}), "")


def check_model_folders(task_path: Path | str, task: Task, run_dir: Path) -> None:
    """Record the fingerprint of each model folder the task names, the first time this run
    folder sees it; refuse one whose weights changed since.

    Raises:
        StageError: a model folder differs from the one this run folder's stored answers
            (and models trained from it) came from.
    """
    record = run_dir / RECORD
    seen: dict[str, Any] = json.loads(record.read_text()) if record.is_file() else {}
    current = dict(seen)
    for where, ref in model_refs(task):
        folder = model_folder(ref)
        if folder is None:
            continue
        stats = file_stats(folder)
        before = current.get(ref)  # a folder named twice (teacher and member) is hashed once
        if isinstance(before, dict) and before.get("files") == stats:
            continue  # untouched since it was hashed
        now = fingerprint(folder)
        if isinstance(before, dict) and before.get("fingerprint") != now:
            raise StageError(
                f"{task_path}: {where} ({ref}) is not the model this run folder's stored "
                f"answers came from: its weights changed (fingerprint {before['fingerprint']} "
                f"in {record}, now {now}), and the store would reuse the old model's answers "
                f"as the new one's. Use a new run folder (--run-dir), or delete {run_dir}"
            )
        current[ref] = {"fingerprint": now, "files": stats}
    if current != seen:
        record.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
