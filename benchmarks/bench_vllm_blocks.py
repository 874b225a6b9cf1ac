"""Label scoring on `vllm:` by KV block size: questions/s of the TREC teacher's 12-shot prompt.

    .venv-vllm/bin/python benchmarks/bench_vllm_blocks.py [QUESTIONS] [BLOCK_SIZE ...]

vLLM shares prefix cache in whole KV blocks, so each label token's scoring request
recomputes the prompt past its last full block: the block size sets how much. This scores
the demo teacher's validation questions (`examples/trec/vllm.yaml`, Gemma 3 270M in
float32) once per block size, each with a fresh engine whose first two questions warm it up
(not timed), and prints questions/s and the largest label-score difference from the first
block size's (the scores must not depend on it). Defaults: 16 questions, blocks 128 and 32.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from still.models import get_model, shutdown_engine, use_engine_options
from still.pipeline import open_run

TASK = Path(__file__).resolve().parent.parent / "examples" / "trec" / "vllm.yaml"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    sizes = [int(a) for a in sys.argv[2:]] or [128, 32]
    with tempfile.TemporaryDirectory() as tmp:
        run = open_run(TASK, Path(tmp) / "run")
        reqs = list(run.requests("teacher", "validation").values())[: n + 2]
        print("| KV block size | questions | seconds | questions/s | max abs diff (nats) |")
        print("|---|---|---|---|---|")
        first: list[dict[str, float]] | None = None
        for size in sizes:
            use_engine_options({**run.task.vllm.engine_args(), "block_size": size})
            model = get_model(run.task.models.teacher)
            model.complete(reqs[:2])  # starts the engine, caches the few-shot prefix
            start = time.perf_counter()
            outs = model.complete(reqs[2:])
            seconds = time.perf_counter() - start
            scores = [o.label_logprobs or {} for o in outs]
            first = first or scores
            diff = max(abs(a[k] - b[k]) for a, b in zip(scores, first, strict=True) for k in a)
            print(
                f"| {size} | {len(outs)} | {seconds:.1f} | {len(outs) / seconds:.2f} | {diff:.1e} |"
            )
            shutdown_engine()


if __name__ == "__main__":
    main()
