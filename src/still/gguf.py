"""Export a distilled student to GGUF (llama.cpp, Ollama, LM Studio) and check it.

`still export-gguf TASK` writes, in `<run>/gguf/`:

- `model-f16.gguf` with llama.cpp's own converter (`convert_hf_to_gguf.py`, which ships in
  the llama-cpp-python source distribution; `make setup` unpacks it into
  `.venv/share/llama.cpp`), and `model-q8_0.gguf` the same way;
- `model-q4_k_m.gguf` with llama.cpp's `llama-quantize` from the f16 file, when that tool
  is built (`make gguf-tools` compiles it from the same source distribution);
- `Modelfile` for `ollama create <name> -f Modelfile`: the file to run, the chat template
  (ChatML for ChatML models), the student's system prompt, greedy decoding and stops;
- `gguf.json`: each file's size and its agreement with the merged model: every exported
  file is read back (transformers dequantizes GGUF), asked the held-out questions, and its
  answers compared with the merged model's.

Nothing is downloaded here: the tools come from `make setup` or the paths named by
`STILL_LLAMA_CPP` (the folder holding convert_hf_to_gguf.py) and `STILL_LLAMA_QUANTIZE`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from still.errors import StillError

QUANTS = ("f16", "q8_0", "q4_k_m")
"""What can be asked for: the converter writes f16 and q8_0, llama-quantize q4_k_m."""

CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""


class ToolMissing(StillError, RuntimeError):
    """A llama.cpp tool is not installed; the message says how to get it."""


def _share() -> Path:
    return Path(sys.prefix) / "share" / "llama.cpp"


def converter() -> Path:
    """The folder holding llama.cpp's convert_hf_to_gguf.py (and its gguf-py package).

    Raises:
        ToolMissing: neither STILL_LLAMA_CPP nor the setup's copy has it.
    """
    for folder in (os.environ.get("STILL_LLAMA_CPP"), str(_share())):
        if folder and (Path(folder) / "convert_hf_to_gguf.py").is_file():
            return Path(folder)
    raise ToolMissing(
        "llama.cpp's convert_hf_to_gguf.py is not installed: run `make setup` (it unpacks the "
        "converter from the llama-cpp-python source distribution into .venv/share/llama.cpp) "
        "or point STILL_LLAMA_CPP at a llama.cpp checkout"
    )


def quantizer() -> Path | None:
    """llama.cpp's llama-quantize, if built (`make gguf-tools`) or on PATH."""
    for candidate in (
        os.environ.get("STILL_LLAMA_QUANTIZE"),
        str(_share() / "bin" / "llama-quantize"),
        shutil.which("llama-quantize"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def convert(model_dir: Path, out: Path, outtype: str) -> Path:
    """Run the converter on a transformers model folder; `outtype` f16 or q8_0.

    Raises:
        ToolMissing: no converter.
        RuntimeError: the converter failed (its last lines of output in the message).
    """
    tools = converter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tools / "gguf-py"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(tools / "convert_hf_to_gguf.py"), str(model_dir),
         "--outtype", outtype, "--outfile", str(out)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"convert_hf_to_gguf.py failed on {model_dir}:\n{tail}")
    return out


def quantize(f16: Path, out: Path, kind: str = "Q4_K_M") -> Path:
    """llama-quantize an f16 GGUF file.

    Raises:
        ToolMissing: llama-quantize is not built.
        RuntimeError: it failed.
    """
    tool = quantizer()
    if tool is None:
        raise ToolMissing(
            f"{kind} needs llama.cpp's llama-quantize: run `make gguf-tools` (builds it from "
            "the llama-cpp-python source distribution, a few minutes) or set "
            "STILL_LLAMA_QUANTIZE; f16 and q8_0 need no build"
        )
    proc = subprocess.run([str(tool), str(f16), str(out), kind], capture_output=True,
                          text=True, check=False)  # fmt: skip
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"llama-quantize failed on {f16}:\n{tail}")
    return out


def load_gguf(path: Path, target: Path) -> Path:
    """Read a GGUF file back into a transformers folder (dequantized to float32), the
    way the bundled models are loaded: what an exported file really holds."""
    from still.models import dequantize_gguf

    target.parent.mkdir(parents=True, exist_ok=True)
    dequantize_gguf(path, target)
    return target


def modelfile(gguf_name: str, chat_template: str | None, system: str | None,
              stops: list[str]) -> str:  # fmt: skip
    """An Ollama Modelfile for the exported file: ChatML template when the model uses
    ChatML (else the template the GGUF file carries), the system prompt the student was
    trained with, greedy decoding (as benchmarked) and its stop strings."""
    lines = [f"FROM ./{gguf_name}"]
    if chat_template and "<|im_start|>" in chat_template:
        lines += ["", f'TEMPLATE """{CHATML_TEMPLATE}"""']
        stops = [*stops, "<|im_end|>"]
    if system:
        lines += ["", 'SYSTEM """' + system.replace('"""', "'''") + '"""']
    lines += ["", "PARAMETER temperature 0"]
    lines += [f'PARAMETER stop "{s}"' for s in dict.fromkeys(stops) if s and '"' not in s]
    return "\n".join(lines) + "\n"
