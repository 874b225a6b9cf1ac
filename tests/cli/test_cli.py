"""CLI commands through click's runner: clean errors for bad input, working verbs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from still.cli import main
from test_helpers import write_task


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_help_lists_every_stage() -> None:
    code, out = _invoke("--help")
    assert code == 0
    for verb in ("capture", "grade", "export", "train", "bench", "run", "models", "store"):
        assert verb in out


def test_models_lists_the_bundled_models() -> None:
    code, out = _invoke("models")
    assert code == 0 and "local:smollm2-135m-instruct" in out and "local:gemma3-270m" in out


def test_capture_export_and_store_verbs(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label")
    run_dir = tmp_path / "run"
    code, out = _invoke("capture", str(task), "--run-dir", str(run_dir))
    assert code == 0 and "23 model calls" in out and "0 failed" in out
    code, out = _invoke("capture", str(task), "--run-dir", str(run_dir))
    assert code == 0 and "23 from the store, 0 model calls" in out
    code, out = _invoke("grade", str(task), "--run-dir", str(run_dir))
    assert code == 0 and "teacher on train: 23/23 correct, accuracy 100.0%" in out
    code, out = _invoke("grade", str(task), "--run-dir", str(run_dir), "--split", "heldout")
    assert code == 0 and "0/10 correct" in out and "10 failed or missing" in out
    code, out = _invoke("export", str(task), "--run-dir", str(run_dir))
    assert code == 0 and "kept 23 rows" in out
    db = str(run_dir / "still.db")
    code, out = _invoke("store", "ls", "--db", db, "--meta", "role=teacher")
    assert code == 0 and "23 completions match" in out
    cid = out.split("cmpl-")[1].split()[0]
    code, out = _invoke("store", "show", "--db", db, "cmpl-" + cid)
    assert code == 0 and json.loads(out)["metadata"]["role"] == "teacher"
    code, out = _invoke("store", "export", "--db", db, str(tmp_path / "all.jsonl"))
    assert code == 0 and len((tmp_path / "all.jsonl").read_text().splitlines()) == 23
    code, out = _invoke("store", "show", "--db", db, "cmpl-nope")
    assert code == 1 and "no completion" in out


def test_bench_on_scripted_models_writes_reports(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label")
    code, out = _invoke(
        "bench",
        str(task),
        "--run-dir",
        str(tmp_path / "r"),
        "--role",
        "teacher",
        "--role",
        "student",
    )
    assert code == 0, out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    acc = {r["role"]: r["accuracy"] for r in report["results"]}
    assert acc["teacher"] == 1.0
    # first-label always answers "human": right on exactly the human examples
    heldout = (tmp_path / "r" / "results.jsonl").read_text().splitlines()
    humans = sum(
        1 for x in map(json.loads, heldout) if x["role"] == "student" and x["reference"] == "human"
    )
    assert acc["student"] == humans / 10


def test_unknown_model_is_a_clean_error_listing_known_models(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label", teacher="gpt-nonsense")
    code, out = _invoke("capture", str(task), "--run-dir", str(tmp_path / "r"))
    assert code == 1 and "unknown model 'gpt-nonsense'" in out
    assert "local:smollm2-135m-instruct" in out and "Traceback" not in out


def test_malformed_data_row_names_file_and_line(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label")
    data = tmp_path / "data.jsonl"
    lines = data.read_text().splitlines()
    lines[6] = '{"text": "broken", "label": '
    data.write_text("\n".join(lines) + "\n")
    code, out = _invoke("capture", str(task), "--run-dir", str(tmp_path / "r"))
    assert code == 1 and f"{data}:7" in out


def test_missing_template_field_names_field_and_template(tmp_path: Path) -> None:
    task = write_task(
        tmp_path,
        student="scripted:first-label",
        prompts={"teacher": {"template": "{{ question }}"}, "student": {"template": "{{ text }}"}},
    )
    code, out = _invoke("capture", str(task), "--run-dir", str(tmp_path / "r"))
    assert code == 1 and "prompts.teacher.template" in out and "question" in out


def test_labels_outside_the_set_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    task = write_task(tmp_path, student="scripted:first-label")
    with (tmp_path / "data.jsonl").open("a") as f:
        f.write(json.dumps({"text": "odd one", "label": "animal"}) + "\n")
    code, out = _invoke("capture", str(task), "--run-dir", str(tmp_path / "r"))
    assert code == 0 and "1 with labels outside the set dropped ('animal'×1)" in out


def test_bad_task_file_names_the_field(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label", generation={"mode": "guess"})
    code, out = _invoke("capture", str(task), "--run-dir", str(tmp_path / "r"))
    assert code == 1 and "generation.mode" in out and str(task) in out


def test_the_cli_and_library_import_no_heavy_backend() -> None:
    import subprocess
    import sys

    code = (
        "import sys, still, still.cli; "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'openai', 'fastapi') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", "still --help must stay instant"
