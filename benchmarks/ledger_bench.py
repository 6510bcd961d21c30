"""Fill a ledger with synthetic verdicts and time what validators and auditors run on it.

    python benchmarks/ledger_bench.py [--rows 1000000] [--url URL | --path FILE] [--batch 10000]

Every verdict is a full append: validated, hashed into the chain and Ed25519-signed one by one,
written ``--batch`` per transaction. Prints the insert rate (and how much of it is signing), then
the time of ``frontier``, ``history --author``, ``show`` (find by commit) and ``verify``. Without
``--url``/``--path`` it writes a SQLite file in a temporary directory and removes it afterwards.

Wall times depend on what else the machine runs; the CPU times printed beside them do not (for
SQLite, whose work all happens in this process).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ledger import AdvanceIn, EvaluationIn, Ledger, MeasurementIn, keys
from ledger.engine import sqlite_path

AUTHORS = 500
START = datetime(2024, 1, 1, tzinfo=UTC)


def _sha(i: int, salt: str) -> str:
    return hashlib.sha1(f"{salt}:{i}".encode()).hexdigest()


def _verdicts(first: int, count: int) -> Iterator[EvaluationIn]:
    for i in range(first, first + count):
        ratio = 1.0 + (i % 97) / 1000
        finished = START + timedelta(minutes=i)
        yield EvaluationIn(
            repo="sn74/kernels",
            pr=1 + i // 3,
            commit_sha=_sha(i, "commit"),
            author=f"author{i % AUTHORS:03d}",
            base_commit=_sha(i // 50, "base"),
            frontier_commit=_sha(i // 1000, "frontier"),
            gpu="NVIDIA H100 80GB HBM3",
            gpu_class="h100" if i % 4 else "b200",
            basket="default",
            evalbot_version="0.1.0",
            policy_hash="sha256:" + "c0ffee" * 4,
            started_at=finished - timedelta(seconds=300),
            finished_at=finished,
            status="complete",
            label="S" if ratio > 1.05 else "none",
            reasons=[f"median speedup {ratio:.3f}x, 95% CI above 1.0 on both models"],
            verdict={
                "schema": 1,
                "label": "S" if ratio > 1.05 else "none",
                "models": {
                    "qwen3moe-tiny": {"ratio": ratio, "ci": [ratio - 0.01, ratio + 0.01], "samples": 24},
                    "gemma4-tiny": {"ratio": ratio - 0.002, "ci": [ratio - 0.012, ratio + 0.008], "samples": 24},
                },
                "gates": {"kernel": "pass", "teacher_forced": {"top1": 0.9994, "kl_mean": 1.2e-6}},
            },
            measurements=[
                MeasurementIn("qwen3moe-tiny", True, 1200.0 * ratio, 1200.0, ratio, ratio - 0.01, ratio + 0.01),
                MeasurementIn("gemma4-tiny", True, 900.0 * ratio, 900.0, ratio - 0.002, ratio - 0.012, ratio + 0.008),
            ],
        )


def _timed(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _signing_cost(signer: keys.Signer, n: int = 20_000) -> float:
    message = b"evalbot-ledger-entry-v1\n" + b"0" * 64
    start = time.perf_counter()
    for _ in range(n):
        signer.sign(message)
    return (time.perf_counter() - start) / n


def run(url: str, rows: int, batch: int, key_dir: Path) -> None:
    signer, _ = keys.generate(key_dir / "bench.key")
    ledger = Ledger.open(url, signer=signer, create=True)
    print(f"ledger: {ledger.where}")
    print(f"filling with {rows:,} verdicts ({batch:,} per transaction, each hashed and signed) …", flush=True)
    previous: dict[str, str | None] = {"h100": None, "b200": None}
    insert_s = insert_cpu = 0.0
    done = advances = 0
    while done < rows:
        batch_rows = list(_verdicts(done, min(batch, rows - done)))  # synthetic input: not timed
        start, cpu = time.perf_counter(), time.process_time()
        ledger.record_evaluations(batch_rows, batch_size=batch)
        done += len(batch_rows)
        for gpu_class in previous:  # a frontier advance per GPU class every batch
            commit = _sha(done + len(gpu_class), "advance")
            ledger.record_frontier_advance(
                AdvanceIn(
                    basket="default",
                    gpu_class=gpu_class,
                    commit_sha=commit,
                    author=f"author{done % AUTHORS:03d}",
                    previous_commit=previous[gpu_class],
                    delta=0.01,
                    advanced_at=START + timedelta(minutes=done),
                    model_deltas={"qwen3moe-tiny": 0.012, "gemma4-tiny": 0.008},
                )
            )
            previous[gpu_class] = commit
            advances += 1
        insert_s += time.perf_counter() - start
        insert_cpu += time.process_time() - cpu
        if done % (10 * batch) == 0 or done == rows:
            print(f"  {done:>9,} rows  {done / insert_s:,.0f} rows/s", flush=True)
    sign_us = _signing_cost(signer) * 1e6
    print(
        f"insert: {rows:,} verdicts + {advances} frontier advances in {insert_s:.1f} s = {rows / insert_s:,.0f} rows/s "
        f"(CPU {insert_cpu:.1f} s = {insert_cpu / rows * 1e6:.0f} µs per verdict)"
    )
    # One signature per entry, plus one on the chain head per transaction.
    print(f"  Ed25519 signing: {sign_us:.1f} µs per signature, ≈{rows * sign_us / 1e6:.1f} s of the total")

    path = sqlite_path(url)
    if path is not None:
        size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "-*"))
        print(f"file size: {size / 2**20:,.0f} MiB ({size / rows:,.0f} bytes per verdict)")

    author = "author123"
    timings = {
        "frontier (current, all baskets × GPU classes)": lambda: ledger.frontiers(),
        "frontier default/h100": lambda: ledger.frontier("default", "h100"),
        "frontier --history": lambda: ledger.frontier_history(),
        f"history --author {author} (default --limit 50)": lambda: ledger.history(author=author, limit=50),
        f"history --author {author} --limit 0 (all)": lambda: ledger.history(author=author),
        "history (newest 50)": lambda: ledger.history(limit=50),
        "show <commit prefix>": lambda: ledger.find(_sha(rows // 2, "commit")[:10]),
    }
    for name, fn in timings.items():
        seconds, result = _timed(fn)
        size = len(result) if isinstance(result, list) else int(result is not None)
        print(f"{name:<52} {seconds * 1000:9.1f} ms  ({size:,} rows)")

    start, cpu = time.perf_counter(), time.process_time()
    report = ledger.verify([signer.public_hex])
    verify_s, verify_cpu = time.perf_counter() - start, time.process_time() - cpu
    entries = report.entries
    print(
        f"verify --pubkey: {entries:,} entries in {verify_s:.1f} s = {entries / verify_s:,.0f} entries/s "
        f"(CPU {verify_cpu:.1f} s), ok={report.ok}"
    )
    ledger.close()
    if not report.ok:
        sys.exit(f"verify failed: {report.problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="an empty database (SQLAlchemy URL)")
    target.add_argument("--path", type=Path, help="a new SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        if args.url:
            url = args.url
        else:
            path = args.path or Path(tmp) / "bench.sqlite"
            if path.exists():
                sys.exit(f"{path}: already exists; the benchmark needs a new file")
            url = f"sqlite:///{path.resolve()}"
        run(url, args.rows, args.batch, Path(tmp))


if __name__ == "__main__":
    main()
