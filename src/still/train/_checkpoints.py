"""Checkpoints that resume: a killed training restarts where it stopped, not at step 0.

Every `train.save_every` steps the loop writes `<model folder>.checkpoints/step-N/`:

- `weights.safetensors`: the trainable weights (the LoRA adapters under LoRA, every
  weight under full fine-tuning), by parameter name;
- `state.pt`: the optimizer's and the schedule's states and every random state (Python's,
  torch's, CUDA's, the recipe's own `Student.rng`), per process;
- `progress.json`, written last: the step, the losses and tokens so far, the training
  seconds, the configuration's fingerprint and each file's SHA-256.

A checkpoint is written into `step-N.tmp/` and renamed: a folder named `step-N` is
complete. The data position is the step number alone: `batches` replays its seeded
shuffle up to it. A rerun of the same training loads the newest checkpoint; one whose
files do not match their hashes (a disk fault, a truncated copy) is skipped for the one
before, saying so. A checkpoint of another configuration (task's train spec, data file,
base model, teacher, precision) is refused: resuming it would silently train a mixture.
The newest two are kept; the folder goes once the final model is saved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from still.errors import TrainError
from still.tasks import TrainSpec

log = logging.getLogger("still.train")

KEEP = 2
"""Checkpoints kept: the newest, and the one before in case the newest is unreadable."""

_FILES = ("weights.safetensors", "state.pt")


class CheckpointMismatch(TrainError):
    """A checkpoint was written by another training configuration."""


def checkpoint_dir(out_dir: Path) -> Path:
    """Where the checkpoints of the model saved to `out_dir` go (beside it, so the
    content-addressed model folder itself only ever holds a finished model)."""
    return out_dir.with_name(out_dir.name + ".checkpoints")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(
    spec: TrainSpec, recipe: str, data: Path, base: Path, teacher: Path | None, precision: str
) -> str:
    """What a checkpoint must match to be resumed: the train spec (how checkpoints are
    written and how many processes share the work left out), the data file's bytes, the
    base model's and teacher's folders, and the precision actually used."""
    h = hashlib.sha256()
    h.update(recipe.encode())
    h.update(spec.model_dump_json().encode())  # the fields that name the model
    h.update(f"{spec.sharding}|{precision}|{spec.micro_batch_size}".encode())
    h.update(_sha256(data).encode())
    h.update(str(base.resolve()).encode())
    h.update(str(teacher.resolve() if teacher else "").encode())
    return h.hexdigest()[:16]


def _rng_state(rng: random.Random) -> dict[str, Any]:
    import torch

    return {
        "python": random.getstate(),
        "recipe": rng.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any], rng: random.Random) -> None:
    import torch

    random.setstate(_as_state(state["python"]))
    rng.setstate(_as_state(state["recipe"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_state(value: Any) -> Any:
    """A Python random state back from storage (lists become the tuples setstate wants)."""
    return tuple(_as_state(v) for v in value) if isinstance(value, list | tuple) else value


@dataclass
class Checkpoints:
    """The checkpoints of one training: `folder/step-N/`, matched by `fingerprint`.

    Only the main process writes; every process reads (each restores its own random
    state when the process count is the same, the main process's otherwise).
    """

    folder: Path
    fingerprint: str

    def steps(self) -> list[tuple[int, Path]]:
        """The complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.iterdir():
            name, _, step = path.name.partition("-")
            if name == "step" and step.isdigit() and path.is_dir():
                found.append((int(step), path))
        return sorted(found)

    def save(self, step: int, trainer: Any, progress: dict[str, Any]) -> None:
        """Write checkpoint `step` atomically and prune the older ones; `trainer` is the
        running loop's state (Training in _common). Collective: every process calls it."""
        import torch
        from accelerate.utils import gather_object
        from safetensors.torch import save_file

        start = time.perf_counter()
        acc = trainer.student.accelerator
        rngs = gather_object([_rng_state(trainer.student.rng)])
        weights = trainer.trainable_state()  # collective under FSDP
        optim = trainer.optimizer_state()
        if not acc.is_main_process:
            return
        final = self.folder / f"step-{step}"
        tmp = self.folder / f"step-{step}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_file(weights, str(tmp / "weights.safetensors"))
        state = {"optimizer": optim, "scheduler": trainer.scheduler.state_dict(), "rng": rngs}
        torch.save(state, tmp / "state.pt")
        meta = dict(progress, step=step, fingerprint=self.fingerprint)
        meta["files"] = {name: _sha256(tmp / name) for name in _FILES}
        (tmp / "progress.json").write_text(json.dumps(meta))
        if final.exists():  # an unreadable one this run resumed past
            shutil.rmtree(final)
        tmp.rename(final)
        for _, old in self.steps()[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s written in %.2f s", final, time.perf_counter() - start)

    def load(self, trainer: Any) -> dict[str, Any] | None:
        """Restore the newest readable checkpoint into `trainer`; its progress record, or
        None when there is none to resume (each unreadable one is skipped, saying so).

        Raises:
            CheckpointMismatch: a checkpoint of another configuration is in the folder.
        """
        for step, path in reversed(self.steps()):
            try:
                meta = json.loads((path / "progress.json").read_text())
                written_by = meta["fingerprint"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("checkpoint %s is unreadable (%s): trying the one before", path, exc)
                continue
            if written_by != self.fingerprint:
                raise CheckpointMismatch(
                    f"{path} was written by another training configuration (train spec, "
                    f"data, base model or precision differ): delete {self.folder} to start "
                    "over, or restore the configuration that wrote it"
                )
            start = time.perf_counter()
            try:
                state, weights = self._read(path, meta)
            except Exception as exc:  # noqa: BLE001 - any unreadable file: use the one before
                log.warning("checkpoint %s is corrupt (%s): falling back to the one before",
                            path, exc)  # fmt: skip
                continue
            acc = trainer.student.accelerator
            rngs = state["rng"]
            _set_rng_state(rngs[acc.process_index] if len(rngs) == acc.num_processes
                           else rngs[0], trainer.student.rng)  # fmt: skip
            trainer.load_trainable_state(weights)
            trainer.load_optimizer_state(state["optimizer"])
            trainer.scheduler.load_state_dict(state["scheduler"])
            log.info("resuming from step %d (%s, read in %.2f s)", step, path,
                     time.perf_counter() - start)  # fmt: skip
            return dict(meta)
        if self.steps():
            log.warning("no readable checkpoint in %s: starting from step 0", self.folder)
        return None

    @staticmethod
    def _read(path: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A checkpoint's files, each checked against its hash first."""
        import torch
        from safetensors.torch import load_file

        for name in _FILES:
            if _sha256(path / name) != meta["files"][name]:
                raise ValueError(f"{name} does not match its hash")
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        return state, load_file(str(path / "weights.safetensors"))

    def remove(self) -> None:
        """Delete every checkpoint (the final model is saved)."""
        shutil.rmtree(self.folder, ignore_errors=True)
