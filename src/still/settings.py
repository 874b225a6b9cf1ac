"""Environment settings: where `still` keeps its state, and `.env` loading.

All state (converted models, stores of ad-hoc commands) lives under `STILL_HOME`, so a
test isolates everything by pointing that one variable at a temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def still_home() -> Path:
    """The state folder: `$STILL_HOME`, else `~/.cache/still`. Created on first use."""
    home = Path(os.environ.get("STILL_HOME") or Path.home() / ".cache" / "still")
    home.mkdir(parents=True, exist_ok=True)
    return home


def models_dir() -> Path:
    """Where bundled GGUF models are converted to safetensors once and cached."""
    path = still_home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_dotenv(path: Path | str = ".env") -> None:
    """Load `KEY=VALUE` lines from a .env file into the environment, never overriding.

    Secrets stay in the environment; nothing here logs or stores their values.
    """
    p = Path(path)
    if not p.is_file():
        return
    for raw in p.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        os.environ.setdefault(key, value.strip().strip("'\""))
