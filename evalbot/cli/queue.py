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
        _embedded(cfg.ledger_url, cfg.ledger.gpu_class or "-", all_jobs, as_json)
        return
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


def _embedded(ledger_url: str, gpu_class: str, all_jobs: bool, as_json: bool) -> None:
    """Without a fleet: the embedded queue (the ledger's ``watch_queue`` table), run by the one
    in-process worker of ``evalbot watch``, base-branch commits first, then in order queued."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from evalbot.queue.store import QueueRow, State
    from ledger.engine import make_engine, sqlite_path

    path = sqlite_path(ledger_url)
    if path is not None and not path.exists():
        rows: list[QueueRow] = []
    else:
        engine = make_engine(ledger_url, read_only=True)
        try:
            with Session(engine) as session:
                query = select(QueueRow).order_by(QueueRow.id)
                if not all_jobs:
                    query = query.where(QueueRow.state.in_([State.QUEUED, State.RUNNING]))
                rows = list(session.scalars(query).all())
        finally:
            engine.dispose()
    waiting = sorted((r for r in rows if r.state == State.QUEUED), key=lambda r: (not r.target.startswith("branch/"),
                                                                                 r.id))
    position = {r.id: i + 1 for i, r in enumerate(waiting)}
    now = datetime.now(UTC)
    if as_json:
        typer.echo(json.dumps([
            {"state": r.state, "gpu_class": gpu_class, "commit": r.sha, "targets": [r.target],
             "position": position.get(r.id), "waiting": len(waiting),
             "worker": "evalbot watch (in-process)" if r.state == State.RUNNING else None, "gpu": None,
             "attempts": r.attempts, "created_at": r.created_at.isoformat(),
             "started_at": r.started_at.isoformat() if r.started_at else None,
             "label": json.loads(r.verdict).get("label") if r.verdict else None}
            for r in rows], indent=2))
        return
    table = Table(title=f"embedded queue ({len(rows)}), run by evalbot watch", title_justify="left")
    for column in ("state", "pos", "GPU class", "commit", "for", "worker", "GPU", "age"):
        table.add_column(column, no_wrap=column != "for")
    for r in rows:
        pos = f"{position[r.id]}/{len(waiting)}" if r.id in position else "-"
        worker = "in-process" if r.state == State.RUNNING else "-"
        table.add_row(r.state, pos, gpu_class, r.sha[:12], r.target, worker, "-", _age(r.created_at, now))
    Console().print(table)
