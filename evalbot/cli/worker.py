"""``evalbot worker``: evaluate the fleet's jobs, one process per GPU (see docs/poller.md, "Fleet")."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from evalbot.cli.watch import _logging
from evalbot.config import Config, load_config
from evalbot.errors import EvalbotError
from evalbot.pipeline import DEFAULT_EVALUATOR, load_evaluator
from evalbot.watch_checks import check_startup

log = logging.getLogger("evalbot.worker")
# A worker process that dies is started again after this long (its job went back to the queue).
RESTART_DELAY_S = 5.0


def _gpus(spec: str) -> list[str]:
    gpus = [g.strip() for g in spec.split(",") if g.strip()]
    if not gpus or any(not g.isdigit() for g in gpus) or len(set(gpus)) != len(gpus):
        raise EvalbotError(f"--gpus {spec!r}: expected distinct GPU indices, e.g. 0,1,2,3")
    return gpus


def _gpu_count() -> int | None:
    """CUDA devices on this box; None when CuPy cannot tell (the startup check names why)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return None


def _check(cfg: Config, evaluator: object, gpus: list[str]) -> None:
    if not cfg.fleet.url:
        raise EvalbotError(f"{cfg.source}: [fleet] url is not set: `evalbot worker` serves the fleet's PostgreSQL "
                           "queue (without a fleet, `evalbot watch` evaluates in-process)")
    check_startup(cfg, evaluator)
    if not callable(getattr(evaluator, "startup_problems", None)):
        count = _gpu_count()
        missing = [g for g in gpus if count is not None and int(g) >= count]
        if missing:
            raise EvalbotError(f"cannot start: --gpus names GPU {', '.join(missing)}, but this box has "
                               f"{count} CUDA device(s)")


def _supervise(argv: list[str], gpus: list[str], restart: bool = True) -> int:
    """One child ``evalbot worker --gpus N`` per GPU, started again when it dies (``restart``; without
    it, as with ``--drain``, a child that exits is done); SIGTERM stops them all."""
    stopping = False
    children: dict[str, subprocess.Popen[bytes]] = {}

    def start(gpu: str) -> None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        children[gpu] = subprocess.Popen([sys.executable, "-m", "evalbot", "worker", *argv, "--gpus", gpu], env=env)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for gpu in gpus:
        start(gpu)
    died: dict[str, float] = {}
    while True:
        for gpu, child in list(children.items()):
            code = child.poll()
            if code is None or stopping or not restart:
                continue
            if gpu not in died:
                log.error("worker on GPU %s exited (%d); starting it again in %.0f s", gpu, code, RESTART_DELAY_S)
                died[gpu] = time.monotonic() + RESTART_DELAY_S
            elif time.monotonic() >= died.pop(gpu):
                start(gpu)
        if (stopping or not restart) and all(c.poll() is not None for c in children.values()):
            return max((c.returncode or 0) for c in children.values())
        time.sleep(0.2)


def worker(
    gpus: Annotated[str, typer.Option("--gpus", help="GPU indices to serve, one worker process each (0,1,…)")] = "0",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="validator TOML config")] = None,
    gpu_class: Annotated[str | None, typer.Option(
        "--gpu-class", help="the queue served (default: [ledger] gpu_class)")] = None,
    evaluator: Annotated[str, typer.Option(help="the evaluator, as module:factory")] = DEFAULT_EVALUATOR,
    drain: Annotated[bool, typer.Option(help="exit once the queue is empty instead of waiting for jobs")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Evaluate the fleet's queued jobs on this box's GPUs: one worker process per GPU."""
    from evalbot.queue.fleet import FleetStore
    from evalbot.queue.worker import WorkerSettings, serve
    from evalbot.watch import secrets_of

    cfg = load_config(config)
    _logging(verbose)
    indices = _gpus(gpus)
    if gpu_class:
        cfg = dataclasses.replace(cfg, ledger=dataclasses.replace(cfg.ledger, gpu_class=gpu_class))
    if not cfg.ledger.gpu_class:
        raise EvalbotError(f"{cfg.source}: [ledger] gpu_class is not set (the queue this box serves, e.g. "
                           "\"H100-SXM\"; or --gpu-class)")
    if len(indices) > 1:
        the_evaluator = load_evaluator(evaluator, cfg)
        _check(cfg, the_evaluator, indices)
        argv = ["--evaluator", evaluator, "--gpu-class", cfg.ledger.gpu_class]
        argv += ["--config", str(config)] if config else []
        argv += ["--drain"] if drain else []
        argv += ["--verbose"] if verbose else []
        raise typer.Exit(_supervise(argv, indices, restart=not drain))
    # One GPU: this process is the worker, pinned before anything touches CUDA.
    os.environ["CUDA_VISIBLE_DEVICES"] = indices[0]
    the_evaluator = load_evaluator(evaluator, cfg)
    try:
        _check(cfg, the_evaluator, [])
    except EvalbotError as exc:
        raise EvalbotError(f"{exc} (GPU {indices[0]}: CUDA_VISIBLE_DEVICES={indices[0]})") from None
    from sqlalchemy.exc import SQLAlchemyError

    store = FleetStore(cfg.fleet.url)
    try:
        try:
            store.setup()
        except SQLAlchemyError as exc:
            lines = str(exc).strip().splitlines()
            raise EvalbotError(f"{cfg.source}: [fleet] url: cannot use the fleet's database: "
                               f"{lines[0] if lines else type(exc).__name__}") from None
        settings = WorkerSettings(
            gpu_class=cfg.ledger.gpu_class, gpu=indices[0], max_attempts=cfg.github.max_attempts,
            heartbeat_s=cfg.fleet.heartbeat_s, stalled_after_s=cfg.fleet.stalled_after_s,
            check_interval_s=cfg.fleet.check_interval_s, secrets=secrets_of(cfg, ""),
        )
        serve(settings, store, the_evaluator, once=drain)
    finally:
        store.dispose()
