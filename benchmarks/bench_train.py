"""Training throughput of each recipe against this machine's matrix-multiply peak.

    .venv/bin/python benchmarks/bench_train.py [RUN_DIR] [STEPS] [--full-only]
        [--pack-length N] [--student MODEL]

Measures, in one process:

1. the fp32 matmul peak: the best of several square GEMMs (torch.mm, all cores), in
   GFLOP/s: the baseline every number below is a fraction of;
2. a few optimizer steps of each recipe on the bundled student (SmolLM2-135M, LoRA r=16 as
   in the demo) on the demo's exported training data: SFT on train.jsonl and KD on
   train-soft.jsonl, from RUN_DIR (default runs/trec/curve/n400, written by
   `still curve examples/trec/task.yaml`); then full fine-tuning by SFT twice, padded and
   with sequence packing (train.packing: the batch's examples end to end in rows of
   --pack-length tokens, default max_length 256), on the same rows.

`--full-only` runs only the padded and packed full fine-tunes; `--student` trains another
model (a `local:` reference or a model folder: a tiny one checks the script quickly).

Prints tokens/s and model FLOPs utilisation (MFU): training FLOPs per token are
estimated as 6 x parameters for full fine-tuning and 4 x parameters for LoRA (the frozen
weights need no weight gradients; adapter FLOPs are negligible), attention's own FLOPs
ignored (sequences are short). Tokens are real ones, padding left out, so padding costs
MFU; `padding` is the share of the positions computed that were padding (SFT reports it).
KD's tokens are prompt tokens plus label tokens.
"""

from __future__ import annotations

import argparse
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", type=Path, default=Path("runs/trec/curve/n400"))
    parser.add_argument("steps", nargs="?", type=int, default=12)
    parser.add_argument("--full-only", action="store_true",
                        help="only full fine-tuning by SFT, padded and packed")  # fmt: skip
    parser.add_argument("--pack-length", type=int, default=None,
                        help="tokens per packed row (default: max_length)")  # fmt: skip
    parser.add_argument("--student", default=STUDENT, help="a local: reference or folder")
    args = parser.parse_args()
    run, steps = args.run, args.steps
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak = matmul_peak()
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s\n")
    base = local_path(args.student)
    from transformers import AutoConfig, AutoModelForCausalLM

    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(base).parameters())
    tied = AutoConfig.from_pretrained(base).tie_word_embeddings
    print(f"student: {params / 1e6:.1f} M parameters (embeddings tied: {tied})\n")
    print(
        "| recipe | method | packed | steps | examples/step | tokens/s | padding | GFLOP/s | MFU |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    jobs = [
        ("sft", "lora", False, train_sft, run / "train.jsonl"),
        ("kd (labels)", "lora", False, train_kd, run / "train-soft.jsonl"),
        ("sft", "full", False, train_sft, run / "train.jsonl"),
        ("sft", "full", True, train_sft, run / "train.jsonl"),
    ]
    if args.full_only:
        jobs = [j for j in jobs if j[0] == "sft" and j[1] == "full"]
    for name, method, packing, trainer, data in jobs:
        if not data.exists():
            packed = "yes" if packing else "no"
            print(f"| {name} | {method} | {packed} | skipped: no {data} | | | | | |")
            continue
        rows = sum(1 for line in data.read_text().splitlines() if line.strip())
        spec = TrainSpec(method=method, batch_size=8, epochs=steps * 8 / rows, lora_r=16,
                         recipe="kd" if trainer is train_kd else "sft", packing=packing,
                         pack_length=args.pack_length)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            result = trainer(base, data, Path(tmp) / "m", spec)
        per_token = (4 if method == "lora" else 6) * params
        flops = per_token * result.tokens_per_s
        padding = "" if result.padded_share is None else f"{result.padded_share:.1%}"
        print(f"| {name} | {method} | {'yes' if packing else 'no'} | {result.steps} | 8 | "
              f"{result.tokens_per_s:.0f} | {padding} | {flops / 1e9:.1f} | "
              f"{flops / peak:.1%} |")  # fmt: skip


if __name__ == "__main__":
    main()
