"""The fleet with a real PostgreSQL and real procrastinate workers: claims, queueing locks, one queue
per GPU class, cancellation of a running job on force-push, a dead worker's job finished by another,
graceful SIGTERM, refusal to start, and queue positions on the PR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_evaluator import evaluations
from fleet_support import (
    Proc,
    _env,
    add_fleet,
    fleet_url,
    log_lines,
    poller,
    procrastinate_jobs,
    wait_until,
    worker,
)
from test_ledger_support import PG_ENV  # noqa: F401  (the database the fixture uses)
from watch_support import BOT, TOKEN, world

from evalbot.github.client import GithubClient
from evalbot.queue.dispatch import Dispatcher
from evalbot.queue.fleet import FleetStore, JobKey, JobState, queue_name
from evalbot.watch import PollReport, WatchSettings, secrets_of
from evalbot.watch_fleet import FleetWatcher, open_fleet_watcher
from ledger import Ledger

pytestmark = pytest.mark.postgres

SHA = "a" * 40
FIELDS = {"repo": "acme/kernels", "sha": SHA, "clone_url": "file:///nowhere", "fetch_ref": "refs/pull/1/head",
          "author": "alice", "base_ref": "main", "base_sha": "b" * 40, "pr_number": 1}


@pytest.fixture
def url(tmp_path: Path):
    yield from fleet_url(tmp_path)


@pytest.fixture
def store(url: str):
    s = FleetStore(url)
    s.setup()
    yield s
    s.dispose()


def _key(sha: str = SHA, gpu_class: str = "h100", frontier: str | None = "f" * 40) -> JobKey:
    return JobKey("acme/kernels", sha, frontier, "policy-sha", "qwen3moe-tiny+gemma4-tiny", gpu_class)


def test_a_job_is_claimed_once_and_only_its_latest_claim_stores_a_verdict(store: FleetStore):
    job, fresh = store.submit(_key(), "pr/1", FIELDS, 0)
    assert fresh and job.state == JobState.QUEUED
    again, fresh_again = store.submit(_key(), "pr/1", FIELDS, 0)
    assert not fresh_again and again.key == job.key
    first = store.claim(job.key, 11, "box-a:gpu0", "0", max_attempts=3)
    assert first is not None and first.claim and first.attempts == 1
    # Another procrastinate job of the same key (deferred while this one ran) does not run it.
    assert store.claim(job.key, 12, "box-b:gpu0", "0", max_attempts=3) is None
    # The same procrastinate job, retried as stalled: claimed again, with a new token.
    second = store.claim(job.key, 11, "box-b:gpu1", "1", max_attempts=3)
    assert second is not None and second.claim != first.claim and second.attempts == 2
    # The first claimant was alive after all: its verdict is not stored; the second's is.
    assert not store.finish(job.key, first.claim, {"label": "S"})
    assert store.finish(job.key, second.claim, {"label": "M"})
    assert not store.finish(job.key, second.claim, {"label": "XL"})
    done = store.job(job.key)
    assert done is not None and done.state == JobState.DONE and done.verdict == {"label": "M"}
    assert done.worker == "box-b:gpu1"
    # Done: no claim of any procrastinate job runs it again.
    assert store.claim(job.key, 11, "box-a:gpu0", "0", max_attempts=3) is None


def test_a_verdict_reached_after_its_job_was_cancelled_is_not_stored(store: FleetStore):
    job, _ = store.submit(_key(), "pr/1", FIELDS, 0)
    claimed = store.claim(job.key, 5, "w", "0", max_attempts=3)
    assert claimed is not None and claimed.claim
    (head,) = store.active_heads("acme/kernels")
    running = store.release(head.id, "superseded by bbbbbbbbbbbb (force-push or new commit)")
    assert running is not None and running.state == JobState.RUNNING and running.cancel_requested
    assert store.cancel_requested(job.key, claimed.claim)
    assert not store.finish(job.key, claimed.claim, {"label": "S"})  # it finished before it saw the request
    cancelled = store.job(job.key)
    assert cancelled is not None and cancelled.state == JobState.CANCELLED and cancelled.verdict is None


def test_a_job_whose_workers_keep_dying_fails_instead_of_running_forever(store: FleetStore):
    job, _ = store.submit(_key(), "pr/1", FIELDS, 0)
    for _ in range(2):
        assert store.claim(job.key, 7, "w", "0", max_attempts=2) is not None
    assert store.claim(job.key, 7, "w", "0", max_attempts=2) is None
    failed = store.job(job.key)
    assert failed is not None and failed.state == JobState.FAILED and "stopped 2 times" in (failed.error or "")


def test_a_running_job_whose_procrastinate_job_ended_without_a_verdict_is_queued_again(store: FleetStore):
    """The task raised (the fleet's database went away mid-job): no heartbeat goes stale, so the
    poller finds the row running with no procrastinate job waiting or running for it."""
    job, _ = store.submit(_key(), "pr/1", FIELDS, 0)
    claimed = store.claim(job.key, 99, "w", "0", max_attempts=3)  # procrastinate job 99: not (any more) there
    assert claimed is not None
    (again,) = store.to_defer()
    assert again.key == job.key and again.state == JobState.QUEUED and again.attempts == 1
    assert not store.finish(job.key, claimed.claim or "", {"label": "S"})  # that claim is void


def test_the_queueing_lock_keeps_one_waiting_job_per_key_in_its_gpu_class_queue(store: FleetStore):
    a, _ = store.submit(_key(gpu_class="h100"), "pr/1", FIELDS, 0)
    b, _ = store.submit(_key(gpu_class="H200 SXM"), "pr/1", FIELDS, 0)
    with Dispatcher(store) as dispatcher:
        assert dispatcher.defer(a) is not None
        assert dispatcher.defer(a) is None  # AlreadyEnqueued: the lock holds
        assert dispatcher.defer(b) is not None
        assert [j.key for j in store.to_defer()] == []  # both have a waiting job
        jobs = procrastinate_jobs(store)
        assert sorted((j["queue_name"], j["queueing_lock"]) for j in jobs) == sorted(
            [("gpu-h100", a.key), ("gpu-H200-SXM", b.key)])
        assert queue_name("H200 SXM") == "gpu-H200-SXM"
        assert store.positions() == {a.key: (1, 1), b.key: (1, 1)}
        # Released by its only head while waiting: cancelled, row and procrastinate job alike.
        head = next(h for h in store.active_heads("acme/kernels") if h.key == a.key)
        cancelled = store.release(head.id, "PR #1 closed")
        assert cancelled is not None and cancelled.state == JobState.CANCELLED
        assert dispatcher.cancel_waiting(a.key) == 1
        assert {j["queueing_lock"]: j["status"] for j in procrastinate_jobs(store)}[a.key] == "cancelled"
        # Wanted again (the PR reopened): queued anew under the same key.
        again, fresh = store.submit(_key(gpu_class="h100"), "pr/1", FIELDS, 0)
        assert fresh and again.key == a.key and [j.key for j in store.to_defer()] == [a.key]


@pytest.mark.slow  # over 10 s on 2 shared cores (worker processes start)
def test_a_worker_serves_only_its_gpu_class_queue(tmp_path: Path, url: str):
    with world(tmp_path) as w:
        add_fleet(w.config_path, url, ["h100", "h200"])
        pr = w.pr_branch(w.repo, "one", "S")
        w.standin.open_pull(w.repo, w.repo, "one", "one")
        fw = _fleet_watcher(w)
        try:
            fw.poll_once()
            base = w.standin.head(w.repo, "main")
            listed = fw.store.listing()
            assert sorted((j.job.sha, j.job.gpu_class) for j in listed) == sorted(
                (sha, cls) for sha in (pr, base) for cls in ("h100", "h200"))
            a = worker(tmp_path, w.config_path, w.evaldir, "h100", "w-h100", "fake_evaluator:create", "--drain")
            assert a.proc.wait(60) == 0, a.output()
            jobs = fw.store.jobs([j.job.key for j in listed])
            assert sorted((j.sha, j.gpu_class) for j in jobs.values() if j.state == JobState.DONE) == sorted(
                [(pr, "h100"), (base, "h100")])
            assert sorted(j.gpu_class for j in jobs.values() if j.state == JobState.QUEUED) == ["h200", "h200"]
            # The base branch commit ran first: it moves the frontier PRs are measured against.
            assert [sha for event, sha in evaluations(w.evaldir) if event == "done"] == [base, pr]
        finally:
            fw.close()


def _fleet_watcher(w) -> FleetWatcher:
    cfg = w.cfg
    g = cfg.github
    settings = WatchSettings(g.repo, g.base_branch, g.include_drafts, g.include_forks, g.max_attempts,
                             g.poll_interval_s, secrets_of(cfg, TOKEN), g.retry_backoff_s)
    return open_fleet_watcher(cfg, settings, GithubClient(g, TOKEN))


def _job(fw: FleetWatcher, sha: str):
    (job,) = [j.job for j in fw.store.listing(include_finished=True) if j.job.sha == sha]
    return job


def _state(fw: FleetWatcher, sha: str) -> JobState | None:
    states = [j.job.state for j in fw.store.listing(include_finished=True) if j.job.sha == sha]
    return states[0] if states else None


def test_force_push_cancels_the_running_job_and_the_new_head_is_evaluated(tmp_path: Path, url: str):
    with world(tmp_path) as w:
        add_fleet(w.config_path, url)
        old = w.pr_branch(w.repo, "feat", "M", gate="old")
        pull = w.standin.open_pull(w.repo, w.repo, "feat", "feat")
        fw = _fleet_watcher(w)
        a = worker(tmp_path, w.config_path, w.evaldir, "test-gpu", "w-a")
        try:
            fw.poll_once()
            wait_until("the old head to start", lambda: ("start", old) in evaluations(w.evaldir), procs=(a,))
            assert _state(fw, old) == JobState.RUNNING
            new = w.standin.force_push(w.repo, "feat", {"EVAL": "label=S\n", "kernel.cu": "// amended\n"})
            report = fw.poll_once()
            assert report.dropped == 1
            wait_until("the old head's evaluation to be abandoned",
                       lambda: ("cancelled", old) in evaluations(w.evaldir), procs=(a,))
            wait_until("the old job to be cancelled", lambda: _state(fw, old) == JobState.CANCELLED, procs=(a,))

            def published() -> bool:
                fw.poll_once()
                return any(c.body.startswith("<!-- evalbot:sticky -->\n### evalbot: `S` for")
                           for c in w.standin.bot_comments(pull, BOT))

            wait_until("the new head's verdict on the PR", published, procs=(a,))
        finally:
            fw.close()
            a.term()
        assert ("done", old) not in evaluations(w.evaldir)
        comments = w.standin.bot_comments(pull, BOT)
        assert len(comments) == 1 and new[:12] in comments[0].body
        assert list(pull.labels) == ["eval:S"]
        with Ledger.open(w.cfg.ledger_url) as ledger:
            assert [e.label for e in ledger.find(new)] == ["S"] and ledger.find(old) == []
            assert ledger.verify().ok


@pytest.mark.slow  # over 10 s on 2 shared cores (worker processes start)
def test_a_dead_workers_job_is_finished_by_another(tmp_path: Path, url: str):
    with world(tmp_path) as w:
        add_fleet(w.config_path, url)
        sha = w.pr_branch(w.repo, "feat", "L", gate="g")
        pull = w.standin.open_pull(w.repo, w.repo, "feat", "feat")
        fw = _fleet_watcher(w)
        a = worker(tmp_path, w.config_path, w.evaldir, "test-gpu", "w-a")
        b = None
        try:
            fw.poll_once()
            wait_until("worker a to start the job", lambda: ("start", sha) in evaluations(w.evaldir), procs=(a,))
            first_pid = next(parts[2] for parts in log_lines(w.evaldir) if parts[:2] == ["start", sha])
            assert first_pid == str(a.proc.pid)
            a.kill()  # SIGKILL: no goodbye, its heartbeat just stops
            w.open_gate("g")
            b = worker(tmp_path, w.config_path, w.evaldir, "test-gpu", "w-b")
            wait_until("worker b to finish it", lambda: _state(fw, sha) == JobState.DONE, timeout=40, procs=(b,))
            wait_until("the verdict on the PR", lambda: fw.poll_once() is not None and bool(
                [c for c in w.standin.bot_comments(pull, BOT) if "`L`" in c.body]), procs=(b,))
        finally:
            fw.close()
            if b is not None:
                b.term()
        starts = [parts for parts in log_lines(w.evaldir) if parts[:2] == ["start", sha]]
        assert [p[2] for p in starts] == [str(a.proc.pid), str(b.proc.pid)]
        assert [e for e in evaluations(w.evaldir) if e == ("done", sha)] == [("done", sha)]
        job = _job(fw, sha)
        assert job.attempts == 2 and job.worker and job.worker.endswith(f":{b.proc.pid}")
        assert "retrying it" in b.output()
        # procrastinate's own record: one job, run twice (retried as stalled), succeeded.
        (pjob,) = [j for j in procrastinate_jobs(fw.store) if j["queueing_lock"] == job.key]
        assert pjob["status"] == "succeeded" and pjob["id"] == job.procrastinate_job
        assert len(w.standin.bot_comments(pull, BOT)) == 1
        with Ledger.open(w.cfg.ledger_url) as ledger:
            assert [e.label for e in ledger.find(sha)] == ["L"]


def test_sigterm_hands_the_running_job_back_and_exits(tmp_path: Path, url: str):
    with world(tmp_path) as w:
        add_fleet(w.config_path, url)
        sha = w.pr_branch(w.repo, "feat", "M", gate="g")
        w.standin.open_pull(w.repo, w.repo, "feat", "feat")
        fw = _fleet_watcher(w)
        a = worker(tmp_path, w.config_path, w.evaldir, "test-gpu", "w-a")
        try:
            fw.poll_once()
            wait_until("the job to start", lambda: ("start", sha) in evaluations(w.evaldir), procs=(a,))
            assert a.term(timeout=20) == 0, a.output()
            job = _job(fw, sha)
            assert job.state == JobState.QUEUED and job.attempts == 0  # a shutdown does not count
            assert "handed" in a.output() and ("cancelled", sha) in evaluations(w.evaldir)
            assert [j.key for j in fw.store.to_defer()] == [job.key]  # the poller defers it again
        finally:
            fw.close()


def test_a_queued_head_shows_its_position_and_evalbot_queue_lists_it(tmp_path: Path, url: str):
    with world(tmp_path) as w:
        add_fleet(w.config_path, url)
        pulls = []
        for name in ("one", "two"):
            w.pr_branch(w.repo, name, "S")
            pulls.append(w.standin.open_pull(w.repo, w.repo, name, name))
        fw = _fleet_watcher(w)
        try:
            fw.poll_once()  # no worker runs: everything waits
        finally:
            fw.close()
        bodies = [w.standin.bot_comments(p, BOT)[0].body for p in pulls]
        # The base branch head goes first (priority), then the PRs in the order queued.
        assert "test-gpu: queued, position 2 of 3" in bodies[0] and "position 3 of 3" in bodies[1]
        env = {"PYTHONPATH": str(Path(__file__).parent.parent)}
        done = subprocess.run([sys.executable, "-m", "evalbot", "queue", "--config", str(w.config_path), "--json"],
                              capture_output=True, text=True, check=False, env={**os.environ, **env})
        assert done.returncode == 0, done.stderr
        listed = json.loads(done.stdout)
        assert sorted(j["position"] for j in listed) == [1, 2, 3]
        assert {t for j in listed for t in j["targets"]} == {"pr/1", "pr/2", "branch/main"}
        table = subprocess.run([sys.executable, "-m", "evalbot", "queue", "--config", str(w.config_path)],
                               capture_output=True, text=True, check=False, env={**os.environ, **env})
        assert "queued" in table.stdout and "pr/2" in table.stdout and "2/3" in table.stdout


@pytest.mark.slow  # over 10 s on 2 shared cores (worker processes start)
def test_a_worker_refuses_to_start_naming_what_is_missing(tmp_path: Path, url: str):
    with world(tmp_path) as w:
        no_fleet = worker(tmp_path, w.config_path, w.evaldir, "test-gpu", "w-nofleet")
        assert no_fleet.proc.wait(60) == 2 and "[fleet] url is not set" in no_fleet.output()
        unreachable = tmp_path / "unreachable.toml"
        unreachable.write_text(w.config_path.read_text() + '[fleet]\nurl = "postgresql://nobody@127.0.0.1:9/none"\n')
        down = worker(tmp_path, unreachable, w.evaldir, "test-gpu", "w-down")
        assert down.proc.wait(60) == 2 and "cannot use the fleet's database" in down.output(), down.output()
        add_fleet(w.config_path, url)
        missing = worker(tmp_path, w.config_path, w.evaldir, "test-gpu", "w-missing",
                         EVALBOT_FAKE_MISSING="nvcc not found;basket model qwen3moe-tiny missing")
        assert missing.proc.wait(60) == 2
        assert "nvcc not found" in missing.output() and "qwen3moe-tiny missing" in missing.output()
        default = worker(tmp_path, w.config_path, w.evaldir, "test-gpu", "w-default", "evalbot.evaluator:create")
        assert default.proc.wait(120) == 2
        assert "no CUDA GPU visible" in default.output() and "CUDA_VISIBLE_DEVICES=0" in default.output()


@pytest.mark.slow  # over 10 s on 2 shared cores (worker processes start)
def test_the_poller_in_fleet_mode_publishes_what_workers_finish(tmp_path: Path, url: str):
    """`evalbot watch` as a process, in fleet mode, with a worker: verdict, comment, label, status."""
    with world(tmp_path) as w:
        add_fleet(w.config_path, url)
        sha = w.pr_branch(w.repo, "feat", "XS")
        pull = w.standin.open_pull(w.repo, w.repo, "feat", "feat")
        p = poller(tmp_path, w.config_path, w.evaldir, "poller")
        a = worker(tmp_path, w.config_path, w.evaldir, "test-gpu", "w-a")
        try:
            wait_until("the verdict on the PR", lambda: list(pull.labels) == ["eval:XS"],
                       procs=(p, a))
            wait_until("the commit status", lambda: bool(w.standin.statuses.get(sha)), procs=(p, a))
        finally:
            assert p.term() == 0
            a.term()
        assert "fleet mode" in p.output()
        assert [s.state for s in w.standin.statuses[sha]] == ["success"]
        assert len(w.standin.bot_comments(pull, BOT)) == 1


@pytest.mark.slow  # over 10 s on 2 shared cores (worker processes start)
def test_failures_stay_off_the_pr_transient_ones_are_retried_and_failed_ones_after_a_restart(
        tmp_path: Path, url: str):
    with world(tmp_path) as w:
        add_fleet(w.config_path, url)
        flaky = w.pr_branch(w.repo, "flaky", "M", crash_until="fixed", fault="transient")
        broken = w.pr_branch(w.repo, "broken", "S", crash_until="repaired", fault="setup")
        pulls = [w.standin.open_pull(w.repo, w.repo, b, b) for b in ("flaky", "broken")]
        fw = _fleet_watcher(w)
        a = worker(tmp_path, w.config_path, w.evaldir, "test-gpu", "w-a")
        try:
            fw.poll_once()
            wait_until("the first failures", lambda: {("crashed", flaky), ("crashed", broken)} <= set(
                evaluations(w.evaldir)), procs=(a,))
            wait_until("the setup failure to be final", lambda: _state(fw, broken) == JobState.FAILED, procs=(a,))
            w.open_gate("fixed")
            wait_until("the transient one to be retried and done", lambda: fw.poll_once() is not None and list(
                pulls[0].labels) == ["eval:M"], procs=(a,))
            assert _job(fw, flaky).attempts >= 2
            # Nothing about the failure on its PR, no status, nothing in the ledger.
            assert all("`S`" not in c.body for c in w.standin.bot_comments(pulls[1], BOT))
            assert not w.standin.statuses.get(broken) and list(pulls[1].labels) == []
            with Ledger.open(w.cfg.ledger_url) as ledger:
                assert ledger.find(broken) == []
            # The validator fixes its setup and restarts the poller: the failed job runs again.
            w.open_gate("repaired")
            fw.close()
            fw = _fleet_watcher(w)
            fw.run(once=True)
            wait_until("the repaired one's verdict", lambda: fw.poll_once() is not None and list(
                pulls[1].labels) == ["eval:S"], procs=(a,))
        finally:
            fw.close()
            a.term()
        assert [e for e in evaluations(w.evaldir) if e == ("done", broken)] == [("done", broken)]


@pytest.mark.slow  # over 10 s on 2 shared cores (worker processes start)
def test_one_worker_process_per_gpu_pinned_with_cuda_visible_devices(tmp_path: Path, url: str):
    with world(tmp_path) as w:
        add_fleet(w.config_path, url)
        for name in ("one", "two", "three"):
            w.pr_branch(w.repo, name, "S")
            w.standin.open_pull(w.repo, w.repo, name, name)
        fw = _fleet_watcher(w)
        try:
            fw.poll_once()
        finally:
            fw.close()
        box = Proc(tmp_path, "box", ["worker", "--config", str(w.config_path), "--gpus", "0,1", "--gpu-class",
                                     "test-gpu", "--evaluator", "fleet_support:create_quick", "--drain"],
                   _env(w.evaldir, EVALBOT_FAKE_EVAL_S="1.0"))
        assert box.proc.wait(120) == 0, box.output()
        starts = [parts for parts in log_lines(w.evaldir) if parts[0] == "start"]
        assert len(starts) == 4  # three PRs and the base branch, each once
        # Two processes, each pinned to its own GPU.
        assert {p[3] for p in starts} == {"0", "1"} and len({p[2] for p in starts}) == 2
        assert "gpu0" in box.output() and "gpu1" in box.output()
        jobs = fw.store.listing(include_finished=True)
        assert {j.job.state for j in jobs} == {JobState.DONE} and {j.job.gpu for j in jobs} == {"0", "1"}


def test_evalbot_queue_without_a_fleet_lists_the_embedded_queue(tmp_path: Path):
    """The default (no [fleet] url): `evalbot queue` shows the watch_queue rows `evalbot watch` runs."""
    with world(tmp_path) as w:
        w.pr_branch(w.repo, "one", "S")
        w.standin.open_pull(w.repo, w.repo, "one", "one")
        w.watcher()._discover(PollReport())  # queued, not evaluated
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
        done = subprocess.run([sys.executable, "-m", "evalbot", "queue", "--config", str(w.config_path), "--json"],
                              capture_output=True, text=True, check=False, env=env)
        assert done.returncode == 0, done.stderr
        listed = json.loads(done.stdout)
        assert [(j["targets"], j["position"], j["state"]) for j in listed] == [
            (["pr/1"], 2, "queued"), (["branch/main"], 1, "queued")]
