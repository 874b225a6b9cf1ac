"""benchmarks/bench_variants.py: variants of a task run in one folder (teacher and base
student asked once), compared on the same held-out examples with paired intervals."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from test_helpers import write_task

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "bench_variants", ROOT / "benchmarks" / "bench_variants.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bv = _bench()


def test_two_variants_share_the_teacher_and_are_paired_on_the_same_examples(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("STILL_SCRIPTED_LOG", str(calls))  # the scripted teacher's calls
    write_task(tmp_path, student=f"local:{tiny_model}", n=30,
               split={"seed": 1, "heldout": 8, "validation": 4},
               curate={"students": ["parsed"]})  # fmt: skip
    (tmp_path / "one.yaml").write_text(yaml.safe_dump({"extends": "task.yaml"}))
    (tmp_path / "two.yaml").write_text(
        yaml.safe_dump({"extends": "task.yaml", "train": {"epochs": 2}})
    )
    run_dir = tmp_path / "run"
    argv = [str(tmp_path / "one.yaml"), str(tmp_path / "two.yaml"), "--run-dir", str(run_dir)]
    result = bv.main(argv)

    asked = calls.read_text().splitlines()
    assert len(asked) == len(set(asked)), "the second variant asked the teacher again"
    names = [m["name"] for m in result["models"]]
    assert names == ["teacher", "student", "one", "two"] and result["examples"] == 8
    one, two = result["models"][2:]
    assert one["train"]["steps"] * 2 == two["train"]["steps"]  # each its own student
    assert set(one["against"]) == {"student"} and set(two["against"]) == {"student", "one"}
    # the paired numbers are the per-example rows' own
    rows = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    student = {r["example_id"]: r["correct"] for r in rows if r["role"] == "student"}
    mine = {r["example_id"]: r["correct"] for r in rows if r["role"] == "distilled"}
    diff = (sum(mine.values()) - sum(student.values())) / len(mine)
    assert two["against"]["student"]["pass_diff"] == pytest.approx(diff)
    assert two["pass_rate"] == pytest.approx(sum(mine.values()) / len(mine))
    text = (run_dir / "variants.md").read_text()
    assert "2 variants on 8 held-out examples" in text and "| two | sft, lora |" in text
    assert json.loads((run_dir / "variants.json").read_text())["examples"] == 8

    # a rerun asks nothing and trains nothing
    trained = Path(two["model"].split(":", 1)[1]) / "train.json"
    mtime = trained.stat().st_mtime
    bv.main(argv)
    assert calls.read_text().splitlines() == asked
    assert trained.stat().st_mtime == mtime
