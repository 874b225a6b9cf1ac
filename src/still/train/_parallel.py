"""Where and how a training runs: the process count, the precision, and each process's
share of a batch.

Training runs under Hugging Face accelerate whatever the process count, so one process and
several go through the same loop (still.train._common): accelerate sets up the process
group (gloo between CPU processes, NCCL between GPUs), wraps the model for DDP and averages
the gradients. What is decided here, before any model is loaded, is what the machine can
run: a setup it cannot (bf16 on a GPU without it, FSDP on CPU or on one process, more
processes than GPUs) is refused as one line.

Precision is autocast (torch.autocast) around the recipe's forward pass with the weights
kept in fp32: "bf16 mixed precision". It is applied here, not through accelerate's
`mixed_precision`, because accelerate fixes that once per Python process and one process
(a test session, `still curve`) may train several students in different precisions.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from still.errors import TrainError
from still.tasks import TrainSpec

log = logging.getLogger("still.train")

T = TypeVar("T")


class TrainingSetupError(TrainError):
    """A training setup this machine cannot run (said before the model is loaded)."""


def launched_world() -> int:
    """The process count a launcher (ours, torchrun, `accelerate launch`) started this
    process in; 1 outside one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def processes(spec: TrainSpec) -> int:
    """How many training processes `spec` asks for: `train.processes`, else one per GPU,
    else 1 (on CPU, where one process already uses every core)."""
    if spec.processes:
        return spec.processes
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 1


def check_setup(spec: TrainSpec) -> None:
    """Refuse, as one line, a setup this machine cannot run.

    Raises:
        TrainingSetupError: more processes than GPUs, FSDP on CPU or on one process,
            ZeRO on one process or without DeepSpeed, QLoRA without a GPU or
            bitsandbytes, or bf16 asked of a GPU without it.
    """
    import torch

    n = max(processes(spec), launched_world())
    cuda = torch.cuda.is_available()
    if cuda and n > torch.cuda.device_count():
        raise TrainingSetupError(
            f"train.processes={n} but this machine has {torch.cuda.device_count()} GPU(s): "
            "use one process per GPU at most"
        )
    if spec.sharding == "fsdp" and not cuda:
        raise TrainingSetupError(
            "train.sharding: fsdp needs GPUs (accelerate shards with FSDP on CUDA only); "
            "use sharding: ddp on CPU"
        )
    if spec.sharding == "fsdp" and n == 1:
        raise TrainingSetupError(
            "train.sharding: fsdp on one process shards nothing: use --processes 2 or more, "
            "or sharding: ddp"
        )
    zero = spec.sharding in ("zero2", "zero3")
    if zero and n == 1:
        raise TrainingSetupError(
            f"train.sharding: {spec.sharding} on one process shards nothing: use --processes "
            "2 or more, or sharding: ddp"
        )
    if zero and importlib.util.find_spec("deepspeed") is None:
        raise TrainingSetupError(
            f"train.sharding: {spec.sharding} needs DeepSpeed: `pip install deepspeed` (or "
            "'still[deepspeed]'), or use sharding: ddp"
        )
    if zero and spec.save_every:
        raise TrainingSetupError(
            f"train.save_every: checkpoints are not written under sharding: {spec.sharding} "
            "(each process holds its own part of the optimizer state): set save_every: 0, "
            "or use sharding: ddp (or fsdp on GPUs)"
        )
    if spec.method == "qlora" and spec.sharding != "ddp":
        raise TrainingSetupError(
            f"train.method: qlora trains with sharding: ddp, not {spec.sharding}: use "
            "sharding: ddp, or method: lora"
        )
    if spec.method == "qlora" and not cuda:
        raise TrainingSetupError(
            "train.method: qlora trains on a 4-bit base with bitsandbytes' CUDA kernels, and "
            "this machine has no GPU: use method: lora (or full)"
        )
    if spec.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingSetupError(
            "train.method: qlora needs bitsandbytes: `pip install bitsandbytes` (or "
            "'still[qlora]'), or use method: lora"
        )
    if spec.precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise TrainingSetupError(
            f"train.precision: bf16: {torch.cuda.get_device_name()} has no bf16; use "
            "precision: fp32 (or auto)"
        )


def make_accelerator(spec: TrainSpec) -> Any:
    """The accelerate Accelerator this process trains under: a single process, or one
    rank of those a launcher started (the process group is set up here)."""
    import torch
    from accelerate import Accelerator

    check_setup(spec)
    cuda = torch.cuda.is_available()
    if spec.sharding in ("zero2", "zero3"):
        return _deepspeed(spec, cuda)
    plugin = None
    if spec.sharding == "fsdp":
        from accelerate import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2,
            state_dict_type="FULL_STATE_DICT",
            auto_wrap_policy="transformer_based_wrap",
            reshard_after_forward=True,
        )
    return Accelerator(cpu=not cuda, fsdp_plugin=plugin)


def _deepspeed(spec: TrainSpec, cuda: bool) -> Any:
    """An Accelerator whose `prepare` wraps the model in a DeepSpeed ZeRO engine (stage 2:
    gradients and optimizer state partitioned; 3: the weights too), on GPUs or, through
    DeepSpeed's CPU accelerator, on CPU processes. The weights stay fp32 (bf16 is the
    loop's autocast, as elsewhere); the loop sets each micro-batch's accumulation
    boundary itself, so the accumulation steps here only size DeepSpeed's bookkeeping."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cuda else "cpu")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # as `accelerate launch` sets it
    from accelerate import Accelerator, DeepSpeedPlugin, PartialState

    if not cuda:  # else accelerate sees no process group on CPU without its `cpu` flag,
        PartialState(cpu=False, backend="gloo")  # which would turn DeepSpeed off

    config = {
        "train_micro_batch_size_per_gpu": micro_rows(spec, launched_world()),
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": {
            "stage": 2 if spec.sharding == "zero2" else 3,
            "stage3_gather_16bit_weights_on_model_save": True,  # the saved model, gathered
        },
        "zero_allow_untested_optimizer": True,  # torch's AdamW, as every other sharding
    }
    return Accelerator(cpu=False, deepspeed_plugin=DeepSpeedPlugin(hf_ds_config=config))


def micro_rows(spec: TrainSpec, processes: int) -> int:
    """Rows one process runs through the model at once: `train.micro_batch_size`, else its
    whole share of a batch."""
    share = math.ceil(spec.batch_size / processes)
    return min(spec.micro_batch_size or share, share)


def precision_for(choice: str, device_type: str) -> str:
    """`train.precision` on this device: "bf16" or "fp32" (auto: bf16 on a GPU that has
    it, fp32 elsewhere: on CPU bf16 measured slower)."""
    return _precision(choice, device_type)[0]


def resolve_precision(choice: str, device_type: str) -> str:
    """`precision_for`, with the choice and why logged."""
    chosen, why = _precision(choice, device_type)
    what = "bf16 mixed precision (autocast, fp32 weights)" if chosen == "bf16" else "fp32"
    log.info("training in %s on %s (%s)", what, device_type, why)
    return chosen


def _precision(choice: str, device_type: str) -> tuple[str, str]:
    import torch

    if choice != "auto":
        return choice, f"train.precision: {choice}"
    if device_type != "cuda":
        return "fp32", "train.precision: auto; bf16 measured slower on CPU"
    if torch.cuda.is_bf16_supported():
        return "bf16", "train.precision: auto"
    return "fp32", "train.precision: auto; this GPU has no bf16"


def shares(
    batch: Sequence[T],
    rank: int,
    world: int,
    micro: int | None,
    weight: Callable[[T], float] | None = None,
) -> list[tuple[list[T], float]]:
    """This process's part of a global batch, as micro-batches with their weights (each
    one's share of what the batch's loss is a mean over), the same number on every process.

    Process `rank` takes rows rank, rank + world, ...; its rows are cut into micro-batches
    of `micro` rows (default: all at once). A row counts `weight(row)` in the recipe's
    mean loss (its answer tokens, say; default 1: a mean over rows), so the micro-batches'
    losses, each a mean over its own rows, add up to the whole batch's. A process left
    without rows for a micro-batch (a batch smaller than the process count, or a shorter
    share) runs one row at weight 0, so that every process joins every gradient exchange.
    """
    count = weight or (lambda row: 1.0)
    whole = sum(count(row) for row in batch)
    mine = list(batch[rank::world])
    widest = math.ceil(len(batch) / world)
    size = min(micro or widest, widest)
    parts = [mine[i * size : (i + 1) * size] for i in range(math.ceil(widest / size))]
    return [(p, sum(count(r) for r in p) / whole) if p else ([batch[0]], 0.0) for p in parts]
