"""Fleet workers sharing one GPU, each running real evaluations: the GPU path of the fleet.

Real PostgreSQL, real procrastinate, real ``evalbot worker --gpus 0`` processes running evalbot's own
evaluator (fetch, build, gates, benchmark) on the example kernels repository's branches, each
against ``main`` as the frontier. Jobs are submitted to the fleet store and deferred to procrastinate
exactly as the poller does; GitHub is left out (publishing is not GPU work, and the poller's side of
the fleet is tested in CI against the GitHub stand-in).

Three rounds, each on a scratch database and with the same job set: a warm-up round on one worker
(fills the build and reference caches, so the rounds timed after it compare like with like), then
one worker, then ``--workers`` workers sharing the GPU. Each round prints every job's label, worker,
GPU and evaluation time, and the round's wall time.

    python3 benchmarks/fleet_gpu.py --basket DIR [--url ADMIN_URL | --pgserver DIR] [--workers 2]
        [--branches main,faster,wrong,broken] [--out FILE] [--evaluator module:factory]

``--pgserver DIR`` starts a PostgreSQL server from the ``pgserver`` wheel (for a box without one);
``--url`` is an administrative URL of a running server. ``--evaluator evalbot.demo:create_build_only``
runs the same plumbing on a box without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fleet_procs import start_workers, stop_workers  # noqa: E402

from evalbot.config import BASKET_SETS  # noqa: E402
from evalbot.queue.dispatch import Dispatcher  # noqa: E402
from evalbot.queue.fleet import FleetStore, JobKey, JobRow, JobState  # noqa: E402
from reference_runtime import basket  # noqa: E402

GPU_CLASS = "fleet-gpu-bench"
EXAMPLE = "example/kernels"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def quick_evaluator(config: Any) -> Any:
    """evalbot's own evaluator, its shipped policy's benchmark budget per (model, context) cut to
    $FLEET_GPU_BUDGET_S seconds (``--budget-s``): three rounds of real evaluations in one short call.
    Workers import it as ``fleet_gpu:quick_evaluator``."""
    from evalbot.evaluator import WatchEvaluator
    from evalbot.policy import parse_policy, policy_bytes

    data, source = policy_bytes(None, config.basket.set)
    text_ = data.decode()
    budget = float(os.environ["FLEET_GPU_BUDGET_S"])
    cut = "\n".join(f"budget_s = {budget}" if line.startswith("budget_s =") else line for line in text_.splitlines())
    return WatchEvaluator(config, parse_policy(cut.encode(), f"{Path(source).stem}-budget-{budget:g}s.toml"))


def _admin_url(args: argparse.Namespace) -> tuple[str, object | None]:
    if args.url:
        return args.url, None
    import pgserver  # the wheel bundles PostgreSQL's binaries; as root it runs them as its own user

    args.pgserver.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(args.pgserver / "pgdata", cleanup_mode="stop")
    return server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1), server


def _round(name: str, n: int, admin: str, work: Path, shas: dict[str, str], args: argparse.Namespace,
           ) -> dict[str, Any]:
    database = f"evalbot_fleet_gpu_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    url = make_url(admin).set(database=database).render_as_string(hide_password=False)
    config = work / f"{name}.toml"
    config.write_text(
        f'[fleet]\nurl = "{url}"\n[ledger]\ngpu_class = "{GPU_CLASS}"\n'
        # The example repository is evalbot's own code: building it unsandboxed is safe here.
        '[build]\nbackend = "local"\nallow_unsandboxed = true\n'
        f'[basket]\nset = "{args.set}"\ncorrectness = {json.dumps(_entries(args.correctness))}\n'
        f'[paths]\ndata_dir = "{work / "data"}"\ncache_dir = "{work / "cache"}"\n')
    store = FleetStore(url)
    store.setup()
    procs = start_workers(n, config, work, args.evaluator, store.engine, tag=config.stem)
    try:
        with Dispatcher(store) as dispatcher:
            t0 = time.monotonic()
            keys = {}
            for branch in args.branches.split(","):
                fields = {"repo": EXAMPLE, "sha": shas[branch], "clone_url": (work / "kernels").as_uri(),
                          "fetch_ref": f"refs/heads/{branch}", "author": "contributor", "base_ref": "main",
                          "base_sha": shas["main"], "pr_number": None}
                # A/A (main against itself) is a distinct job from main's own frontier run: the key
                # differs in its policy field, as a policy change would make it.
                key = JobKey(EXAMPLE, shas[branch], shas["main"], f"bench-{branch}", args.set, GPU_CLASS)
                job, _ = store.submit(key, f"bench/{branch}", fields, 0)
                dispatcher.defer(job)
                keys[branch] = job.key
            deadline = time.monotonic() + args.timeout
            while True:
                jobs = store.jobs(list(keys.values()))
                if all(j.state in (JobState.DONE, JobState.FAILED) for j in jobs.values()):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name}: timed out: {[(b, jobs[k].state) for b, k in keys.items()]}")
                time.sleep(0.2)
            wall = time.monotonic() - t0
    finally:
        stop_workers(procs)
        store.dispose()
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        engine.dispose()
    return {"round": name, "workers": n, "wall_s": wall,
            "jobs": [_job(branch, jobs[key]) for branch, key in keys.items()]}


def _entries(spec: str) -> list[str]:
    return [e.strip() for e in spec.split(",") if e.strip()]


def _job(branch: str, row: JobRow) -> dict[str, Any]:
    seconds = (row.finished_at - row.started_at).total_seconds() if row.finished_at and row.started_at else None
    queued = (row.started_at - row.created_at).total_seconds() if row.started_at else None
    verdict = row.verdict or {}
    return {"branch": branch, "state": row.state.value, "label": verdict.get("label"),
            "reason": (verdict.get("reasons") or [row.error or ""])[0], "worker": row.worker, "gpu": row.gpu,
            "attempts": row.attempts, "queued_s": queued, "evaluation_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--basket", required=True, type=Path, help="directory holding the basket set's GGUF files")
    parser.add_argument("--set", default="tiny", choices=sorted(BASKET_SETS))
    parser.add_argument("--url", default=os.environ.get("EVALBOT_TEST_POSTGRES_URL", ""),
                        help="administrative PostgreSQL URL (scratch databases are created and dropped)")
    parser.add_argument("--pgserver", type=Path, default=None, help="start PostgreSQL from the pgserver wheel here")
    parser.add_argument("--workers", type=int, default=2, help="workers sharing the GPU in the last round")
    parser.add_argument("--branches", default="main,faster,wrong,broken")
    parser.add_argument("--evaluator", default="evalbot.evaluator:create")
    parser.add_argument("--correctness", default="gemma3-270m",
                        help="[basket] correctness, comma-separated (empty: none; a box without the package)")
    parser.add_argument("--budget-s", type=float, default=0.0,
                        help="benchmark budget per (model, context) instead of the policy's (0: the policy's)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a round may take")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not args.url and args.pgserver is None:
        raise SystemExit("--url (or EVALBOT_TEST_POSTGRES_URL) or --pgserver DIR is needed")

    work = Path(tempfile.mkdtemp(prefix="evalbot-fleet-gpu-"))
    (work / "data" / "models").mkdir(parents=True)
    for key in BASKET_SETS[args.set]:
        os.symlink(basket.model_path(args.basket.resolve(), key), basket.model_path(work / "data" / "models", key))
    for var in [v for v in os.environ if v.startswith("EVALBOT_")]:
        del os.environ[var]  # the workers read only the round's config
    if args.budget_s > 0:
        os.environ["FLEET_GPU_BUDGET_S"] = str(args.budget_s)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), str(REPO),
                                                                  os.environ.get("PYTHONPATH", "")]))
        args.evaluator = "fleet_gpu:quick_evaluator"
    subprocess.run([sys.executable, "-m", "evalbot", "example-repo", str(work / "kernels")], check=True,
                   capture_output=True)
    shas = {b: _git(work / "kernels", "rev-parse", f"refs/heads/{b}") for b in ["main", *args.branches.split(",")]}
    admin, server = _admin_url(args)
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                         text=True).stdout.strip() if "demo" not in args.evaluator else "no GPU"
    rounds = []
    for name, n in [("warm-up", 1), ("one-worker", 1), (f"{args.workers}-workers", args.workers)]:
        rounds.append(_round(name, n, admin, work, shas, args))
        r = rounds[-1]
        print(f"{name}: {n} worker(s) on GPU 0, {len(r['jobs'])} jobs in {r['wall_s']:.1f} s", flush=True)
        for j in r["jobs"]:
            print(f"  {j['branch']:7s} {j['label']!s:7s} {j['state']:5s} worker {j['worker']} gpu {j['gpu']} "
                  f"queued {j['queued_s'] or 0:6.1f} s  evaluated in {j['evaluation_s'] or 0:6.1f} s  "
                  f"{j['reason'][:110]}", flush=True)
        if args.out:
            args.out.write_text(json.dumps({"gpu": gpu, "set": args.set, "budget_s": args.budget_s or None,
                                            "rounds": rounds}, indent=1))
    del server  # pgserver stops its server when the last handle goes


if __name__ == "__main__":
    main()
