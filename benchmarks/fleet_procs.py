"""`evalbot worker` processes for the fleet benchmarks: start N, wait until procrastinate lists them,
stop them with SIGTERM (their graceful shutdown: the job in hand finishes or goes back)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import Engine, text


def start_workers(n: int, config: Path, logs: Path, evaluator: str, engine: Engine, *, tag: str = "",
                  env: Mapping[str, str] | None = None, timeout_s: float = 180.0) -> list[subprocess.Popen[bytes]]:
    """``n`` workers on GPU 0 with ``config``, each logging to ``logs/worker-<tag>-<i>.log``; a worker
    that exits before registering, or a timeout, stops them all and shows the first one's log."""
    procs = []
    for i in range(n):
        out = (logs / f"worker-{tag}-{i}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "-m", "evalbot", "worker", "--config", str(config), "--gpus",
                                       "0", "--evaluator", evaluator], env=None if env is None else dict(env),
                                      stdout=out, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout_s
    with engine.connect() as conn:
        while conn.execute(text("SELECT count(*) FROM procrastinate_workers")).scalar_one() < n:
            dead = any(p.poll() is not None for p in procs)
            if dead or time.monotonic() > deadline:
                stop_workers(procs)
                tail = (logs / f"worker-{tag}-0.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"workers did not register ({'one exited' if dead else 'timed out'}); "
                                 f"the first one's log ends:\n{tail}")
            time.sleep(0.1)
            conn.rollback()
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]], wait_s: float = 120.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(wait_s)
