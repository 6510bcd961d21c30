"""Fleet throughput: jobs per minute against worker count, and enqueue-to-start latency.

Real PostgreSQL, real procrastinate, real ``evalbot worker`` processes; the evaluator is a stand-in
that sleeps a fixed time (0.5 s) and returns a verdict, so what is measured is the fleet itself:
claiming, the job's bookkeeping, storing the verdict. No GitHub (the poller's publishing is not in
these figures).

For each worker count: the workers are started and left to register, then

* **throughput**: ``--jobs`` jobs are enqueued at once (as the poller defers them) and the wall time
  from the first enqueue to the last verdict stored gives jobs per minute;
* **latency**: with the workers idle, ``--probes`` jobs are enqueued one at a time; the time from
  enqueue (the row and its procrastinate job written) to the claim by a worker, median and p95.

    python3 benchmarks/fleet_throughput.py --url postgresql://postgres@127.0.0.1:55432/postgres

The URL is an administrative one: a scratch database is created and dropped for the run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fleet_procs import start_workers, stop_workers  # noqa: E402

from evalbot.pipeline import Job, ModelResult, Verdict  # noqa: E402
from evalbot.queue.dispatch import Dispatcher  # noqa: E402
from evalbot.queue.fleet import FleetStore, JobKey, JobState  # noqa: E402

GPU_CLASS = "bench"


class SleepEvaluator:
    """Sleeps ``EVALBOT_BENCH_EVAL_S`` seconds per job: a fixed evaluation time."""

    def __init__(self) -> None:
        self.seconds = float(os.environ.get("EVALBOT_BENCH_EVAL_S", "0.5"))

    def startup_problems(self) -> list[str]:
        return []

    def evaluate(self, job: Job, cancel: threading.Event) -> Verdict:
        cancel.wait(self.seconds)
        return Verdict(label="none", reasons=("benchmark",), markdown="benchmark\n", gpu="none", policy_hash="bench",
                       models=(ModelResult("bench", True, 1.0, 1.0, 1.0, (1.0, 1.0)),))


def create(config: object) -> SleepEvaluator:
    return SleepEvaluator()


def _fields(sha: str) -> dict[str, object]:
    return {"repo": "bench/kernels", "sha": sha, "clone_url": "file:///nowhere", "fetch_ref": "refs/heads/main",
            "author": "bench", "base_ref": "main", "base_sha": sha, "pr_number": None}


def _enqueue(store: FleetStore, dispatcher: Dispatcher, run: str, i: int) -> str:
    sha = f"{uuid.uuid5(uuid.NAMESPACE_OID, f'{run}-{i}').hex}{i:08x}"[:40]
    job, _ = store.submit(JobKey("bench/kernels", sha, None, "bench", "bench", GPU_CLASS), f"bench/{i}",
                          _fields(sha), 0)
    dispatcher.defer(job)
    return job.key


def _wait_done(store: FleetStore, keys: list[str], timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = store.jobs(keys)
        if all(j.state == JobState.DONE for j in jobs.values()) and len(jobs) == len(keys):
            return jobs
        if time.monotonic() > deadline:
            states = {s: sum(1 for j in jobs.values() if j.state == s) for s in JobState}
            raise SystemExit(f"timed out: {states}")
        time.sleep(0.05)


def _workers(n: int, config: Path, logdir: Path, url: str) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), str(REPO)])}
    engine = create_engine(FleetStore(url).engine.url)
    try:
        procs = start_workers(n, config, logdir, "fleet_throughput:create", engine, tag=str(n), env=env,
                              timeout_s=120)
    finally:
        engine.dispose()
    time.sleep(1.0)  # each worker's listener and first fetch in place
    return procs


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("EVALBOT_TEST_POSTGRES_URL", ""),
                        help="administrative PostgreSQL URL (a scratch database is created)")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--jobs", type=int, default=0, help="jobs per throughput run (default: 30 per worker)")
    parser.add_argument("--probes", type=int, default=12)
    parser.add_argument("--eval-s", type=float, default=0.5)
    args = parser.parse_args()
    if not args.url:
        raise SystemExit("--url (or EVALBOT_TEST_POSTGRES_URL) is needed")
    os.environ["EVALBOT_BENCH_EVAL_S"] = str(args.eval_s)
    admin = create_engine(args.url, isolation_level="AUTOCOMMIT")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.workers.split(",")]:
            name = f"evalbot_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = make_url(args.url).set(database=name).render_as_string(hide_password=False)
            config = Path(tmp) / f"bench{n}.toml"
            config.write_text(f'[fleet]\nurl = "{url}"\n[ledger]\ngpu_class = "{GPU_CLASS}"\n'
                              f'[paths]\ndata_dir = "{tmp}/data"\ncache_dir = "{tmp}/cache"\n')
            store = FleetStore(url)
            store.setup()
            procs = _workers(n, config, Path(tmp), url)
            try:
                with Dispatcher(store) as dispatcher:
                    jobs = args.jobs or 30 * n
                    t0 = time.monotonic()
                    keys = [_enqueue(store, dispatcher, f"t{n}", i) for i in range(jobs)]
                    _wait_done(store, keys, timeout=60 + 3 * jobs * args.eval_s)
                    wall = time.monotonic() - t0
                    latencies = []
                    for i in range(args.probes):
                        key = _enqueue(store, dispatcher, f"p{n}", i)
                        job = _wait_done(store, [key], timeout=60)[key]
                        latencies.append((job.started_at - job.created_at).total_seconds())  # type: ignore[attr-defined]
                        time.sleep(0.2)
            finally:
                stop_workers(procs)
                store.dispose()
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            rows.append((n, jobs, wall, 60 * jobs / wall, 60 * n / args.eval_s, statistics.median(latencies),
                         _pct(latencies, 0.95)))
    admin.dispose()
    print(f"fleet throughput: fake evaluator sleeping {args.eval_s:g} s per job, PostgreSQL + procrastinate, "
          f"{os.cpu_count()} CPU cores")
    print("| workers | jobs | wall s | jobs/min | ideal jobs/min | enqueue→start median | p95 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, jobs, wall, rate, ideal, med, p95 in rows:
        print(f"| {n} | {jobs} | {wall:.1f} | {rate:.0f} | {ideal:.0f} | {1000 * med:.0f} ms | {1000 * p95:.0f} ms |")


if __name__ == "__main__":
    main()
