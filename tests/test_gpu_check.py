"""scripts/gpu_check.py, the check run whenever a GPU is lent, works before the GPU minutes
are spent: its dry run trains every method and benches each student on the CPU, through
the same stages the GPU run uses, and prints its table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from still.pipeline import capture_role, export_stage, open_run
from test_helpers import write_task

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_trains_and_benches_each_method(tmp_path: Path, tiny_model: Path) -> None:
    task = write_task(tmp_path, student=f"local:{tiny_model}")
    run = open_run(task, tmp_path / "run")
    capture_role(run, "teacher", "train")
    export_stage(run, "parsed")
    out = tmp_path / "gpu.json"
    exported = run.train_file("parsed").read_bytes()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), str(task),
         "--run-dir", str(run.dir), "--dry-run", "--out", str(out)],
        capture_output=True, text=True, env=os.environ.copy(), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["lora", "full"]
    for r in rows:
        assert r["steps"] >= 1 and r["tokens_per_s"] > 0 and r["mfu_pct"] > 0
        assert r["heldout_accuracy"].endswith("]")  # benched: "x% [lo, hi]"
    assert "| method | precision |" in proc.stdout
    # it trained on a copy: the user's run folder keeps its data and has no new model
    assert run.train_file("parsed").read_bytes() == exported
    assert not list(run.dir.glob("distilled-*"))
    assert list(run.dir.with_name(run.dir.name + ".gpu-check").glob("distilled-*"))


def test_gpu_check_refuses_without_cuda_unless_dry_run(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:echo")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), str(task)],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--dry-run" in proc.stderr
