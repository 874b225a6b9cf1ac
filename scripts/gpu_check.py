"""The GPU check: train the task's student with each method on a GPU, bench it, and print
tokens/s, MFU and peak memory beside the held-out accuracy.

Why a script and not a test: CI has no GPU, and a GPU is lent here only now and then, for
minutes. This script is what to run when one is: `scripts/gpu_check.sh` sets it up, and
`--dry-run` runs the same code paths on the CPU with a few rows (in `make test`), so the
script is known to work before the minutes are spent.

It works on an existing run folder whose teacher answers are exported (`still run` or
`still capture` + `still export` made it, on any machine): training and benching need only
the student, so a GPU box without the teacher's weights can still check the student's side.

MFU is model FLOPs (6 x parameters x tokens for full fine-tuning; 4 x for LoRA, which skips
the weight gradients of the frozen base) over the dense matmul peak measured in this
process on this device (bf16 on CUDA, fp32 on CPU), so it says how much of what the chip
really does the training loop gets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any


def matmul_peak(device: str, dtype_name: str) -> float:
    """Dense matmul FLOP/s measured here: the mean of timed products after warm-ups."""
    import torch

    dtype = getattr(torch, dtype_name)
    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    reps = 10
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start)


def parameters(model_dir: Path) -> int:
    """Parameter count of a saved model, from its safetensors headers (no weights read)."""
    from safetensors import safe_open

    total = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                shape = st.get_slice(key).get_shape()
                count = 1
                for d in shape:
                    count *= d
                total += count
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task", type=Path, help="the task file (e.g. examples/trec/task.yaml)")
    ap.add_argument("--run-dir", type=Path, help="run folder with exported teacher answers")
    ap.add_argument("--methods", default="lora,full", help="comma-separated train methods")
    ap.add_argument("--dry-run", action="store_true", help="CPU, a few rows: check the paths")
    ap.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = ap.parse_args(argv)

    import torch

    from still.pipeline import bench_stage, open_run, train_stage

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("no CUDA device: run with --dry-run to check the paths on the CPU", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"
    peak_dtype = "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"
    peak = matmul_peak(device, peak_dtype)
    print(f"device: {name}; torch {torch.__version__}; matmul peak {peak / 1e12:.1f} "
          f"TFLOP/s ({peak_dtype})")  # fmt: skip

    source = open_run(args.task, args.run_dir)
    if not source.train_file("parsed").exists():
        print(f"{source.train_file('parsed')} is missing: run `still run {args.task}` (or "
              "capture + export) first", file=sys.stderr)  # fmt: skip
        return 2
    # Work on a copy of the run folder, without its trained models: retraining in place
    # would replace the user's student, and the store would then serve the old student's
    # answers for the new one at the same path. The copy's models have new paths.
    work = source.dir.with_name(source.dir.name + ".gpu-check")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source.dir, work, ignore=shutil.ignore_patterns("distilled-*", "curve", "gguf"))
    run = open_run(args.task, work)
    train_file = run.train_file("parsed")
    limit = None
    if args.dry_run:  # the same paths on a few rows: 8 training rows, 8 held-out questions
        rows = train_file.read_text(encoding="utf-8").splitlines()[:8]
        train_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
        limit = 8

    results: list[dict[str, Any]] = []
    base_train = run.task.train
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        # each method as the task's recipe says, not the tuner's choice (train.from_tune)
        update: dict[str, Any] = {"method": method, "from_tune": False}
        if args.dry_run:
            update["epochs"] = 1
        run.task = run.task.model_copy(update={"train": base_train.model_copy(update=update)})
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        info = train_stage(run, force=True)
        wall = time.perf_counter() - start
        mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        out = Path(info["out_dir"])
        n_params = parameters(out)
        factor = 6 if method == "full" else 4
        tok_s = float(info.get("tokens_per_s") or 0.0)
        mfu = factor * n_params * tok_s / peak
        cmp = bench_stage(run, roles=("distilled",), limit=limit, show=False)
        res = cmp.by_role("distilled")
        acc = (
            f"{100 * res.accuracy:.1f}% [{100 * res.ci_low:.1f}, {100 * res.ci_high:.1f}]"
            if res
            else "-"
        )
        row = {
            "method": method,
            "precision": info.get("precision", "fp32"),
            "examples": info.get("examples"),
            "steps": info.get("steps"),
            "train_s": round(float(info.get("seconds") or 0.0), 1),
            "wall_s": round(wall, 1),
            "tokens_per_s": round(tok_s, 1),
            "mfu_pct": round(100 * mfu, 2),
            "peak_mem_gib": round(mem, 2),
            "heldout_accuracy": acc,
            "params": n_params,
        }
        results.append(row)
        print(json.dumps(row))
    print()
    head = ["method", "precision", "steps", "train_s", "tokens_per_s", "mfu_pct",
            "peak_mem_gib", "heldout_accuracy"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in results:
        print("| " + " | ".join(str(r[h]) for h in head) + " |")
    if args.out:
        args.out.write_text(json.dumps({"device": name, "peak_flops": peak, "rows": results}))
    print(f"\nmodels and reports of this check: {work}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
