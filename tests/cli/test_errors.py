"""The CLI's one error boundary and its logging: a user error is one line, a bug is a
traceback, and libraries do not print a line per HTTP request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import still.pipeline
from still.cli import main
from still.errors import ModelError, StillError
from still.pipeline import StageError
from test_helpers import write_task

COMMANDS = {
    "bench", "capture", "check-grader", "curve", "estimate", "export", "export-dpo",
    "export-gguf", "grade", "models", "monitor", "proxy", "report", "run", "select", "serve",
    "store", "synthesize", "train", "tune",
}  # fmt: skip


def _failing(exc: BaseException) -> object:
    def stage(*args: object, **kwargs: object) -> None:
        raise exc

    return stage


def test_a_still_error_from_a_stage_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = write_task(tmp_path, student="scripted:first-label")
    monkeypatch.setattr(still.pipeline, "grade_stage", _failing(StageError("run `x` first")))
    res = CliRunner().invoke(main, ["grade", str(task), "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert res.output.splitlines()[-1] == "Error: run `x` first"
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)


def test_verbose_shows_a_still_errors_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = write_task(tmp_path, student="scripted:first-label")
    monkeypatch.setattr(still.pipeline, "grade_stage", _failing(StageError("run `x` first")))
    res = CliRunner().invoke(main, ["-v", "grade", str(task), "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 1 and isinstance(res.exception, StageError)


def test_a_bug_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = write_task(tmp_path, student="scripted:first-label")
    monkeypatch.setattr(still.pipeline, "grade_stage", _failing(KeyError("steps")))
    res = CliRunner().invoke(main, ["grade", str(task), "--run-dir", str(tmp_path / "r")])
    assert isinstance(res.exception, KeyError), res.output  # not swallowed into a message
    assert "Error:" not in res.output
    with pytest.raises(KeyError, match="steps"):
        CliRunner().invoke(
            main, ["grade", str(task), "--run-dir", str(tmp_path / "r")], catch_exceptions=False
        )


def test_a_value_error_is_a_bug_and_keeps_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # user errors are StillErrors; a ValueError from deep inside (numpy, a parser) is a bug
    task = write_task(tmp_path, student="scripted:first-label")
    monkeypatch.setattr(still.pipeline, "grade_stage", _failing(ValueError("math domain error")))
    res = CliRunner().invoke(main, ["grade", str(task), "--run-dir", str(tmp_path / "r")])
    assert isinstance(res.exception, ValueError) and not isinstance(res.exception, StillError)
    assert "Error:" not in res.output


def test_a_missing_api_key_is_a_still_error_shown_as_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")  # set but empty: a .env cannot fill it in
    task = write_task(tmp_path, student="scripted:first-label", teacher="openai:gpt-4o-mini")
    args = ["capture", str(task), "--run-dir", str(tmp_path / "r"), "--role", "teacher"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert res.output.splitlines()[-1] == (
        "Error: openai:gpt-4o-mini: set OPENAI_API_KEY (in the environment or a .env file)"
    )
    res = CliRunner().invoke(main, ["-v", *args])
    assert isinstance(res.exception, ModelError)


def test_a_bad_data_row_is_a_still_error_shown_as_one_line(tmp_path: Path) -> None:
    task = write_task(tmp_path, student="scripted:first-label")
    data = tmp_path / "data.jsonl"
    data.write_text(data.read_text() + "{not json\n")
    res = CliRunner().invoke(main, ["-v", "grade", str(task), "--run-dir", str(tmp_path / "r")])
    assert isinstance(res.exception, StillError)  # -v: the exception itself, with traceback
    res = CliRunner().invoke(main, ["grade", str(task), "--run-dir", str(tmp_path / "r")])
    assert res.exit_code == 1 and "Error: " in res.output and "data.jsonl:41" in res.output


def test_help_lists_every_command() -> None:
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    assert set(main.commands) == COMMANDS
    listed = {line.split()[0] for line in res.output.split("Commands:")[1].splitlines() if line}
    assert listed == COMMANDS


_LOG_TWO_LINES = """
import logging, sys
from still.cli import main
main(sys.argv[1:] + ["models"], standalone_mode=False)
logging.getLogger("httpx2").info('HTTP Request: POST http://127.0.0.1/v1 "200 OK"')
logging.getLogger("still.capture").info("teacher on train: 4 requests")
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_libraries_log_http_requests_only_with_verbose(verbose: bool) -> None:
    args = ["-v"] if verbose else []
    out = subprocess.run(
        [sys.executable, "-c", _LOG_TWO_LINES, *args], capture_output=True, text=True, check=True
    )
    assert "teacher on train: 4 requests" in out.stderr  # still's own progress: always
    assert ("HTTP Request" in out.stderr) == verbose
