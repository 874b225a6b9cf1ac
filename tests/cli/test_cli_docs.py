"""docs/cli.md is generated from --help and must not drift from it."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from cli_docs import render  # noqa: E402


def test_cli_reference_is_up_to_date() -> None:
    assert (ROOT / "docs" / "cli.md").read_text().strip() == render().strip(), (
        "docs/cli.md is stale: run `make docs`"
    )
