"""`evalbot ledger migrate --to postgresql://…`: an SQLite validator moves to PostgreSQL keeping its
ledger (and its embedded queue); `evalbot ledger verify` passes on the copy, which carries on."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from test_ledger_support import backend_url, evaluation, new_signer, populated, run_cli

from evalbot.queue.store import JobQueue, State
from ledger import Ledger, Signer
from ledger.engine import make_engine

pytestmark = pytest.mark.postgres

JOB = {"repo": "acme/kernels", "clone_url": "file:///x", "fetch_ref": "refs/pull/1/head", "author": "alice",
       "base_ref": "main", "base_sha": "b" * 40, "pr_number": 1}


@pytest.fixture
def pg_url(tmp_path: Path):
    yield from backend_url("postgres", tmp_path)


def test_an_sqlite_ledger_is_copied_to_postgresql_and_verifies(tmp_path: Path, pg_url: str):
    source = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    signer = new_signer(tmp_path)
    with populated(source, signer, evaluations=9) as ledger:
        head = ledger.head()
        history = [(a.seq, a.commit_sha, a.delta) for a in ledger.frontier_history()]
        found = [(e.seq, e.label, e.reasons, e.verdict, [m.speedup for m in e.measurements])
                 for e in ledger.find(evaluation(4).commit_sha)]
    queue = JobQueue(make_engine(source))
    entry, _ = queue.enqueue("acme/kernels", "pr/1", "c" * 40, {**JOB, "sha": "c" * 40})
    queue.start(entry.id)
    queue.finish(entry.id, {"label": "S"})

    done = run_cli("ledger", "migrate", "--url", source, "--to", pg_url)
    assert done.returncode == 0, done.stderr
    assert "verified 12 entries" in done.stdout and "1 watch_queue" in done.stdout
    verified = run_cli("ledger", "verify", "--url", pg_url, "--pubkey", str(tmp_path / "validator.key.pub"))
    assert verified.returncode == 0 and "ok: 12 entries verified" in verified.stdout, verified.stdout + verified.stderr

    with Ledger.open(pg_url) as copy:
        assert copy.head() == head
        assert [(a.seq, a.commit_sha, a.delta) for a in copy.frontier_history()] == history
        assert [(e.seq, e.label, e.reasons, e.verdict, [m.speedup for m in e.measurements])
                for e in copy.find(evaluation(4).commit_sha)] == found
    # The copy carries on: the next entry chains onto the copied head, and the queue's ids continue.
    with Ledger.open(pg_url, signer=Signer.load(tmp_path / "validator.key")) as copy:
        row = copy.record_evaluation(evaluation(10))
        assert row.seq == head[0] + 1 and copy.verify().ok
    moved = JobQueue(make_engine(pg_url))
    (old,) = moved.all()
    assert (old.id, old.state, old.verdict) == (entry.id, State.DONE, {"label": "S"})
    new, created = moved.enqueue("acme/kernels", "pr/2", "d" * 40, {**JOB, "sha": "d" * 40, "pr_number": 2})
    assert created and new.id > old.id
    # The source is untouched.
    with Ledger.open(source) as original:
        assert original.head() == head and original.verify().ok


def test_a_second_copy_into_the_same_database_is_refused(tmp_path: Path, pg_url: str):
    source = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    populated(source, new_signer(tmp_path), evaluations=2).close()
    assert run_cli("ledger", "migrate", "--url", source, "--to", pg_url).returncode == 0
    again = run_cli("ledger", "migrate", "--url", source, "--to", pg_url)
    assert again.returncode == 2 and "already holds ledger entries" in again.stderr
    with Ledger.open(pg_url) as copy:
        assert copy.count() == 2 and copy.verify().ok


def test_a_source_that_does_not_verify_is_not_copied(tmp_path: Path, pg_url: str):
    path = tmp_path / "ledger.sqlite"
    populated(f"sqlite:///{path}", new_signer(tmp_path), evaluations=3).close()
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # an edit behind the ledger's back (its triggers dropped first)
        conn.execute(text("DROP TRIGGER evaluations_no_update"))
        conn.execute(text("UPDATE evaluations SET label = 'XL' WHERE seq = 2"))
    engine.dispose()
    refused = run_cli("ledger", "migrate", "--url", str(path), "--to", pg_url)
    assert refused.returncode == 2 and "does not verify" in refused.stderr and "not copied" in refused.stderr
    with create_engine(pg_url).connect() as conn:
        assert conn.execute(text("SELECT to_regclass('entries')")).scalar() is None or conn.execute(
            text("SELECT count(*) FROM entries")).scalar() == 0
