"""``evalbot queue``: the fleet's jobs, as the validator's operator sees them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from evalbot.config import load_config
from evalbot.errors import EvalbotError


def _age(since: datetime, now: datetime) -> str:
    seconds = max(int((now - since).total_seconds()), 0)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def queue(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="validator TOML config")] = None,
    all_jobs: Annotated[bool, typer.Option("--all", help="finished jobs too (done, failed, cancelled)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Show the fleet's jobs: state, queue position, worker, GPU, age."""
    from evalbot.queue.fleet import FleetStore

    cfg = load_config(config)
    if not cfg.fleet.url:
        raise EvalbotError(f"{cfg.source}: [fleet] url is not set: without a fleet, `evalbot watch` evaluates "
                           "in-process and its queue is the watch_queue table of the ledger (docs/poller.md)")
    store = FleetStore(cfg.fleet.url)
    try:
        store.setup()
        listed = store.listing(include_finished=all_jobs)
    finally:
        store.dispose()
    now = datetime.now(UTC)
    if as_json:
        typer.echo(json.dumps([
            {"key": item.job.key, "state": item.job.state.value, "gpu_class": item.job.gpu_class,
             "commit": item.job.sha, "frontier": item.job.frontier, "targets": list(item.targets),
             "position": item.position, "waiting": item.waiting, "worker": item.job.worker, "gpu": item.job.gpu,
             "attempts": item.job.attempts, "created_at": item.job.created_at.isoformat(),
             "started_at": item.job.started_at.isoformat() if item.job.started_at else None,
             "label": (item.job.verdict or {}).get("label")}
            for item in listed], indent=2))
        return
    table = Table(title=f"fleet jobs ({len(listed)})", title_justify="left")
    for column in ("state", "pos", "GPU class", "commit", "for", "worker", "GPU", "age"):
        table.add_column(column, no_wrap=column != "for")
    for item in listed:
        job = item.job
        position = f"{item.position}/{item.waiting}" if item.position is not None else "-"
        state = job.state.value + (" (cancelling)" if job.cancel_requested and job.state == "running" else "")
        if job.verdict:
            state += f" {job.verdict.get('label', '')}"
        table.add_row(state, position, job.gpu_class, job.sha[:12], ", ".join(item.targets) or "-",
                      job.worker or "-", job.gpu or "-", _age(job.created_at, now))
    Console().print(table)
