"""`still estimate`: what a run will send and cost, and what training its student will
take, before any model is called or loaded.

Every request a full run makes (the teacher on the train split; each role on the held-out
split) is built exactly as the run would build it and counted with its model's tokenizer
(`still.tokens`). Requests already in the store are free and shown apart. Prompt tokens are
counted; answer tokens are bounded (the longest label, or `max_tokens`), so the dollar
figure is an upper bound: the number to give `--max-cost`.

The training (`estimate_training`) is worked out from the student's config and the task's
rows (`still.train.estimate_memory`): its parameters, the memory each method would hold per
process on this machine's device (activations at the rows' bounded lengths) and whether it
fits, and the time at a tokens/s
measured by an earlier training of this task here, else assumed (DEFAULT_MFU).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from still.errors import ModelError
from still.pipeline._run import Run, StageError
from still.prices import price_for
from still.tokens import counter_for, estimate
from still.types import Request

if TYPE_CHECKING:
    from still.train import MemoryEstimate

log = logging.getLogger("still.pipeline")

DEFAULT_MFU = 0.4
"""The share of this machine's measured matmul rate a training is assumed to reach when no
training of the task's student was measured here yet: full fine-tuning and LoRA of
SmolLM2-135M reached 32-52% of it on CPU (docs/benchmarks.md). A GPU given small batches of
short rows reaches far less (0.1-0.3% for that model at batch 8 on an H200), so there the
assumed time is a lower bound."""

PLAN: tuple[tuple[str, str], ...] = (
    ("teacher", "train"),
    ("teacher", "heldout"),
    ("student", "heldout"),
    ("distilled", "heldout"),
    ("distilled-verified", "heldout"),
    ("control", "heldout"),
)
"""The (role, split) captures of `still run`, in order, with both distilled students."""


@dataclass
class StageEstimate:
    """One capture of a run: its requests, their tokens and their cost bound."""

    role: str
    split: str
    model: str
    tokenizer: str
    exact: bool  # counted with the model's own tokenizer
    requests: int
    stored: int  # already answered: no call, no cost
    prompt_tokens: int  # of the requests still to send
    output_tokens_max: int
    input_cost: float | None  # dollars; None: the model has no price
    output_cost_max: float | None

    @property
    def to_send(self) -> int:
        return self.requests - self.stored

    @property
    def cost_max(self) -> float | None:
        if self.input_cost is None or self.output_cost_max is None:
            return None
        return self.input_cost + self.output_cost_max

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "to_send": self.to_send, "cost_max": self.cost_max}


def estimate_run(
    run: Run, plan: tuple[tuple[str, str], ...] | None = None, limit: int | None = None
) -> list[StageEstimate]:
    """Count the tokens and bound the cost of each capture in `plan` (default: `still
    run`'s: the teacher check on validation included, with every distilled student the
    task's `curate.students` trains; for grpo, the bench alone).

    A distilled student does not exist before training: its requests are built with
    the base student (same tokenizer, same prompt) and priced as the task prices
    `distilled` (by default, not at all: it is a local model). An ensemble's teacher is a
    line per member; a whole run of a task that synthesizes inputs starts with that line.
    """
    task = run.task
    whole_run = plan is None
    if plan is None:  # the teacher check before training reads validation, when there is one
        check = (("teacher", "validation"), ("student", "validation"))
        before = (("teacher", "train"), *(check if run.split.validation else ()))
        # a recipe learning from the student's own graded answers (grpo) asks no teacher
        # before the bench; its reward's judges are not counted here
        plan = (
            *(before if run.learns_from_teacher else ()),
            *((r, "heldout") for r in run.roles()),
        )
    out = []
    if whole_run and synthesizes(run):
        from still.pipeline._synthesize import estimate_synthesis

        out.append(estimate_synthesis(run))
    for role, split in plan:
        if role == "teacher":
            out += _teacher_stages(run, split, limit)
            continue
        trained = True
        try:
            reqs = run.requests(role, split, limit)
        except StageError:  # the distilled student is not trained yet
            trained = False
            reqs = run.requests("student", split, limit)
        distilled = role.startswith("distilled")
        model = task.models.student if distilled else run.model_for(role)
        out.append(
            _stage(
                run, role, split, model, reqs, trained,
                shown=f"{model} (fine-tuned)" if distilled else model,
                priced_as="distilled" if distilled else model,
            )
        )  # fmt: skip
    return out


def synthesizes(run: Run) -> bool:
    """Whether `still run` will have the teacher write inputs first (`synthesize.use`
    with no `synthetic.jsonl` yet): those calls come before every capture."""
    spec = run.task.synthesize
    return spec is not None and spec.use and not (run.dir / "synthetic.jsonl").is_file()


def _teacher_stages(run: Run, split: str, limit: int | None) -> list[StageEstimate]:
    """The teacher's capture of a split: one line per ensemble member (each asks its own
    prompts and pays its own calls), or one. A `teacher_training` teacher that is not
    trained yet is counted with its base model's requests (same tokenizer, same prompts)."""
    try:
        model, exists = run.model_for("teacher"), True
    except StageError:
        if run.teacher_base is None:
            raise
        model, exists = run.teacher_base, False
    if exists and run.task.ensemble is not None:
        from still.pipeline._ensemble import member_requests, members

        return [
            _stage(
                run, "teacher" if m.index == 0 else f"teacher (member {m.index})", split,
                m.model, member_requests(run, m, split, limit), stored=True,
            )
            for m in members(run)
        ]  # fmt: skip
    reqs = run.requests("teacher", split, limit, model=model)
    shown = model if exists else f"{model} (fine-tuned on gold first)"
    return [_stage(run, "teacher", split, model, reqs, exists, shown=shown)]


def _stage(
    run: Run,
    role: str,
    split: str,
    model: str,
    reqs: dict[str, Request],
    stored: bool,
    shown: str | None = None,
    priced_as: str | None = None,
) -> StageEstimate:
    """One capture's line: `reqs` counted with `model`'s tokenizer, those already in the
    store free when `stored` (False: the model does not exist yet, nothing of it is)."""
    counter = counter_for(model, run.task.tokenizers)
    done = prompt = output = 0
    for req in reqs.values():
        if stored and run.store.lookup(req.key()) is not None:
            done += 1
            continue
        est = estimate(counter, req)
        prompt += est.prompt
        output += est.output_max
    price = price_for(priced_as or model, run.task.prices)
    return StageEstimate(
        role=role,
        split=split,
        model=shown or model,
        tokenizer=counter.name,
        exact=counter.exact,
        requests=len(reqs),
        stored=done,
        prompt_tokens=prompt,
        output_tokens_max=output,
        input_cost=None if price is None else price.cost(prompt, 0),
        output_cost_max=None if price is None else price.cost(0, output),
    )


def total_cost(stages: list[StageEstimate]) -> float:
    """Upper bound of the dollars still to spend (unpriced stages count 0)."""
    return sum(s.cost_max or 0.0 for s in stages)


@dataclass
class TrainingEstimate:
    """What training the task's student takes here, before its model is loaded.

    `memory` holds one estimate per method (lora, full, and qlora on a GPU or when the
    task asks for it), each per training process; `fits`, whether it fits the device's
    free memory (on CPU, all processes together). The time is for the task's method.
    """

    student: str
    parameters: int
    method: str  # the task's
    processes: int
    precision: str  # fp32 or bf16: what train.precision resolves to here
    device: str  # cuda or cpu
    device_name: str
    free: float  # bytes: the GPU's free memory, or the machine's available RAM
    memory: list[MemoryEstimate]
    fits: list[bool]
    rows: int  # training rows at most: the train split
    tokens: int  # tokens through the training at most: rows x their tokens x epochs
    steps: int
    tokens_per_s: float
    rate_from: str  # where tokens_per_s comes from
    trainable: dict[str, int] = field(default_factory=dict)  # parameters each method trains

    @property
    def seconds(self) -> float:
        return self.tokens / self.tokens_per_s if self.tokens_per_s else float("nan")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["memory"] = [m.as_dict() for m in self.memory]
        out["seconds"] = self.seconds
        return out


def estimate_training(run: Run) -> TrainingEstimate | None:
    """The student's training on this machine (see TrainingEstimate); None when the
    student is no local model (nothing is trained here).

    Raises:
        StageError: the student's folder holds no causal language model.
    """
    from still.models import local_path
    from still.train import (
        NotACausalLM,
        device_memory,
        estimate_memory,
        flops_per_token,
        matmul_rate,
        model_shape,
        needed,
        precision_for,
        training_processes,
    )

    task, spec = run.task, run.task.train
    try:
        base = local_path(task.models.student)
    except ModelError:
        return None
    try:
        shape = model_shape(base)
    except NotACausalLM as exc:
        raise StageError(str(exc)) from exc
    device = device_memory()
    n = training_processes(spec)
    precision = precision_for(spec.precision, device.device)
    methods = ["lora", "full"]
    if device.device == "cuda" or spec.method == "qlora":
        methods.append("qlora")
    lengths = _training_lengths(run)
    # activations at the task's own rows (each bounded by its prompt and longest answer),
    # as the check before training reckons them, not every row at max_length
    memory = [
        estimate_memory(
            shape, spec, m, processes=n, bf16=precision == "bf16", lengths=lengths or None
        )
        for m in methods
    ]
    rows, tokens = len(lengths), round(sum(lengths) * spec.epochs)
    steps = max(1, round(-(-rows // spec.batch_size) * spec.epochs)) if rows else 0
    rate, source = _measured_rate(run.dir, spec.method, precision, spec.packing)
    if rate is None:
        speed = matmul_rate(device.device, precision == "bf16")
        scale = n if device.device == "cuda" else 1  # CPU processes share the same cores
        rate = speed * DEFAULT_MFU * scale / flops_per_token(shape, spec.method)
        source = (
            f"assumed: {DEFAULT_MFU:.0%} of this machine's measured matmul rate "
            f"({speed / 1e9:,.0f} GFLOP/s)"
        )
    return TrainingEstimate(
        student=task.models.student, parameters=shape.parameters, method=spec.method,
        processes=n, precision=precision, device=device.device, device_name=device.name,
        free=device.free, memory=memory,
        fits=[needed(m, n, device) <= device.free for m in memory],
        rows=rows, tokens=tokens, steps=steps, tokens_per_s=rate, rate_from=source,
        trainable={m: shape.trainable(m, spec.lora_r) for m in methods},
    )  # fmt: skip


def _training_lengths(run: Run) -> list[int]:
    """Each training row's tokens at most (one per example of the train split): the
    student's prompt and the answer's bound, each at most train.max_length."""
    counter = counter_for(run.task.models.student, run.task.tokenizers)
    limit = run.task.train.max_length
    lengths = []
    for req in run.requests("student", "train").values():
        est = estimate(counter, req)
        lengths.append(min(est.prompt + est.output_max, limit))
    return lengths


def _measured_rate(
    folder: Path, method: str, precision: str, packing: bool = False
) -> tuple[float | None, str]:
    """Tokens/s of the newest training of this task's student with `method`, `precision`
    and packing (which computes no padding, so it runs more tokens/s) recorded in the run
    folder (its train.json files), if any."""
    found = []
    for path in folder.glob("**/train.json"):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        same = (
            info.get("method") == method
            and info.get("precision", "fp32") == precision
            and bool(info.get("packed", False)) == packing
        )
        if same and float(info.get("tokens_per_s") or 0) > 0:
            found.append((path.stat().st_mtime, float(info["tokens_per_s"]), path))
    if not found:
        return None, ""
    _, rate, path = max(found)
    return rate, f"measured: {path.relative_to(folder)}"
