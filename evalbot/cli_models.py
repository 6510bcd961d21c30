"""``evalbot models``: build, list and verify the basket models."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="The basket models: build, list, verify.")
