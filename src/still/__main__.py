"""`python -m still` runs the CLI."""

from still.cli import main

main()
