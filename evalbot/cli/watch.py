"""``evalbot watch``: the validator daemon (see docs/poller.md)."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from evalbot.config import Config, load_config
from evalbot.errors import EvalbotError
from evalbot.github.client import GithubClient
from evalbot.github.publisher import Publisher
from evalbot.github.token import read_token
from evalbot.pipeline import DEFAULT_EVALUATOR, load_evaluator
from evalbot.queue.store import JobQueue
from evalbot.watch import Watcher, WatchSettings, secrets_of
from evalbot.watch_checks import check_startup
from evalbot.watch_lock import instance_lock


def _logging(verbose: bool) -> None:
    handler: logging.Handler
    if sys.stderr.isatty():
        handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%Y-%m-%d %H:%M:%S]"))
    else:
        # A daemon's log (journald, a file): one unwrapped line per event.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    # PyGithub prints through a handler of its own; everything goes through ours instead.
    logging.getLogger("github").handlers.clear()
    if not verbose:
        # Retries and migrations announce themselves; our own lines say what failed and what happens next.
        for name in ("urllib3", "github", "alembic", "procrastinate"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _settings(cfg: Config) -> WatchSettings:
    g = cfg.github
    if not g.repo:
        raise EvalbotError(f"{cfg.source}: [github] repo is not set (owner/name of the kernels repository)")
    return WatchSettings(
        repo=g.repo, base_branch=g.base_branch, include_drafts=g.include_drafts,
        include_forks=g.include_forks, max_attempts=g.max_attempts, poll_interval_s=g.poll_interval_s,
        retry_backoff_s=g.retry_backoff_s, data_dir=cfg.data_dir,
    )


def watch(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="validator TOML config")] = None,
    once: Annotated[bool, typer.Option(help="run a single poll (evaluating what it finds), then exit")] = False,
    dry_run: Annotated[bool, typer.Option(
        help="evaluate but publish nothing: no GitHub writes, no ledger rows, a throw-away queue")] = False,
    evaluator: Annotated[str, typer.Option(help="the evaluator, as module:factory")] = DEFAULT_EVALUATOR,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Poll GitHub for new PR heads and base-branch commits, evaluate each once, comment, label, record."""
    from evalbot.ledger_recorder import open_recorder

    cfg = load_config(config)
    settings = _settings(cfg)
    _logging(verbose)
    token = read_token(cfg.github)
    # Never shown on a PR or written to the ledger, even inside an evaluator's error message.
    settings = dataclasses.replace(settings, secrets=secrets_of(cfg, token))
    client = GithubClient(cfg.github, token)
    if cfg.fleet.url and not dry_run:
        # The fleet: this process enqueues and publishes; `evalbot worker` processes evaluate. (A dry
        # run evaluates in-process with a throw-away queue, fleet or not: nothing reaches the workers.)
        the_evaluator = None
    else:
        the_evaluator = load_evaluator(evaluator, cfg)
        check_startup(cfg, the_evaluator)

    lock = None if dry_run else instance_lock(cfg.ledger_url, cfg.data_dir)
    if lock is not None:
        lock.acquire()
    fleet_watcher = None
    try:
        watcher: Watcher
        if the_evaluator is None:
            from evalbot.watch_fleet import open_fleet_watcher

            watcher = fleet_watcher = open_fleet_watcher(cfg, settings, client, dry_run=dry_run)
        else:
            recorder, engine = open_recorder(cfg, read_only=dry_run)
            queue = JobQueue.in_memory() if dry_run else JobQueue(engine)
            publisher = None if dry_run else Publisher(client, cfg.github.status_context)
            watcher = Watcher(settings, client, queue, the_evaluator, recorder, publisher)

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            logging.getLogger("evalbot.watch").warning(
                "%s: finishing the current step, abandoning any running evaluation",
                signal.Signals(signum).name,
            )
            watcher.request_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        logging.getLogger("evalbot.watch").info(
            "watching %s (%s) every %g s%s%s", settings.repo, settings.base_branch, settings.poll_interval_s,
            " — fleet mode: jobs go to `evalbot worker` processes" if fleet_watcher is not None else "",
            " — dry run: nothing is published" if dry_run else "",
        )
        ok = watcher.run(once=once)
    finally:
        if fleet_watcher is not None:
            fleet_watcher.close()
        if lock is not None:
            lock.release()
    raise typer.Exit(0 if ok or not once else 1)
