"""Training throughput of each recipe against this machine's matrix-multiply peak.

    .venv/bin/python benchmarks/bench_train.py [RUN_DIR] [STEPS] [--full-only]
        [--pack-length N] [--batch-size N] [--max-length N] [--student MODEL]

Measures, in one process:

1. the fp32 matmul peak: the best of several square GEMMs (torch.mm, all cores), in
   GFLOP/s: the baseline every number below is a fraction of. It varies by some 10% from
   one measurement to the next on this machine, so it is measured again after the
   trainings, and the MFU column divides by the higher of the two (the conservative
   ratio; the table prints both);
2. a few optimizer steps of each recipe on the bundled student (SmolLM2-135M, LoRA r=16 as
   in the demo) on the demo's exported training data: SFT on train.jsonl and KD on
   train-soft.jsonl, from RUN_DIR (default runs/trec/curve/n400, written by
   `still curve examples/trec/task.yaml`); then full fine-tuning by SFT twice, padded and
   with sequence packing (train.packing: the batch's examples end to end in rows of
   --pack-length tokens, default max_length 256), on the same rows.

`--full-only` runs only the padded and packed full fine-tunes; `--batch-size` sets the
examples per optimizer step (default 8, the demo's: a larger batch spreads the step's fixed
cost, the optimizer's pass over every weight, over more tokens); `--student` trains another
model (a `local:` reference or a model folder: a tiny one checks the script quickly).
`--max-length` (default 256, train.max_length's) bounds a row: the memory check reckons a
batch's rows at that length, so a large batch may need it lowered to the data's longest
row (the demo's rows are under 100 tokens).

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
    parser.add_argument("--batch-size", type=int, default=8,
                        help="examples per optimizer step (default 8, the demo's)")  # fmt: skip
    parser.add_argument("--max-length", type=int, default=256,
                        help="train.max_length (default 256)")  # fmt: skip
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
    header = (
        "| recipe | method | packed | steps | examples/step | tokens/s | padding | GFLOP/s | MFU |"
        "\n|---|---|---|---|---|---|---|---|---|"
    )
    print(header)
    rows_out: list[str] = []
    flops_out: list[float] = []
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
        batch = args.batch_size
        spec = TrainSpec(method=method, batch_size=batch, epochs=steps * batch / rows, lora_r=16,
                         recipe="kd" if trainer is train_kd else "sft", packing=packing,
                         pack_length=args.pack_length, max_length=args.max_length)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            result = trainer(base, data, Path(tmp) / "m", spec)
        per_token = (4 if method == "lora" else 6) * params
        flops = per_token * result.tokens_per_s
        padding = "" if result.padded_share is None else f"{result.padded_share:.1%}"
        rows_out.append(f"| {name} | {method} | {'yes' if packing else 'no'} | {result.steps} | "
                        f"{batch} | {result.tokens_per_s:.0f} | {padding} | "
                        f"{flops / 1e9:.1f} |")  # fmt: skip
        flops_out.append(flops)
        print(rows_out[-1] + f" {flops / peak:.1%} (of the first peak) |", flush=True)
    print("\nthe peak again, after the trainings:")
    after = matmul_peak()
    best = max(peak, after)
    print(
        f"fp32 matmul peak: {peak / 1e9:.1f} before, {after / 1e9:.1f} after: MFU of "
        f"{best / 1e9:.1f} GFLOP/s\n"
    )
    print(header)
    for row, flops in zip(rows_out, flops_out, strict=True):
        print(f"{row} {flops / best:.1%} |")


if __name__ == "__main__":
    main()
