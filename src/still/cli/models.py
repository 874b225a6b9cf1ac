"""`still models`: what can answer requests here."""

from __future__ import annotations

import click


@click.command("models")
def models_cmd() -> None:
    """List bundled models (installed? converted?) and the reference schemes.

    Bundled models are converted from GGUF to safetensors under $STILL_HOME/models on
    first use (20-70 s once); any Hugging Face model directory works too: `local:/path`.
    """
    from rich.table import Table

    from still.models import BUNDLED, is_installed, schemes
    from still.report import console as make_console
    from still.settings import models_dir

    table = Table(title="bundled models")
    for col in ("reference", "description", "installed", "converted"):
        table.add_column(col)
    for name, m in BUNDLED.items():
        converted = (models_dir() / name / "config.json").is_file()
        table.add_row(
            f"local:{name}",
            m.description,
            "yes" if is_installed(m) else m.install,
            "yes" if converted else "on first use",
        )
    console = make_console()
    console.print(table)
    for scheme, text in schemes().items():
        console.print(f"[bold]{scheme}:[/bold]…  {text}")
