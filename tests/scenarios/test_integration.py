"""`still run` on the bundled models and the real TREC data, on a small slice.

Converts the bundled GGUF models on first use (about two minutes, cached across test runs
in .pytest_cache/still-home), then runs the whole loop for real: teacher capture, export,
LoRA training, four-way benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from still.pipeline import run_all

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # the bundled models, end to end: minutes


@pytest.fixture
def bundled_home(monkeypatch: pytest.MonkeyPatch) -> Path:
    home = ROOT / ".pytest_cache" / "still-home"
    monkeypatch.setenv("STILL_HOME", str(home))
    return home


def test_still_run_on_bundled_models(tmp_path: Path, bundled_home: Path) -> None:
    task = yaml.safe_load((ROOT / "examples" / "trec" / "task.yaml").read_text())
    task["split"].update(heldout=24, train=32)
    task["prompts"]["teacher"]["fewshot"] = 6
    task["train"].update(epochs=1)
    task["tune"].update(epochs=[1])  # the demo tunes its recipe first (train.from_tune)
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump(task))
    run, cmp = run_all(path, tmp_path / "run")

    roles = ["teacher", "student", "distilled", "distilled-verified", "control"]
    assert [r.role for r in cmp.results] == roles
    for r in cmp.results:
        assert r.n == 24 and r.errors == 0 and r.unparseable == 0, r
        assert r.ci_low <= r.accuracy <= r.ci_high
    split = json.loads((run.dir / "split.json").read_text())
    assert not set(split["heldout"]) & (
        set(split["train"]) | set(split["fewshot"]) | set(split["validation"])
    )
    info = json.loads((run.distilled_dir() / "train.json").read_text())
    assert info["steps"] >= 1 and info["losses"]
    # the students were trained with the tuner's choice, made on validation alone
    tune = json.loads((run.dir / "tune" / "tune.json").read_text())
    assert {p["recipe"] for p in tune["points"] if p["accuracy"] is not None} == {"sft", "kd"}
    assert info["recipe"].startswith(tune["best"]["recipe"])  # kd: kd-<divergence>
    assert "heldout" not in tune["store_reads"]  # the test split was not read to choose

    rows = run.store.count()
    _, again = run_all(path, tmp_path / "run")
    assert run.store.count() == rows, "the second run made model calls already stored"
    assert [r.accuracy for r in again.results] == [r.accuracy for r in cmp.results]
