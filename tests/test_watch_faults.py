"""Whose fault a failed evaluation is, and what the poller does about it, against the GitHub stand-in
with a real SQLite ledger: the contributor's fault is a final REJECT (recorded, published once, never
retried); an infrastructure fault is kept off the PR and the ledger, retried after real delays when
it is transient and not at all (until a restart) when it would repeat; a ledger locked by another
writer is waited for or retried, never a crash."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from fake_evaluator import evaluations
from watch_support import BOT, World, world

from evalbot.errors import EvalbotError
from evalbot.faults import ContributorFault, Fault, TransientFault, classify
from evalbot.fetch import CommitRejected, FetchError
from evalbot.manifest import ManifestError
from evalbot.queue.store import JobQueue, State
from ledger.dberrors import LedgerBusy
from ledger.engine import make_engine


def starts(w: World, sha: str) -> int:
    return sum(1 for e, s in evaluations(w.evaldir) if e == "start" and s == sha)


def test_classify():
    assert classify(ManifestError("x:kernels.toml: nesting too deep")) is Fault.CONTRIBUTOR
    assert classify(CommitRejected("tree has more than 50000 paths")) is Fault.CONTRIBUTOR
    assert classify(ContributorFault("x")) is Fault.CONTRIBUTOR
    assert classify(FetchError("cannot fetch: connection reset")) is Fault.TRANSIENT
    assert classify(TransientFault("x")) is Fault.TRANSIENT
    assert classify(LedgerBusy("locked")) is Fault.TRANSIENT
    assert classify(OSError("No space left on device")) is Fault.TRANSIENT
    assert classify(RuntimeError("CUDA driver hiccup")) is Fault.TRANSIENT
    assert classify(EvalbotError("basket model gemma4-tiny is not built")) is Fault.DETERMINISTIC
    assert classify(KeyError("qwen3moe")) is Fault.DETERMINISTIC


@pytest.mark.parametrize(("kind", "message"), [
    ("manifest", "0123abcd:kernels.toml: nested deeper than 32 levels"),
    ("tree", "tree of 0123abcd has more than 50000 paths"),
])
def test_contributor_fault_is_a_final_reject_recorded_and_published_once(tmp_path, kind, message):
    with world(tmp_path, max_attempts=3) as w:
        sha = w.standin.commit(w.repo, "feature", {"EVAL": f"crash=1\nfault={kind}\nerror={message}\n"})
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        report = watcher.poll_once()
        assert report.ok and report.evaluated == 2 and report.waiting == 0  # the PR and the base branch
        assert starts(w, sha) == 1
        (entry,) = [e for e in watcher.queue.all() if e.sha == sha]
        assert entry.state is State.DONE and entry.verdict["label"] == "REJECT"

        (comment,) = w.standin.bot_comments(pull, BOT)
        assert f"`REJECT` for `{sha[:12]}`" in comment.body and message in comment.body
        assert pull.labels == ["eval:REJECT"]
        assert [s.state for s in w.standin.statuses[sha]] == ["failure"]
        with w.ledger() as ledger:
            (row,) = ledger.find(sha)
            assert (row.status, row.label) == ("complete", "REJECT") and message in row.reasons
            assert ledger.verify().ok

        # Final: neither the next poll nor a restart evaluates or publishes it again.
        writes = len(w.standin.writes())
        assert watcher.poll_once().evaluated == 0
        restarted = w.watcher()
        assert restarted.poll_once().evaluated == 0
        assert starts(w, sha) == 1 and len(w.standin.writes()) == writes
        with w.ledger() as ledger:
            assert len(ledger.find(sha)) == 1


def test_error_that_would_repeat_is_not_retried_and_not_published(tmp_path):
    with world(tmp_path, max_attempts=3) as w:
        w.watcher().poll_once()  # the base branch, evaluated before the setup breaks
        sha = w.standin.commit(w.repo, "feature", {"EVAL": "crash=1\nfault=setup\nerror=basket model x missing\n"})
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        report = watcher.poll_once()
        assert not report.ok and report.failed == 1 and report.waiting == 0 and report.next_retry_s is None
        assert starts(w, sha) == 1  # not three times in a row
        (entry,) = [e for e in watcher.queue.all() if e.sha == sha]
        assert entry.state is State.FAILED and "basket model x missing" in (entry.last_error or "")
        assert w.standin.bot_comments(pull, BOT) == [] and sha not in w.standin.statuses
        with w.ledger() as ledger:
            assert ledger.find(sha) == []
        watcher.poll_once()
        assert starts(w, sha) == 1
        w.watcher().poll_once()  # after a restart (the operator fixed the setup): tried once more
        assert starts(w, sha) == 2


def test_transient_failure_is_retried_after_growing_delays(tmp_path):
    with world(tmp_path, max_attempts=3, retry_backoff_s=1.0) as w:
        sha = w.standin.commit(w.repo, "feature", {"EVAL": "crash=1\nfault=fetch\n"})
        w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        first = watcher.poll_once()
        assert starts(w, sha) == 1 and first.waiting == 1 and 0.5 < first.next_retry_s <= 1.0
        again = watcher.poll_once()  # at once: the delay has not passed, nothing runs
        assert starts(w, sha) == 1 and again.waiting == 1
        time.sleep(again.next_retry_s)
        second = watcher.poll_once()
        assert starts(w, sha) == 2 and second.waiting == 1 and 1.5 < second.next_retry_s <= 2.0  # doubled
        time.sleep(second.next_retry_s)
        third = watcher.poll_once()
        assert starts(w, sha) == 3 and third.failed == 1 and third.waiting == 0  # max_attempts spent
        (entry,) = [e for e in watcher.queue.all() if e.sha == sha]
        assert entry.state is State.FAILED and entry.attempts == 3 and entry.recorded_at is None


def test_ledger_locked_past_the_busy_timeout_is_retried_at_the_next_poll(tmp_path):
    with world(tmp_path) as w:
        sha = w.pr_branch(w.repo, "feature", "S")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        watcher.queue = JobQueue(make_engine(w.cfg.ledger_url, busy_timeout_s=0.2))
        other = sqlite3.connect(tmp_path / "data" / "ledger.sqlite", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        try:
            report = watcher.poll_once()  # must not raise
            assert not report.ok and report.queued == 0 and starts(w, sha) == 0
        finally:
            other.execute("ROLLBACK")
            other.close()
        report = watcher.poll_once()
        assert report.ok and report.evaluated == 2 and starts(w, sha) == 1
        assert pull.labels == ["eval:S"] and len(w.standin.bot_comments(pull, BOT)) == 1
        with w.ledger() as ledger:
            assert len(ledger.find(sha)) == 1 and ledger.verify().ok


def test_ledger_locked_briefly_is_waited_for_and_a_verdict_is_never_lost(tmp_path, caplog):
    """A lock taken while an evaluation runs and held past the busy timeout when its verdict is
    stored: the store is retried until the lock goes, then the verdict is recorded and published."""
    with world(tmp_path) as w:
        sha = w.pr_branch(w.repo, "feature", "M", gate="locked")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        watcher.queue = JobQueue(make_engine(w.cfg.ledger_url, busy_timeout_s=0.2))
        released = threading.Event()

        def other_writer() -> None:
            deadline = time.monotonic() + 30
            while starts(w, sha) == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            other = sqlite3.connect(tmp_path / "data" / "ledger.sqlite", isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            w.open_gate("locked")  # the evaluation finishes while the lock is held
            time.sleep(1.5)
            other.execute("COMMIT")
            other.close()
            released.set()

        thread = threading.Thread(target=other_writer)
        thread.start()
        report = watcher.poll_once()
        thread.join(30)
        assert released.is_set()
        assert "storing the verdict on acme/kernels PR #1" in caplog.text and "locked by another writer" in caplog.text
        assert report.evaluated == 2 and starts(w, sha) == 1
        (entry,) = [e for e in watcher.queue.all() if e.sha == sha]
        assert entry.state is State.DONE and entry.published_at is not None
        assert pull.labels == ["eval:M"]
