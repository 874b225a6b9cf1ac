"""What a training will hold in memory, worked out from the student's config before any
weight is loaded: `still estimate` shows it, and a training that cannot fit is refused in
one line saying what to change, instead of being killed for memory halfway.

The arithmetic, per training process, in bytes (P: the student's parameters, counted once
when tied; T: the trainable ones, all of them for full fine-tuning, the adapters' for LoRA):

- weights: 4 P (fp32: bf16 autocast keeps fp32 master weights, and caches a bf16 copy of
  each weight it multiplies, 2 B more a parameter). QLoRA: the blocks' linear layers in
  4-bit NF4 with double-quantized scales (0.5 + 1/64 B a parameter), the rest (embeddings,
  norms, an untied output layer) in fp32, as peft's k-bit preparation leaves them; LoRA's
  adapters in fp32.
- gradients: 4 T.
- optimizer: AdamW's two fp32 moments, 8 T.
- activations: what the backward pass keeps for one micro-batch (its rows x their length):
  per token, each linear layer's input and output in the blocks, two residual values a
  layer (the norms' inputs), LoRA's dropped-out copy of each adapted layer's input, the
  attention probabilities (heads x length a layer) when the model computes attention
  eagerly (the fused kernels keep none), and the logits five times: the output, its fp32
  copy and log-softmax for the loss, and the first two gradients of the backward pass,
  which come while all else is still held. A value is 4 B in fp32, 2 B under bf16
  autocast (the loss's copies stay fp32). DPO's rows are pairs: two sequences.
- A recipe that reads a local teacher (token KD) holds its weights too: 4 B a parameter.

Sharding divides across processes: FSDP and ZeRO-3 the weights, gradients and optimizer
state; ZeRO-2 the gradients and optimizer state. On CPU the processes share the machine's
memory, so all of them must fit in it together; on GPUs each process has its own.

The rows' length: with no data known (`still estimate`, before the export), max_length,
the longest a row may be. A training knows its data: its recipe's tokenization of each
row gives the rows' lengths (still.train._launch asks for them), and a micro-batch is
reckoned as the longest rows of the data, padded to the longest of them, or, with
`train.packing`, laid out as the packer lays them (still.train._packing: rows of at most
pack_length tokens, no more rows than examples). Reckoned so, a micro-batch never needs
more than at max_length, so the data is read only for a training that does not fit at
max_length: one that fits costs no second tokenization.

Not counted: the framework's own memory (the CUDA context, allocator slack, the optimizer
step's temporaries, which come after the activations are freed). Against measurements
(docs/benchmarks.md: SmolLM2-135M in bf16 on one GPU, batch 8 of rows of about 60 tokens)
this gives 1.61 GiB for LoRA and 2.91 GiB for full fine-tuning where the peaks were 1.78
and 3.19 GiB: some 10% short at the rows' real length, which is why a training is reckoned
at its longest rows, not their mean. At max_length (256 there) it gives 4.19 and 5.05 GiB,
which real rows rarely need: a batch refused at max_length may fit at its rows' length.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from still.errors import TrainError
from still.tasks import TrainSpec
from still.train._packing import pack, pack_width
from still.train._parallel import TrainingSetupError, micro_rows, precision_for

GIB = 1024**3

NF4_BYTES = 0.5 + 1 / 64
"""Bytes a 4-bit (NF4) weight takes with its double-quantized block scale."""


class NotACausalLM(TrainError):
    """The student (or teacher) folder holds no causal language model."""


class DoesNotFit(TrainingSetupError):
    """The training would need more memory than the device has."""


@dataclass(frozen=True)
class ModelShape:
    """A model's size, from its config alone (the weights are not read).

    Attributes:
        name: the folder's name, for messages.
        parameters: every parameter, a tied one once.
        linear: the parameters of the linear layers LoRA adapts and QLoRA quantizes
            (every `nn.Linear` but the output layer).
        linear_io: those layers' in + out features, summed: LoRA's parameters at rank 1
            (rank r has r times as many), and the values they keep per token.
        adapted_in: per token, the inputs of those layers (LoRA's dropped-out copies).
        layers, hidden, heads, vocab: the config's.
        eager_attention: attention computed eagerly (its probabilities kept for backward).
    """

    name: str
    parameters: int
    linear: int
    linear_io: int
    adapted_in: int
    layers: int
    hidden: int
    heads: int
    vocab: int
    eager_attention: bool

    def trainable(self, method: str, lora_r: int) -> int:
        """Parameters `method` trains: all (full), or the adapters' at rank `lora_r`."""
        return self.parameters if method == "full" else self.linear_io * lora_r


def model_shape(folder: Path) -> ModelShape:
    """The shape of the causal LM in `folder`, from its config.json: the model is built on
    torch's meta device, which allocates nothing, so this takes a second for any size.

    Raises:
        NotACausalLM: no config, or a config of no causal language model.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    what = "a Hugging Face causal language model folder (config.json, weights, tokenizer)"
    if not (folder / "config.json").is_file():
        raise NotACausalLM(f"{folder}: no config.json: expected {what}")
    try:
        config = AutoConfig.from_pretrained(folder)
    except (ValueError, KeyError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NotACausalLM(f"{folder}/config.json: unreadable ({first}); expected {what}") from exc
    auto: Any = AutoModelForCausalLM  # untyped in its stubs
    try:
        with torch.device("meta"):
            model = auto.from_config(config)
    except (ValueError, KeyError) as exc:
        raise NotACausalLM(
            f"{folder}: model type {config.model_type!r} is not a causal language model "
            f"(transformers' AutoModelForCausalLM has none for it); expected {what}"
        ) from exc
    output = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not output]
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return ModelShape(
        name=folder.name,
        parameters=sum(p.numel() for p in model.parameters()),
        linear=sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
                   for m in linears),
        linear_io=sum(m.in_features + m.out_features for m in linears),
        adapted_in=sum(m.in_features for m in linears),
        layers=int(getattr(text, "num_hidden_layers", 0) or 0),
        hidden=int(getattr(text, "hidden_size", 0) or 0),
        heads=int(getattr(text, "num_attention_heads", 0) or 0),
        vocab=int(getattr(text, "vocab_size", 0) or 0),
        eager_attention=getattr(model.config, "_attn_implementation", "eager") == "eager",
    )  # fmt: skip


@dataclass(frozen=True)
class MemoryEstimate:
    """One method's memory, per training process, in bytes (see the module)."""

    method: str
    weights: float
    gradients: float
    optimizer: float
    activations: float
    rows: int  # sequences in one micro-batch (packed: rows of them)
    tokens: int  # the longest of them
    measure: str = "max_length"  # what `tokens` is: max_length, or the data's (see `batch_of`)

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}

    def describe(self) -> str:
        """The total and its parts in GiB, for a message."""
        return (
            f"{gib(self.total)} (weights {gib(self.weights)}, gradients {gib(self.gradients)}, "
            f"optimizer {gib(self.optimizer)}, activations {gib(self.activations)} for "
            f"{self.rows} rows x {self.tokens} tokens ({self.measure}))"
        )


def gib(n: float) -> str:
    """Bytes as GiB, to two significant decimals."""
    return f"{n / GIB:.2f} GiB"


def estimate_memory(
    shape: ModelShape,
    spec: TrainSpec,
    method: str | None = None,
    *,
    processes: int = 1,
    bf16: bool = False,
    recipe: str | None = None,
    teacher: ModelShape | None = None,
    lengths: Sequence[int] | None = None,
) -> MemoryEstimate:
    """What one training process holds, in bytes (see the module for the arithmetic).

    Args:
        shape: the student's (`model_shape`).
        spec: batch size, micro-batch size, max_length, LoRA rank and sharding.
        method: lora, full or qlora (default: `spec.method`).
        processes: training processes sharing each batch (and the sharded state).
        bf16: under bf16 autocast (QLoRA always is).
        recipe: the recipe (default: `spec.recipe`); dpo's rows are two sequences.
        teacher: a local teacher the recipe holds beside the student (token KD).
        lengths: the tokens of each row the training will see (`batch_of`); None (or
            none): rows of max_length.
    """
    method = method or spec.method
    bf16 = bf16 or method == "qlora"
    trainable = shape.trainable(method, spec.lora_r)
    if method == "qlora":
        weights = shape.linear * NF4_BYTES + (shape.parameters - shape.linear) * 4.0
        weights += trainable * 4.0
    else:
        weights = shape.parameters * (6.0 if bf16 else 4.0)  # + autocast's bf16 copies
        weights += 0 if method == "full" else trainable * 4.0
    gradients, optimizer = trainable * 4.0, trainable * 8.0
    if spec.sharding in ("fsdp", "zero3"):
        weights /= processes
    if spec.sharding in ("fsdp", "zero2", "zero3"):
        gradients, optimizer = gradients / processes, optimizer / processes
    if teacher is not None:
        weights += teacher.parameters * 4.0
    pairs = (recipe or spec.recipe) == "dpo"
    rows, tokens, measure = batch_of(spec, processes, pairs, lengths)
    value = 2.0 if bf16 else 4.0
    per_token = (shape.linear_io + 2 * shape.hidden * shape.layers) * value
    if method != "full":
        per_token += shape.adapted_in * value
    if shape.eager_attention:
        per_token += shape.heads * tokens * shape.layers * value
    per_token += shape.vocab * (2 * value + 12.0)
    if teacher is not None:
        per_token += teacher.vocab * 4.0
    return MemoryEstimate(method, weights, gradients, optimizer, rows * tokens * per_token,
                          rows, tokens, measure)  # fmt: skip


def batch_of(
    spec: TrainSpec, processes: int, pairs: bool, lengths: Sequence[int] | None
) -> tuple[int, int, str]:
    """The sequences one process runs through the model at once: (rows, their length,
    where that length comes from).

    Without `lengths`, a micro-batch's rows of max_length (two sequences a row for DPO's
    `pairs`). With them (each row's tokens, the longest sequence it puts through the
    forward pass), the data's longest rows, as many as a micro-batch holds (repeated when
    it holds more than the data has, as its batches do), each capped at max_length (a
    longer row is left out of training: reckoned at max_length, it errs on the safe side):
    padded to the longest, or packed into rows as `train.packing` lays them out. Never
    more than at max_length.
    """
    rows, sequences = micro_rows(spec, processes), 2 if pairs else 1
    if not lengths:
        return rows * sequences, spec.max_length, "max_length"
    top = [min(n, spec.max_length) for n in heapq.nlargest(rows, lengths)]
    width = pack_width(spec)
    if width is None:
        return rows * sequences, top[0], "the longest row"
    seqs = [top[i % len(top)] for i in range(rows)] * sequences
    packed = pack(seqs, width)
    widest = max(sum(seqs[i] for i in row) for row in packed)
    return len(packed), widest, "the longest rows packed"


@dataclass(frozen=True)
class DeviceMemory:
    """Where a training runs and what memory it may use there, in bytes."""

    device: str  # "cuda" or "cpu"
    name: str  # for messages: the GPU's name, or "this machine"
    free: float  # per GPU, or the machine's available RAM
    shared: bool  # the processes share `free` (CPU) or each has its own (GPUs)


def device_memory() -> DeviceMemory:
    """The memory a training may use here: the first GPU's free memory, else the RAM
    available (what the kernel could give without swapping)."""
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(0)
        return DeviceMemory("cuda", torch.cuda.get_device_name(0), float(free), False)
    import psutil  # type: ignore[import-untyped]  # installed with accelerate

    return DeviceMemory("cpu", "this machine", float(psutil.virtual_memory().available), True)


def needed(estimate: MemoryEstimate, processes: int, device: DeviceMemory) -> float:
    """Bytes the training needs of `device.free`: all processes' on CPU, one's on a GPU."""
    return estimate.total * (processes if device.shared else 1)


def check_fits(
    base_model: Path,
    spec: TrainSpec,
    processes: int = 1,
    teacher_model: Path | None = None,
    device: DeviceMemory | None = None,
    lengths: Callable[[], Sequence[int] | None] | None = None,
) -> MemoryEstimate:
    """Refuse a training that cannot fit, before its model is loaded: `processes` of them
    (sharing a batch), on `device` (default: this machine's), in the precision
    `spec.precision` resolves to there.

    A training that does not fit with rows of max_length is reckoned again with the rows
    it will see: `lengths()`, the tokens of each (None: not known), is called only then,
    since it reads and tokenizes the data (see the module).

    Returns:
        The estimate, when it fits.

    Raises:
        NotACausalLM: the student or teacher folder holds no causal LM.
        DoesNotFit: one line: what it needs, what there is, and what to change.
    """
    shape = model_shape(base_model)
    teacher = model_shape(teacher_model) if teacher_model is not None else None
    device = device or device_memory()
    bf16 = precision_for(spec.precision, device.device) == "bf16"
    kw: dict[str, Any] = dict(processes=processes, bf16=bf16, teacher=teacher)
    estimate = estimate_memory(shape, spec, **kw)
    if needed(estimate, processes, device) <= device.free:
        return estimate
    seen = lengths() if lengths is not None else None
    if seen:
        kw["lengths"] = seen
        estimate = estimate_memory(shape, spec, **kw)
        if needed(estimate, processes, device) <= device.free:
            return estimate
    where = f"{device.name}'s GPU" if device.device == "cuda" else "this machine"
    each = f" x {processes} processes" if device.shared and processes > 1 else " per process"
    advice = " or ".join(_fixes(shape, spec, processes, device, kw)[:2])
    raise DoesNotFit(
        f"training {shape.name} ({shape.parameters / 1e6:,.0f}M parameters, {spec.method}) "
        f"needs about {estimate.describe()}{each}, but {where} has {gib(device.free)} free: "
        f"{advice}"
    )


def _fixes(
    shape: ModelShape, spec: TrainSpec, processes: int, device: DeviceMemory, kw: dict[str, Any]
) -> list[str]:
    """What would make the training fit, the least disruptive first: a smaller micro-batch
    (the same model is trained), a lighter method, then shorter rows."""

    def fits(**changes: Any) -> bool:
        changed = spec.model_copy(update=changes)
        return needed(estimate_memory(shape, changed, **kw), processes, device) <= device.free

    fixes = []
    rows = micro_rows(spec, processes)
    if rows > 1 and fits(micro_batch_size=1):
        size = _largest(1, rows - 1, lambda n: fits(micro_batch_size=n))
        fixes.append(f"set train.micro_batch_size: {size}")
    if spec.method == "full" and fits(method="lora"):
        fixes.append("use train.method: lora")
    if spec.method != "qlora" and device.device == "cuda" and fits(method="qlora"):
        fixes.append("use train.method: qlora")
    if not fixes and spec.max_length > 1 and fits(micro_batch_size=1, max_length=1):
        length = _largest(1, spec.max_length - 1,
                          lambda n: fits(micro_batch_size=1, max_length=n))  # fmt: skip
        fixes.append(f"set train.micro_batch_size: 1 and train.max_length: {length}")
    if not fixes:
        fixes.append(
            "the weights, gradients and optimizer state alone do not fit: use a smaller "
            "student, shard them across more GPUs (train.sharding: fsdp or zero3), or a "
            "machine with more memory"
        )
    return fixes


def _largest(low: int, high: int, ok: Callable[[int], bool]) -> int:
    """The largest n in [low, high] with ok(n), given ok(low) and ok monotone (true up to
    some n, false after)."""
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if ok(mid) else (low, mid - 1)
    return low


def flops_per_token(shape: ModelShape, method: str) -> float:
    """Model FLOPs a training token costs: 6 P for full fine-tuning (forward, and backward
    to activations and weights), 4 P with adapters (no weight gradients for the frozen
    base); attention's own FLOPs are left out (docs/benchmarks.md)."""
    return (6.0 if method == "full" else 4.0) * shape.parameters


def matmul_rate(device_type: str, bf16: bool = False) -> float:
    """This machine's matmul rate in FLOP/s: the best of a few square products (fp32 on
    CPU, bf16 on a GPU when asked), a fraction of a second."""
    import time

    import torch

    n = 1024
    dtype = torch.bfloat16 if bf16 and device_type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device_type, dtype=dtype)
    b = torch.randn(n, n, device=device_type, dtype=dtype)
    best = math.inf
    for _ in range(4):
        if device_type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device_type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best
