"""Environment settings: where `still` keeps its state, `.env` loading, and the secrets
the environment holds (`scrub` keeps them out of anything stored, logged or shown).

All state (converted models, stores of ad-hoc commands) lives under `STILL_HOME`, so a
test isolates everything by pointing that one variable at a temporary folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

SECRET_NAMES = ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "STILL_API_KEY")
"""Variables scrubbed whatever their names look like."""

_SECRET_NAME = re.compile(r"(_KEY|_TOKEN|_SECRET|_PASSWORD|_PASSWD)$|API_KEY", re.IGNORECASE)

MIN_SECRET_LEN = 8
"""Shorter values are not scrubbed: replacing "1" or "true" everywhere would garble the
text and hide nothing."""


def still_home() -> Path:
    """The state folder: `$STILL_HOME`, else `~/.cache/still`. Created on first use."""
    home = Path(os.environ.get("STILL_HOME") or Path.home() / ".cache" / "still")
    home.mkdir(parents=True, exist_ok=True)
    return home


def runs_root() -> Path:
    """Where run folders may live: `$STILL_RUNS`, else `./runs`. A task's name and a
    `--run-dir` are confined to it, so neither can place files anywhere else."""
    return Path(os.environ.get("STILL_RUNS") or "runs")


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


def scrub(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with the value of every secret-looking environment variable replaced by ***.

    Secret-looking: OPENAI_API_KEY, AZURE_OPENAI_API_KEY, STILL_API_KEY, and any name
    ending in _KEY, _TOKEN, _SECRET or _PASSWORD (or containing API_KEY), whose value has
    at least `MIN_SECRET_LEN` characters.

    Args:
        text: an error message about to be stored or shown.
        environ: where to look for secrets (default: this process's environment).
    """
    env = os.environ if environ is None else environ
    secrets = {
        value
        for name, value in env.items()
        if (name in SECRET_NAMES or _SECRET_NAME.search(name)) and len(value) >= MIN_SECRET_LEN
    }
    for secret in sorted(secrets, key=len, reverse=True):  # a key containing another first
        text = text.replace(secret, "***")
    return text
