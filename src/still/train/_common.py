"""What every training recipe shares: one config (TrainSpec), one way to load the student
(LoRA or full), one schedule, one training loop, one result record and one atomic save.

Each recipe (sft.py, kd.py, ...) keeps only what differs, its data and its loss, so
comparing recipes compares losses, not accidental differences in setup. The loop is the
same for one process and for several (under accelerate, still.train._parallel), in fp32 or
bf16 autocast, and writes resumable checkpoints (still.train._checkpoints) when asked.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from still.errors import TrainError
from still.tasks import TrainSpec
from still.train._checkpoints import Checkpoints, checkpoint_dir, fingerprint
from still.train._parallel import (
    check_setup,
    make_accelerator,
    resolve_precision,
    shares,
)

log = logging.getLogger("still.train")

T = TypeVar("T")

LossOf = Callable[[list[T]], tuple[Any, int] | tuple[Any, int, int]]
"""A recipe's loss over some of its rows: (mean loss, the rows' tokens through the forward
pass), and optionally the positions it computed, padding included (for
TrainResult.padded_share)."""


@dataclass
class TrainResult:
    """What a training run did; written as `train.json` beside the model."""

    out_dir: str
    method: str
    examples: int
    steps: int
    epochs: float
    seconds: float
    tokens_per_s: float
    losses: list[float] = field(default_factory=list)
    skipped_too_long: int = 0
    recipe: str = "sft"
    tokens: int = 0  # tokens through the forward pass (prompt + answer), all steps
    skipped_no_targets: int = 0  # rows without usable soft targets (top-k KD)
    precision: str = "fp32"  # what train.precision resolved to: fp32 or bf16 (autocast)
    processes: int = 1  # training processes that shared each batch
    resumed_from: int = 0  # the checkpoint's step this run resumed from (0: none)
    sharding: str = "none"  # what shared the model among processes: ddp, fsdp, zero2, zero3
    packed: bool = False  # examples were packed into rows (train.packing)
    # of the positions the forward passes computed, the share that was padding (None: the
    # recipe does not say); `tokens` counts only the others
    padded_share: float | None = None

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def last_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return sum(tail) / len(tail) if tail else math.nan


@dataclass
class Student:
    """The model being trained, its tokenizer, device and padding id; the accelerate
    Accelerator it trains under and the precision it computes in; `rng`, the recipe's own
    random choices (saved in checkpoints, so a resumed run makes the same ones).

    During `train_loop`, `model` is the model as accelerate prepared it (wrapped for DDP
    with several processes): recipes call it, and `unwrapped` for anything else
    (generate, config).
    """

    model: Any
    tokenizer: Any
    device: str
    pad: int
    lora: bool
    base: Path
    precision: str
    accelerator: Any
    rng: random.Random

    @property
    def unwrapped(self) -> Any:
        """The model itself, outside any DDP wrapper or DeepSpeed engine (under FSDP and
        ZeRO-3, still sharded)."""
        return self.accelerator.unwrap_model(self.model)

    @property
    def fsdp(self) -> bool:
        """Whether FSDP shards the weights, gradients and optimizer state."""
        return bool(getattr(self.accelerator, "is_fsdp2", False))

    @property
    def zero(self) -> int:
        """The DeepSpeed ZeRO stage the model trains under (0: none)."""
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        return int(plugin.zero_stage) if plugin is not None else 0

    @property
    def sharded(self) -> bool:
        """Whether the weights are sharded across processes (FSDP, ZeRO-3): every process
        must then take part in each forward pass, generation included (`synced_gpus`)."""
        return self.fsdp or self.zero == 3

    @property
    def sharding(self) -> str:
        """How the processes share the model, as the engine set it up: fsdp, zero2,
        zero3, ddp, or none (one process)."""
        if self.fsdp:
            return "fsdp"
        if self.zero:
            return f"zero{self.zero}"
        return "ddp" if self.accelerator.num_processes > 1 else "none"

    def autocast(self) -> AbstractContextManager[Any]:
        """The forward pass's precision: bf16 autocast (weights stay fp32), or nothing."""
        import torch

        if self.precision != "bf16":
            return nullcontext()
        return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16)


def read_jsonl(path: Path, valid: Callable[[Any], bool], expected: str) -> list[Any]:
    """The rows of a recipe's JSONL data file, each checked by `valid` (which may raise
    KeyError, TypeError or IndexError on a malformed row); the first bad row raises
    TrainError naming file and line and what was `expected` there."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ok = valid(row)
        except (ValueError, KeyError, TypeError, IndexError):
            ok = False
        if not ok:
            raise TrainError(f"{path}:{n}: expected {expected}")
        rows.append(row)
    return rows


def read_token_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of `train-tokens.jsonl`: `messages` (student prompt + the answer, last) and
    `teacher_messages` (the teacher's prompt). A malformed row names file and line."""
    return read_jsonl(
        path,
        lambda row: (
            isinstance(row["messages"], list)
            and row["messages"][-1]["role"] == "assistant"
            and isinstance(row["teacher_messages"], list)
        ),
        "messages ending in the assistant's answer, and teacher_messages",
    )


def load_student(base_model: Path, spec: TrainSpec, *, packs: bool = False) -> Student:
    """The base model in float32 (QLoRA: 4-bit), wrapped in LoRA adapters on every linear
    layer for `lora` and `qlora`, in training mode, seeded, on this process's device, with
    the precision `spec.precision` resolves to there.

    Before anything is loaded, the setup is checked (the memory the training needs was,
    with the recipe's data, by the recipe's `launched` wrapper: still.train._launch).
    `packs`: the recipe packs its rows when `spec.packing` asks (still.train._packing);
    one that does not refuses it.

    Raises:
        TrainError: train.packing for a recipe that does not pack.
        TrainingSetupError: a setup this machine cannot run (still.train._parallel).
        NotACausalLM: the student's folder holds no causal language model.
    """
    import torch
    from transformers import AutoTokenizer

    if spec.packing and not packs:
        raise TrainError(
            "train.packing is for losses over answer tokens (train.recipe sft, or kd on a "
            f"task without labels and without kd.cross_tokenizer), not this {spec.recipe!r} "
            "training: set train.packing: false"
        )
    check_setup(spec)
    accelerator = make_accelerator(spec)
    device = str(accelerator.device)
    precision = resolve_precision(spec.precision, accelerator.device.type)
    torch.manual_seed(spec.seed)
    tokenizer: Any = AutoTokenizer.from_pretrained(base_model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model = build_model(base_model, spec, device, precision)
    model.train()
    return Student(
        model, tokenizer, device, pad, spec.method != "full", Path(base_model), precision,
        accelerator, random.Random(spec.seed),
    )  # fmt: skip


def build_model(base_model: Path, spec: TrainSpec, device: str, precision: str = "fp32") -> Any:
    """The base model in float32 on `device`, with LoRA adapters on every linear layer
    when `spec.method` is lora (initialised from torch's random state); for qlora, its
    linear layers in 4-bit NF4 (bitsandbytes, CUDA only), computing in `precision`, under
    the adapters."""
    import torch
    from transformers import AutoModelForCausalLM

    auto: Any = AutoModelForCausalLM  # its stubs mistype from_pretrained's first argument
    if spec.method == "qlora":
        model = _four_bit(auto, base_model, device, precision)
    else:
        model = auto.from_pretrained(base_model, dtype=torch.float32).to(device)
    if spec.method != "full":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=spec.lora_r,
                lora_alpha=spec.lora_alpha,
                lora_dropout=0.05,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
    return model


def _four_bit(auto: Any, base_model: Path, device: str, precision: str) -> Any:
    """QLoRA's base: the linear layers quantized to 4-bit NF4 with double-quantized scales
    as they load (bitsandbytes), computing in bf16 (or fp32), the other weights (norms,
    embeddings) in fp32 as peft's k-bit preparation leaves them; on this process's GPU."""
    import peft
    import torch
    import transformers

    compute = torch.bfloat16 if precision == "bf16" else torch.float32
    bnb: Any = transformers.BitsAndBytesConfig  # untyped
    quantization = bnb(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )
    gpu = torch.device(device).index
    model = auto.from_pretrained(
        base_model,
        dtype=compute,
        quantization_config=quantization,
        # a GPU index, as accelerate expects of a quantized model (loaded where it trains)
        device_map={"": torch.cuda.current_device() if gpu is None else gpu},
    )
    prepare: Any = peft.prepare_model_for_kbit_training  # untyped
    # the same loop as LoRA's: no gradient checkpointing slipped in
    return prepare(model, use_gradient_checkpointing=False)


def total_steps(rows: int, spec: TrainSpec) -> int:
    return max(1, round(math.ceil(rows / spec.batch_size) * spec.epochs))


def optimizer(student: Student, spec: TrainSpec, total: int) -> tuple[Any, Any]:
    """AdamW over the trainable parameters with linear warm-up (10%) and linear decay."""
    import torch

    params = [p for p in student.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.0)
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup)))
    )
    return opt, sched


def batches(rows: Sequence[T], spec: TrainSpec, total: int, start: int = 0) -> Iterator[list[T]]:
    """Batches `start + 1` to `total` of `spec.batch_size` rows: epochs of a seeded
    shuffle, back to back. The first `start` are skipped by replaying the shuffle, so a
    resumed run sees the rows an uninterrupted one would."""
    rng = random.Random(spec.seed)
    order: list[int] = []
    for n in range(total):
        if len(order) < spec.batch_size:
            fresh = list(range(len(rows)))
            rng.shuffle(fresh)
            order += fresh
        if n >= start:
            yield [rows[i] for i in order[: spec.batch_size]]
        del order[: spec.batch_size]


def save(student: Student, model: Any, out_dir: Path, result: TrainResult) -> None:
    """Merge LoRA into the weights of `model` (the student's, whole) and save model,
    tokenizer and train.json, atomically (a folder appears complete or not at all)."""
    model = model.merge_and_unload() if student.lora else model
    model.eval()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    student.tokenizer.save_pretrained(tmp)
    (tmp / "train.json").write_text(json.dumps(asdict(result), indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


@dataclass
class Training:
    """A running training: the student (its model prepared by accelerate), its optimizer
    and schedule. `step` is one optimizer step over a global batch; the state methods are
    what a checkpoint holds."""

    student: Student
    optimizer: Any
    scheduler: Any
    spec: TrainSpec
    weight_of: Callable[[Any], float] | None = None

    def step(self, batch: list[T], loss_of: LossOf[T]) -> tuple[float, int, int | None]:
        """Forward and backward this process's share of `batch` (micro-batch by micro-batch,
        gradients exchanged after the last), clip to norm 1, update. Returns the global
        batch's loss (the micro-batches' losses, each weighted by its share of the batch:
        `shares`), its tokens and the positions computed for them (padding included; None
        when `loss_of` does not say), summed over processes."""
        import torch

        acc, model = self.student.accelerator, self.student.model
        parts = shares(batch, acc.process_index, acc.num_processes, self.spec.micro_batch_size,
                       self.weight_of)  # fmt: skip
        zero = self.student.zero
        value, tokens, positions, told = 0.0, 0, 0, True
        for i, (rows, weight) in enumerate(parts):
            last = i == len(parts) - 1
            with nullcontext() if last or zero else acc.no_sync(model):
                with self.student.autocast():
                    out = loss_of(rows)
                loss, used = out[0], out[1]
                told = told and len(out) == 3
                # the gradient of the global batch's loss: processes' gradients are averaged
                scaled = loss * (weight * acc.num_processes)
                if zero:  # the DeepSpeed engine: it reduces, clips and steps at the last one
                    model.set_gradient_accumulation_boundary(is_boundary=last)
                    model.backward(scaled, scale_wrt_gas=False)
                else:
                    acc.backward(scaled)
            value += float(loss.detach()) * weight
            tokens += used if weight else 0
            positions += out[2] if len(out) == 3 and weight else 0
        if acc.num_processes > 1:
            sums = torch.tensor([value, tokens, positions], dtype=torch.float64,
                                device=acc.device)  # fmt: skip
            value, summed, computed = acc.reduce(sums, reduction="sum").tolist()
            tokens, positions = round(summed), round(computed)
        if zero:
            model.step()  # gradient_clipping: 1.0 in its config, then AdamW, then zero_grad
        else:
            acc.clip_grad_norm_(model.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return value, tokens, positions if told else None

    # What a checkpoint holds. Under FSDP each process holds a shard: the whole weights
    # and optimizer state are gathered (collectively) for the main process to write, and
    # every process takes its shard of them back when resuming.

    def _trainable(self) -> dict[str, Any]:
        return {n: p for n, p in self.student.unwrapped.named_parameters() if p.requires_grad}

    def trainable_state(self) -> dict[str, Any]:
        """The trainable weights by name, whole, on CPU (all of them under full
        fine-tuning); collective under FSDP, where only the main process gets them."""
        if self.student.fsdp:
            whole = _dcp().get_model_state_dict(self.student.model, options=_whole())
            return {n: whole[n].contiguous() for n in self._trainable() if n in whole}
        return {n: p.detach().to("cpu", copy=True).contiguous()
                for n, p in self._trainable().items()}  # fmt: skip

    def load_trainable_state(self, weights: dict[str, Any]) -> None:
        """Put checkpointed trainable weights back (names must match exactly)."""
        import torch

        params = self._trainable()
        if params.keys() != weights.keys():
            raise ValueError("the checkpoint's weights are not this model's trainable ones")
        if self.student.fsdp:
            options = _whole(offload=False, strict=False)
            _dcp().set_model_state_dict(self.student.model, weights, options=options)
            return
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(weights[name])

    def optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state (whole, gathered to the main process under FSDP)."""
        if self.student.fsdp:
            dcp = _dcp()
            whole: dict[str, Any] = dcp.get_optimizer_state_dict(
                self.student.model, self.optimizer.optimizer, options=_whole()
            )
            return whole
        state: dict[str, Any] = self.optimizer.state_dict()
        return state

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        if self.student.fsdp:
            _dcp().set_optimizer_state_dict(self.student.model, self.optimizer.optimizer, state,
                                            options=_whole(offload=False))  # fmt: skip
            return
        self.optimizer.load_state_dict(state)

    def final_model(self) -> Any:
        """The trained model, whole, for the main process to save (None elsewhere under
        FSDP, where the weights are gathered into a fresh copy on the main process's CPU).
        QLoRA's adapters go onto a fresh full-precision copy of the base on the CPU, so the
        merged model is a plain one that every provider loads, not a 4-bit one."""
        if self.spec.method == "qlora":
            adapters = self.trainable_state()
            if not self.student.accelerator.is_main_process:
                return None
            plain = build_model(self.student.base, self.spec.model_copy(update={"method": "lora"}),
                                "cpu")  # fmt: skip
            missing = set(adapters) - {n for n, _ in plain.named_parameters()}
            if missing:
                raise TrainError(f"QLoRA adapters with no place in the plain model: {missing}")
            plain.load_state_dict(adapters, strict=False)
            return plain
        if self.student.zero == 3:
            return self._gathered()
        if not self.student.fsdp:
            return self.student.unwrapped
        whole = _dcp().get_model_state_dict(self.student.model, options=_whole())
        if not self.student.accelerator.is_main_process:
            return None
        model = build_model(self.student.base, self.spec, "cpu")
        model.load_state_dict(whole)
        return model

    def _gathered(self) -> Any:
        """ZeRO-3's partitioned weights gathered whole (collectively; DeepSpeed's
        stage3_gather_16bit_weights_on_model_save, in the weights' own fp32) into a fresh
        copy on the main process's CPU (None elsewhere)."""
        import torch
        import transformers.integrations.deepspeed as hf_deepspeed

        acc = self.student.accelerator
        whole = acc.get_state_dict(self.student.model)
        # the training is over: a model built from here on is a plain one, not partitioned
        # as it loads (transformers' ZeRO-3 init would wait for the other processes)
        unset: Any = hf_deepspeed.unset_hf_deepspeed_config  # untyped
        unset()
        if not acc.is_main_process:
            return None
        model = build_model(self.student.base, self.spec, "cpu")
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(whole[name])
        return model


def _dcp() -> Any:
    """torch.distributed.checkpoint.state_dict: whole state dicts of sharded models."""
    import torch.distributed.checkpoint.state_dict as dcp

    return dcp


def _whole(offload: bool = True, strict: bool = True) -> Any:
    """Options for whole (unsharded) state dicts, kept on the main process's CPU."""
    return _dcp().StateDictOptions(full_state_dict=True, cpu_offload=offload, strict=strict)


def train_loop(
    student: Student,
    rows: Sequence[T],
    spec: TrainSpec,
    loss_of: LossOf[T],
    out_dir: Path,
    on_step: Callable[[int, int, float], None] | None = None,
    *,
    recipe: str,
    data: Path,
    teacher: Path | None = None,
    weight_of: Callable[[T], float] | None = None,
    skipped_too_long: int = 0,
    skipped_no_targets: int = 0,
) -> TrainResult:
    """The loop every recipe shares: `spec.epochs` over `rows` in batches, each batch's
    loss and token count from the recipe's `loss_of` (a mean over the rows it is given;
    `LossOf`), an optimizer step, progress through `on_step(step, total, loss)`; then the
    merged model saved to `out_dir` with its TrainResult (recipe name, rows left out and
    why, losses, throughput in real tokens, padding, precision, processes).

    With `spec.save_every`, a checkpoint every that many steps; a rerun resumes from the
    newest one that `data` (the recipe's data file), the base model, `teacher` and `spec`
    still match. With several processes each runs this loop on its share of every batch;
    only the main one writes. `weight_of(row)` is how much a row counts in `loss_of`'s
    mean (its answer tokens, for a loss averaged over tokens; default 1), so that a batch
    split across processes or micro-batches has the loss it has in one piece.

    Raises:
        TrainError: the loss became NaN or infinite (nothing is saved).
        CheckpointMismatch: the checkpoints beside `out_dir` are another configuration's.
    """
    total = total_steps(len(rows), spec)
    acc = student.accelerator
    result = TrainResult(
        str(out_dir), spec.method, len(rows), total, spec.epochs, 0.0, 0.0,
        skipped_too_long=skipped_too_long, recipe=recipe,
        skipped_no_targets=skipped_no_targets, precision=student.precision,
        processes=acc.num_processes, packed=spec.packing,
    )  # fmt: skip
    opt, sched = optimizer(student, spec, total)
    student.model, opt = acc.prepare(student.model, opt)
    result.sharding = student.sharding
    training = Training(student, opt, sched, spec, weight_of)
    checkpoints = Checkpoints(
        checkpoint_dir(out_dir),
        fingerprint(spec, recipe, data, student.base, teacher, student.precision),
    )
    done, earlier = 0, 0.0  # steps and seconds before this run (resumed)
    positions: int | None = 0  # padding included; None once a step does not say
    if (progress := checkpoints.load(training)) is not None:
        done, earlier = progress["step"], progress["seconds"]
        result.losses, result.tokens = progress["losses"], progress["tokens"]
        positions = progress.get("positions")
        result.resumed_from = done
    start = time.perf_counter()
    for n, batch in enumerate(batches(rows, spec, total, done), done + 1):
        value, tokens, computed = training.step(batch, loss_of)
        if not math.isfinite(value):  # a broken model must not replace a good one
            raise TrainError(
                f"{recipe}: the loss became {value} at step {n} of {total}, so nothing was "
                "saved; lower the learning rate (train.learning_rate, train.dpo.learning_rate)"
            )
        result.tokens += tokens
        positions = None if positions is None or computed is None else positions + computed
        result.losses.append(value)
        if on_step:
            on_step(n, total, value)
        if spec.save_every and n % spec.save_every == 0 and n < total:
            seconds = earlier + time.perf_counter() - start
            progress = {"losses": result.losses, "tokens": result.tokens, "seconds": seconds,
                        "positions": positions}  # fmt: skip
            checkpoints.save(n, training, progress)
    result.seconds = earlier + time.perf_counter() - start
    result.tokens_per_s = result.tokens / result.seconds if result.seconds else 0.0
    if positions:
        result.padded_share = 1 - result.tokens / positions
    model = training.final_model()  # collective under FSDP
    if acc.is_main_process:
        save(student, model, out_dir, result)
        checkpoints.remove()
    acc.wait_for_everyone()
    return result
