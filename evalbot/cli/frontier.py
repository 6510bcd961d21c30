"""``evalbot frontier queue``: the merge queue, the open PRs' verified wins against the live frontier."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from evalbot import ranking
from evalbot.config import load_config
from evalbot.errors import EvalbotError

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                  help="The frontier: the merge queue of open PRs' verified wins.")


@app.command("queue")
def queue_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="validator TOML config")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Rank the open PRs that hold a verified win against the live frontier (as of the poller's last
    discovery): label, headroom score, weakest speedup; heads being re-measured below; needs-rebase slots."""
    cfg = load_config(config)
    try:
        when, frontier, ranked = ranking.read(cfg.data_dir)
    except FileNotFoundError:
        raise EvalbotError(f"no merge queue in {cfg.data_dir}: `evalbot watch` writes it at every poll") from None
    except ValueError as exc:
        raise EvalbotError(str(exc)) from None
    if as_json:
        typer.echo(json.dumps({"generated_at": when, "frontier": frontier, "queue": [asdict(c) for c in ranked]},
                              indent=1))
        return
    console = Console()
    table = Table(title=f"merge queue against frontier {(frontier or 'none')[:12]} (as of {when})")
    for col in ("#", "PR", "author", "label", "score", "weakest speedup", "measured against", "needs rebase"):
        table.add_column(col)
    for i, c in enumerate(ranked, start=1):
        table.add_row(str(i) if c.current else "-", f"#{c.pr}", Text(c.author), c.label,
                      f"{c.score:.1%}" if c.score is not None else "-",
                      f"{c.speedup:.4f}" if c.speedup is not None else "-",
                      (c.measured_against or "none")[:12] + ("" if c.current else " (re-evaluating)"),
                      Text(", ".join(c.needs_rebase) or "-"))
    if not ranked:
        table.add_row("-", "none yet", "", "", "", "", "", "")
    console.print(table)
