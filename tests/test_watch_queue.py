"""The work queue in the ledger database, the recorder's idempotence, the instance lock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect
from test_ledger_support import BACKENDS, backend_url

from evalbot.config import BasketConfig, Config, LedgerConfig, PathsConfig
from evalbot.errors import EvalbotError
from evalbot.ledger_recorder import LedgerRecorder, basket_id, open_recorder
from evalbot.pipeline import Job, ModelResult, Verdict, load_evaluator, verdict_from_json, verdict_to_json
from evalbot.queue.store import JobQueue, QueueRow, State
from evalbot.watch_lock import AdvisoryLock, FileLock, instance_lock, lock_path
from ledger import Ledger
from ledger.keys import generate

SHA = "a" * 40
JOB = {"repo": "acme/kernels", "sha": SHA, "clone_url": "file:///x", "fetch_ref": "refs/pull/1/head",
       "author": "alice", "base_ref": "main", "base_sha": "b" * 40, "pr_number": 1}


def verdict(label: str = "M", speedup: float = 1.06) -> Verdict:
    return Verdict(label, ("why",), "md", "GPU", "policy-1", {"k": 1},
                   (ModelResult("qwen3moe-tiny", label != "REJECT", 106.0, 100.0, speedup, (1.05, 1.07)),))


@pytest.fixture(params=BACKENDS)
def ledger_cfg(request, tmp_path):
    """A validator config whose ledger is a new SQLite file or a new PostgreSQL database."""
    key = tmp_path / "key.pem"
    generate(key)
    urls = backend_url(request.param, tmp_path)
    url = next(urls)
    yield Config(ledger=LedgerConfig(url=url, signing_key=str(key), gpu_class="test-gpu"),
                 paths=PathsConfig(data_dir=str(tmp_path)))
    urls.close()  # drops the PostgreSQL database


def test_migration_creates_the_table_the_model_describes(ledger_cfg):
    _, engine = open_recorder(ledger_cfg, read_only=False)
    assert engine is not None
    columns = {c["name"]: c["nullable"] for c in inspect(engine).get_columns("watch_queue")}
    model = {c.name: c.nullable for c in QueueRow.__table__.columns}
    assert columns == model
    uniques = {tuple(u["column_names"]) for u in inspect(engine).get_unique_constraints("watch_queue")}
    assert ("repo", "target", "sha") in uniques


def test_state_machine(ledger_cfg):
    _, engine = open_recorder(ledger_cfg, read_only=False)
    q = JobQueue(engine)
    entry, created = q.enqueue("acme/kernels", "pr/1", SHA, JOB)
    assert created and entry.state is State.QUEUED
    assert q.enqueue("acme/kernels", "pr/1", SHA, JOB) == (entry, False)
    base, _ = q.enqueue("acme/kernels", "branch/main", "c" * 40, {**JOB, "sha": "c" * 40, "pr_number": None})
    assert q.next_queued().id == base.id  # the base branch goes first

    running = q.start(entry.id)
    assert running.state is State.RUNNING and running.attempts == 1 and running.started_at is not None
    assert q.start(entry.id) is None  # claimed already: a second start does not run it twice
    assert [e.id for e in JobQueue(engine).recover()] == [entry.id]  # a new process finds it
    assert q.start(entry.id).attempts == 2
    assert q.abandon(entry.id).attempts == 1
    assert q.next_queued(exclude_shas={"c" * 40}).id == entry.id  # a commit waiting out a retry delay
    q.start(entry.id)
    assert q.fail_attempt(entry.id, "boom", max_attempts=3).state is State.QUEUED
    q.start(entry.id)
    failed = q.fail_attempt(entry.id, "boom again", max_attempts=3)
    assert failed.state is State.FAILED and failed.last_error == "boom again"
    # An infrastructure failure stays here: never recorded in the ledger nor published on the PR.
    assert q.unrecorded() == [] and q.unpublished() == [] and q.history("acme/kernels", "pr/1") == []
    assert q.next_queued().id == base.id  # failed stays failed...
    assert q.failed_ids() == {entry.id}
    retried = q.retry(entry.id)  # ...until the poller retries it (after a restart)
    assert retried.state is State.QUEUED and retried.attempts == 0
    assert (retried.finished_at, retried.recorded_at, retried.published_at, retried.shown_at) == (None,) * 4
    assert q.failed_ids() == set()
    with pytest.raises(ValueError, match="not failed"):
        q.retry(entry.id)
    # An error that would repeat is final at the first attempt, whatever max_attempts allows.
    q.start(entry.id)
    assert q.fail_attempt(entry.id, "no GPU", max_attempts=3, final=True).state is State.FAILED


def test_verdict_of_a_commit_is_reused_for_another_target(ledger_cfg):
    _, engine = open_recorder(ledger_cfg, read_only=False)
    q = JobQueue(engine)
    entry, _ = q.enqueue("acme/kernels", "pr/1", SHA, JOB)
    q.start(entry.id)
    q.finish(entry.id, {**verdict_to_json(verdict()), "baseline_sha": None})
    merged, created = q.enqueue("acme/kernels", "branch/main", SHA, {**JOB, "pr_number": None})
    assert created and merged.state is State.DONE and merged.verdict["label"] == "M"
    assert merged.recorded_at is None  # the branch still needs its frontier advance recorded
    assert q.next_queued() is None


def test_dropped_commit_can_be_queued_again(ledger_cfg):
    _, engine = open_recorder(ledger_cfg, read_only=False)
    q = JobQueue(engine)
    entry, _ = q.enqueue("acme/kernels", "pr/1", SHA, JOB)
    q.drop(entry.id, "PR #1 draft")
    again, created = q.enqueue("acme/kernels", "pr/1", SHA, JOB)
    assert created and again.id == entry.id and again.state is State.QUEUED


def test_verdict_json_round_trip():
    v = verdict()
    assert verdict_from_json(verdict_to_json(v)) == v
    with pytest.raises(ValueError, match="not one of"):
        Verdict("HUGE", (), "", "g", "p")


def test_recorder_is_idempotent_and_advances_the_frontier_once(ledger_cfg):
    recorder, _ = open_recorder(ledger_cfg, read_only=False)
    assert isinstance(recorder, LedgerRecorder)
    now = datetime.now(UTC)
    base = Job(**{**JOB, "pr_number": None, "fetch_ref": "refs/heads/main"}, baseline_sha=None)
    recorder.record(base, verdict("none", 1.0), now, now)
    recorder.record(base, verdict("none", 1.0), now, now)  # a crash before the queue noted it
    assert recorder.frontier("acme/kernels", "main") == SHA

    pr = Job(**{**JOB, "sha": "d" * 40}, baseline_sha=SHA)
    recorder.record(pr, verdict("M"), now, now)
    assert recorder.frontier("acme/kernels", "main") == SHA  # a PR never moves the frontier

    rejected = Job(**{**JOB, "sha": "e" * 40, "pr_number": None}, baseline_sha=SHA)
    recorder.record(rejected, verdict("REJECT"), now, now)
    faster = Job(**{**JOB, "sha": "f" * 40, "pr_number": None}, baseline_sha=SHA)
    recorder.record(faster, verdict("L", 1.12), now, now)
    stale = Job(**{**JOB, "sha": "9" * 40, "pr_number": None}, baseline_sha=SHA)
    recorder.record(stale, verdict("S", 1.04), now, now)  # measured against a frontier that moved
    with Ledger.open(ledger_cfg.ledger_url) as ledger:
        advances = ledger.frontier_history()
        assert [(a.commit_sha, round(a.delta, 4)) for a in advances] == [(SHA, 0.0), ("f" * 40, 0.12)]
        assert ledger.count() == 5 and ledger.verify().ok
        assert [m.speedup for m in ledger.find("d" * 40)[0].measurements] == [1.06]


def test_recorder_needs_a_key_and_a_gpu_class(tmp_path):
    with pytest.raises(EvalbotError, match="signing_key is not set"):
        open_recorder(Config(ledger=LedgerConfig(gpu_class="x")), read_only=False)
    with pytest.raises(EvalbotError, match="gpu_class is not set"):
        open_recorder(Config(ledger=LedgerConfig(signing_key=str(tmp_path / "k"))), read_only=False)


def test_basket_id_is_bounded():
    assert basket_id(Config()) == "qwen3moe-30b-a3b+gemma4-26b-a4b"
    assert basket_id(Config(basket=BasketConfig(set="tiny"))) == "qwen3moe-tiny+gemma4-tiny"
    long = Config(basket=BasketConfig(models=[f"/models/model-{i:03d}.gguf" for i in range(20)]))
    assert basket_id(long).startswith("basket-") and len(basket_id(long)) <= 100


def test_one_instance_per_ledger(tmp_path):
    path = lock_path(f"sqlite:///{tmp_path}/ledger.sqlite", tmp_path / "data")
    assert path == tmp_path.resolve() / "ledger.sqlite.watch.lock"
    assert isinstance(instance_lock(f"sqlite:///{tmp_path}/ledger.sqlite", tmp_path), FileLock)
    with FileLock(path):
        with pytest.raises(EvalbotError, match=r"another evalbot watch \(pid \d+\) is running"):
            FileLock(path).acquire()
    with FileLock(path):  # released: the next one gets it
        pass
    other = lock_path("mysql://u:secret@db/ledger", tmp_path / "data")
    assert other.parent == tmp_path / "data" and "secret" not in other.name


def test_one_instance_per_ledger_whatever_path_reaches_it(tmp_path, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    (real / "ledger.sqlite").touch()
    (tmp_path / "link.sqlite").symlink_to(real / "ledger.sqlite")  # a symlink to the file
    (tmp_path / "dirlink").symlink_to(real)  # and one to a directory above it
    monkeypatch.chdir(tmp_path)
    spellings = [f"sqlite:///{real}/ledger.sqlite", f"sqlite:///{tmp_path}/link.sqlite",
                 f"sqlite:///{tmp_path}/dirlink/ledger.sqlite", "sqlite:///real/../real/ledger.sqlite"]
    paths = {lock_path(url, tmp_path / "data") for url in spellings}
    assert paths == {real.resolve() / "ledger.sqlite.watch.lock"}
    with instance_lock(spellings[0], tmp_path / "data"):
        for url in spellings[1:]:
            with pytest.raises(EvalbotError, match="another evalbot watch"):
                instance_lock(url, tmp_path / "data").acquire()


def test_two_starts_of_one_job_exactly_one_wins(ledger_cfg):
    """Two processes' queues (separate engines and connections) start one row at the same moment."""
    from ledger.engine import make_engine

    _, engine = open_recorder(ledger_cfg, read_only=False)
    entry, _ = JobQueue(engine).enqueue("acme/kernels", "pr/1", SHA, JOB)
    engines = [make_engine(ledger_cfg.ledger_url) for _ in range(2)]
    queues = [JobQueue(e) for e in engines]
    for q in queues:  # both have seen it queued, as two pollers listing the queue would
        assert q.next_queued().id == entry.id
    go = threading.Barrier(len(queues))
    results: list[object] = [None] * len(queues)

    def start(i: int) -> None:
        go.wait()
        results[i] = queues[i].start(entry.id)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(queues))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].state is State.RUNNING and winners[0].attempts == 1
    (row,) = JobQueue(engine).all()
    assert row.state is State.RUNNING and row.attempts == 1  # started once, counted once
    for e in engines:
        e.dispose()


@pytest.mark.postgres
def test_one_instance_per_postgres_ledger_across_hosts(tmp_path):
    urls = backend_url("postgres", tmp_path)
    url = next(urls)
    try:
        lock = instance_lock(url, tmp_path)
        assert isinstance(lock, AdvisoryLock)
        with lock:
            with pytest.raises(EvalbotError, match=r"another evalbot watch is running .*advisory lock"):
                AdvisoryLock(url).acquire()
        with AdvisoryLock(url):  # the session ended: the lock is free again
            pass
    finally:
        urls.close()


def test_evaluator_spec_errors_are_one_line():
    for spec, needle in [("nomodule", "expected 'module:factory'"),
                         ("no_such_module_x:create", "cannot import"),
                         ("threading:NOPE", "has no callable 'NOPE'"),
                         ("builtins:repr", "without evaluate()")]:
        with pytest.raises(EvalbotError, match=needle):
            load_evaluator(spec, Config())



def test_a_ledger_from_before_the_queue_is_migrated_keeping_its_rows(ledger_cfg):
    from ledger import Signer, schema
    from ledger.engine import make_engine
    from ledger.models import TreeNode

    engine = make_engine(ledger_cfg.ledger_url)
    schema.upgrade(engine, "old", "0002")
    old = Ledger(engine, "old", Signer.load(Path(ledger_cfg.ledger.signing_key)))
    now = datetime.now(UTC)
    # Today's API appends to the Merkle tree too: give the 0002 ledger the table for that one append,
    # then take it away again, as a ledger from before the queue (and the tree) has neither.
    TreeNode.__table__.create(engine)
    LedgerRecorder(old, "b", "test-gpu").record(Job(**JOB, baseline_sha=None), verdict(), now, now)
    TreeNode.__table__.drop(engine)
    with pytest.raises(EvalbotError, match="run `evalbot ledger migrate`"):
        open_recorder(ledger_cfg, read_only=False)
    assert schema.upgrade(engine, "old") == ("0002", schema.head_revision())
    _, new_engine = open_recorder(ledger_cfg, read_only=False)
    assert new_engine is not None
    JobQueue(new_engine).enqueue("acme/kernels", "pr/1", SHA, JOB)
    with Ledger.open(ledger_cfg.ledger_url) as ledger:
        assert ledger.count() == 1 and ledger.verify().ok


def test_recorder_appends_a_failure_once_without_label_or_advance(ledger_cfg):
    recorder, _ = open_recorder(ledger_cfg, read_only=False)
    assert isinstance(recorder, LedgerRecorder)
    start = datetime(2025, 12, 1, 10, 0, tzinfo=UTC)
    end = datetime(2025, 12, 1, 10, 5, tzinfo=UTC)
    base = Job(**{**JOB, "pr_number": None, "fetch_ref": "refs/heads/main"}, baseline_sha=None)
    recorder.record_failure(base, "RuntimeError: docker is not running", 3, start, end)
    recorder.record_failure(base, "RuntimeError: docker is not running", 3, start, end)  # crash, repeat
    assert recorder.frontier("acme/kernels", "main") is None  # a failure never advances the frontier
    # A later round that fails again is a row of its own; a verdict after it is recorded too (the
    # failure row does not count as "already recorded"), and that one advances the frontier.
    recorder.record_failure(base, "RuntimeError: docker is not running", 3, end, end)
    recorder.record(base, verdict("none", 1.0), end, end)
    recorder.record(base, verdict("none", 1.0), end, end)
    assert recorder.frontier("acme/kernels", "main") == SHA
    with Ledger.open(ledger_cfg.ledger_url) as ledger:
        rows = ledger.find(SHA)
        assert [(r.status, r.label) for r in rows] == [("error", None), ("error", None), ("complete", "none")]
        failed = rows[0]
        reason = "evaluation could not be completed (3 attempts): RuntimeError: docker is not running"
        assert failed.reasons == f'["{reason}"]' and '"outcome":"failed"' in failed.verdict
        assert (failed.gpu, failed.policy_hash, failed.measurements) == ("unknown", "n/a", [])
        assert [a.evaluation_seq for a in ledger.frontier_history()] == [rows[2].seq]
        assert ledger.verify().ok


def test_republish_stale_finds_heads_the_pr_does_not_show(ledger_cfg):
    _, engine = open_recorder(ledger_cfg, read_only=False)
    q = JobQueue(engine)
    shas = {name: ch * 40 for name, ch in (("a1", "1"), ("a2", "2"), ("b1", "3"))}

    def done(target: str, sha: str, shown: bool) -> int:
        entry, _ = q.enqueue("acme/kernels", target, sha, {**JOB, "sha": sha})
        q.start(entry.id)
        q.finish(entry.id, {**verdict_to_json(verdict()), "baseline_sha": None})
        q.mark_recorded(entry.id)
        q.mark_published(entry.id, shown=shown)
        return entry.id

    a1 = done("pr/1", shas["a1"], shown=True)
    a2 = done("pr/1", shas["a2"], shown=True)
    b1 = done("pr/2", shas["b1"], shown=False)  # published as a status only: the PR had moved on
    heads = {"pr/1": shas["a2"], "pr/2": shas["b1"], "pr/3": "4" * 40}
    assert [e.id for e in q.republish_stale("acme/kernels", heads)] == [b1]
    assert [e.id for e in q.unpublished()] == [b1]
    q.mark_published(b1, shown=True)
    assert q.republish_stale("acme/kernels", heads) == []  # converged: an idle poll finds nothing
    heads["pr/1"] = shas["a1"]  # A1 -> A2 -> A1
    (stale,) = q.republish_stale("acme/kernels", heads)
    assert stale.id == a1 and stale.published_at is None and stale.state is State.DONE
    assert q.republish_stale("acme/kernels", heads) == []  # pending already, not twice
    q.mark_published(a1, shown=True)
    assert q.republish_stale("acme/kernels", heads) == [] and q.republish_stale("acme/kernels", {}) == []
    assert a2 not in {e.id for e in q.unpublished()}


def test_migration_0004_takes_published_pr_rows_as_shown(ledger_cfg):
    from sqlalchemy import text

    from ledger import schema
    from ledger.engine import make_engine

    engine = make_engine(ledger_cfg.ledger_url)
    schema.upgrade(engine, "old", "0003")
    now = datetime(2025, 12, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for i, (target, state, published) in enumerate(
            [("pr/1", "done", now), ("pr/1", "done", None), ("branch/main", "done", now), ("pr/2", "failed", now)]
        ):
            conn.execute(
                text("INSERT INTO watch_queue (repo, target, sha, job, state, attempts, created_at, published_at, "
                     "publish_attempts) VALUES ('acme/kernels', :t, :sha, '{}', :s, 1, :now, :p, 0)"),
                {"t": target, "sha": str(i) * 40, "s": state, "now": now, "p": published},
            )
    assert schema.upgrade(engine, "old") == ("0003", schema.head_revision())
    shown = {e.sha[0]: e.shown_at for e in JobQueue(engine).all()}
    assert shown == {"0": now, "1": None, "2": None, "3": now}
    engine.dispose()
