"""Training throughput of each recipe against this machine's matrix-multiply peak.

    .venv/bin/python benchmarks/bench_train.py [RUN_DIR] [STEPS]

Measures, in one process:

1. the fp32 matmul peak: the best of several square GEMMs (torch.mm, all cores), in
   GFLOP/s: the baseline every number below is a fraction of;
2. a few optimizer steps of each recipe on the bundled student (SmolLM2-135M, LoRA r=16 as
   in the demo) on the demo's exported training data: SFT on train.jsonl and KD on
   train-soft.jsonl, from RUN_DIR (default runs/trec/curve/n400, written by
   `still curve examples/trec/task.yaml`).

Prints tokens/s and model FLOPs utilisation (MFU): training FLOPs per token are
estimated as 6 x parameters for full fine-tuning and 4 x parameters for LoRA (the frozen
weights need no weight gradients; adapter FLOPs are negligible), attention's own FLOPs
ignored (sequences are short). KD's tokens are prompt tokens plus label tokens.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from still.models import local_path
from still.tasks import TrainSpec
from still.train import train_kd, train_sft

STUDENT = "local:smollm2-135m-instruct"


def matmul_peak(sizes: tuple[int, ...] = (512, 1024, 2048), seconds: float = 2.0) -> float:
    """Best fp32 GEMM rate over `sizes`, in FLOP/s (2 n^3 a product)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            reps += 1
        rate = 2 * n**3 * reps / (time.perf_counter() - start)
        print(f"  matmul {n}x{n}: {rate / 1e9:.1f} GFLOP/s")
        best = max(best, rate)
    return best


def main() -> None:
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/trec/curve/n400")
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak = matmul_peak()
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s\n")
    base = local_path(STUDENT)
    from transformers import AutoConfig, AutoModelForCausalLM

    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(base).parameters())
    tied = AutoConfig.from_pretrained(base).tie_word_embeddings
    print(f"student: {params / 1e6:.1f} M parameters (embeddings tied: {tied})\n")
    print("| recipe | method | steps | examples/step | tokens/s | GFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|")
    jobs = [
        ("sft", "lora", train_sft, run / "train.jsonl"),
        ("kd (labels)", "lora", train_kd, run / "train-soft.jsonl"),
        ("sft", "full", train_sft, run / "train.jsonl"),
    ]
    for name, method, trainer, data in jobs:
        if not data.exists():
            print(f"| {name} | {method} | skipped: no {data} | | | | |")
            continue
        rows = sum(1 for line in data.read_text().splitlines() if line.strip())
        spec = TrainSpec(method=method, batch_size=8, epochs=steps * 8 / rows, lora_r=16,
                         recipe="kd" if trainer is train_kd else "sft")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            result = trainer(base, data, Path(tmp) / "m", spec)
        per_token = (4 if method == "lora" else 6) * params
        flops = per_token * result.tokens_per_s
        print(f"| {name} | {method} | {result.steps} | 8 | {result.tokens_per_s:.0f} | "
              f"{flops / 1e9:.1f} | {flops / peak:.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()
