#!/bin/sh
# The GPU check (issue 14): on a machine with a CUDA GPU, train the task's student with
# LoRA and full fine-tuning (bf16 where the GPU has it), bench each on the held-out split,
# and print tokens/s, MFU against the matmul peak measured there, and peak memory.
#
#   scripts/gpu_check.sh [TASK] [RUN_DIR]      (default: the TREC demo and runs/trec)
#
# It needs a run folder with the teacher's answers exported (`make demo` made runs/trec);
# on a box with internet it installs the CUDA torch first. `--dry-run` (set DRY_RUN=1)
# runs the same paths on the CPU with a few rows: `make test` checks that. QLoRA too, on a
# GPU with bitsandbytes: METHODS=lora,full,qlora.
set -eu
TASK=${1:-examples/trec/task.yaml}
RUN_DIR=${2:-runs/trec}
PY=${PYTHON:-python3}
if [ -n "${INSTALL:-}" ]; then  # a fresh GPU box with internet: the CUDA build of torch
  $PY -m pip install -q torch "transformers>=5" peft accelerate bitsandbytes -e .
fi
set -- "$TASK" --run-dir "$RUN_DIR" --methods "${METHODS:-lora,full}"
[ -n "${DRY_RUN:-}" ] && set -- "$@" --dry-run
[ -n "${OUT_JSON:-}" ] && set -- "$@" --out "$OUT_JSON"
exec $PY "$(dirname "$0")/gpu_check.py" "$@"
