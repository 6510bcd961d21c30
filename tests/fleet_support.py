"""The fleet's test world: a real PostgreSQL database, real procrastinate workers (``evalbot worker``
processes), the GitHub stand-in and the watch tests' validator config (tests/watch_support.py).

Two evaluators stand in for the harness, both without a GPU:

* ``fake_evaluator:create`` (the watch tests' one): fetches the commit, reads its ``EVAL`` file
  (scripted label, ``gate=`` to hold the evaluation until the test opens it);
* ``fleet_support:create_quick``: fetches nothing, sleeps ``EVALBOT_FAKE_EVAL_S`` and labels the
  commit by its SHA (:func:`quick_label`), for the many-job tests and the throughput benchmark.

Both append ``start <sha> <pid>`` (the quick one adds ``CUDA_VISIBLE_DEVICES``) and
``done <sha> <label>`` lines to ``<dir>/evaluations.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from evalbot.pipeline import Cancelled, Job, ModelResult, Verdict

TESTS = Path(__file__).resolve().parent
LABELS = ("XL", "L", "M", "S", "XS", "none")


def quick_label(sha: str) -> str:
    return LABELS[int(sha[:8], 16) % len(LABELS)]


class QuickEvaluator:
    def __init__(self, workdir: Path, seconds: float) -> None:
        self.log = workdir / "evaluations.log"
        self.seconds = seconds

    def startup_problems(self) -> list[str]:
        return [m for m in os.environ.get("EVALBOT_FAKE_MISSING", "").split(";") if m]

    def _note(self, line: str) -> None:
        with self.log.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def evaluate(self, job: Job, cancel: threading.Event) -> Verdict:
        self._note(f"start {job.sha} {os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}")
        if cancel.wait(self.seconds):
            self._note(f"cancelled {job.sha}")
            raise Cancelled(job.sha)
        label = quick_label(job.sha)
        self._note(f"done {job.sha} {label}")
        return Verdict(label=label, reasons=(f"quick {label}",), markdown=f"**{label}** (quick evaluator)\n",
                       gpu="Fake GPU", policy_hash="fake-policy-1",
                       document={"commit": job.sha, "baseline": job.baseline_sha, "label": label},
                       models=(ModelResult("qwen3moe-tiny", True, 101.0, 100.0, 1.01, (1.0, 1.02)),))


def create_quick(config: object) -> QuickEvaluator:
    return QuickEvaluator(Path(os.environ["EVALBOT_FAKE_EVAL_DIR"]), float(os.environ.get("EVALBOT_FAKE_EVAL_S", "0")))


def add_fleet(config_path: Path, url: str, gpu_classes: list[str] | None = None, **fleet: object) -> None:
    """Append a ``[fleet]`` section (fast heartbeats and checks, for tests) to a validator config."""
    settings: dict[str, object] = {"url": url, "heartbeat_s": 0.3, "stalled_after_s": 1.5, "check_interval_s": 0.2,
                                   "position_refresh_s": 3600.0, **fleet}
    lines = ["[fleet]"]
    for key, value in settings.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value!r}")
    if gpu_classes:
        lines.append("gpu_classes = [" + ", ".join(f'"{c}"' for c in gpu_classes) + "]")
    with config_path.open("a") as f:
        f.write("\n".join(lines) + "\n")


def _env(evaldir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVALBOT_", "GITHUB_"))}
    return env | {"PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)]),
                  "EVALBOT_FAKE_EVAL_DIR": str(evaldir), **extra}


class Proc:
    """An evalbot process, its output in a file."""

    def __init__(self, root: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.out = root / f"{name}.out"
        self.proc = subprocess.Popen([sys.executable, "-c", "from evalbot.cli import main; main()", *args], env=env,
                                     stdout=self.out.open("a"), stderr=subprocess.STDOUT, cwd=root)

    def output(self) -> str:
        return self.out.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def term(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def worker(root: Path, config: Path, evaldir: Path, gpu_class: str, name: str,
           evaluator: str = "fake_evaluator:create", *extra: str, **env: str) -> Proc:
    return Proc(root, name, ["worker", "--config", str(config), "--gpus", "0", "--gpu-class", gpu_class,
                             "--evaluator", evaluator, *extra], _env(evaldir, **env))


def poller(root: Path, config: Path, evaldir: Path, name: str, *extra: str) -> Proc:
    return Proc(root, name, ["watch", "--config", str(config), *extra], _env(evaldir))


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 30.0,
               procs: tuple[Proc, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for p in procs:
            if p.proc.poll() is not None:
                pytest.fail(f"{p.out.name} exited ({p.proc.returncode}) waiting for {what}:\n{p.output()[-4000:]}")
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.out.name}\n{p.output()[-3000:]}" for p in procs)
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.05)


def log_lines(evaldir: Path) -> list[list[str]]:
    log = evaldir / "evaluations.log"
    return [line.split() for line in log.read_text().splitlines() if line.strip()] if log.exists() else []


def procrastinate_jobs(store: object) -> list[dict[str, object]]:
    with store.engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(text("SELECT id, queue_name, status, queueing_lock, attempts FROM procrastinate_jobs "
                                 "ORDER BY id")).mappings().all()
        return [dict(r) for r in rows]


def fleet_url(tmp_path: Path) -> Iterator[str]:
    """A new PostgreSQL database for one test (dropped afterwards)."""
    from test_ledger_support import backend_url

    yield from backend_url("postgres", tmp_path)
