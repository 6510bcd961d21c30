"""Shared pieces of the ledger tests (no tests here): backends, sample records, running the CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ledger import AdvanceIn, EvaluationIn, Ledger, MeasurementIn, Signer
from ledger import keys as ledger_keys

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_ENV = "EVALBOT_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def postgres_admin_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set (scripts/services.sh starts a throw-away PostgreSQL)")
    return url


def backend_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a new SQLite file, or a new PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        return
    admin_url = postgres_admin_url()
    name = f"evalbot_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def new_signer(directory: Path, name: str = "validator.key") -> Signer:
    signer, _ = ledger_keys.generate(directory / name)
    return signer


def sha(i: int, salt: str = "") -> str:
    """A deterministic, distinct 40-hex commit id."""
    return hashlib.sha1(f"{salt}{i}".encode()).hexdigest()


def evaluation(i: int, *, author: str = "alice", label: str = "S", minutes: int | None = None) -> EvaluationIn:
    finished = T0 + timedelta(minutes=i if minutes is None else minutes)
    return EvaluationIn(
        repo="sn74/kernels",
        pr=100 + i,
        commit_sha=sha(i),
        author=author,
        base_commit=sha(i, "base"),
        frontier_commit=sha(0, "frontier"),
        gpu="NVIDIA H100 80GB HBM3",
        gpu_class="h100",
        basket="default",
        evalbot_version="0.1.0",
        policy_hash="sha256:" + "ab" * 8,
        started_at=finished - timedelta(seconds=90),
        finished_at=finished,
        status="complete",
        label=label,
        reasons=[f"speedup {1 + i / 100:.2f}x on both models"],
        verdict={"label": label, "n": i, "models": {"qwen3moe-tiny": {"ratio": 1 + i / 100}}, "note": "ü"},
        measurements=[
            MeasurementIn("qwen3moe-tiny", True, 1000.0 + i, 950.0, 1 + i / 100, 1 + i / 200, 1 + i / 50),
            MeasurementIn("gemma4-tiny", True, 800.5 + i, 790.25, 1.0125, 1.001, 1.02),
        ],
    )


def advance(i: int, previous: str | None, *, delta: float = 0.05, evaluation_seq: int | None = None) -> AdvanceIn:
    return AdvanceIn(
        basket="default",
        gpu_class="h100",
        commit_sha=sha(i, "advance"),
        author=f"dev{i}",
        previous_commit=previous,
        delta=delta,
        advanced_at=T0 + timedelta(hours=i),
        model_deltas={"qwen3moe-tiny": delta, "gemma4-tiny": delta / 2},
        evaluation_seq=evaluation_seq,
    )


def populated(url: str, signer: Signer, evaluations: int = 6) -> Ledger:
    """A ledger of ``evaluations`` verdicts with a frontier advance after every third one."""
    ledger = Ledger.open(url, signer=signer, create=True)
    previous = None
    for i in range(1, evaluations + 1):
        row = ledger.record_evaluation(evaluation(i, author="alice" if i % 2 else "bob"))
        if i % 3 == 0:
            previous = ledger.record_frontier_advance(advance(i, previous, evaluation_seq=row.seq)).commit_sha
    return ledger


def run_cli(*args: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-m", "evalbot", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"evalbot {args} exited {result.returncode}: {result.stderr}")
    return result
