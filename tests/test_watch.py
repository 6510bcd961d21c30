"""The poll loop in-process, against the GitHub stand-in, a real ledger and the scripted evaluator."""

from __future__ import annotations

import threading
import time

import pytest
from fake_evaluator import evaluations
from watch_support import BOT, settle, world

from evalbot.github.sticky import MARKER
from evalbot.pipeline import Verdict
from evalbot.queue.store import State


def dones(evaldir):
    return [sha for event, sha in evaluations(evaldir) if event == "done"]


def test_new_pr_is_evaluated_once_commented_labelled_recorded(tmp_path):
    with world(tmp_path) as w:
        fork = w.standin.fork(w.repo, "alice")
        sha = w.pr_branch(fork, "faster", "M", reason="6.1 % faster")
        pull = w.standin.open_pull(w.repo, fork, "faster", "Faster attention", author="alice")
        watcher = w.watcher()

        report = watcher.poll_once()
        assert report.ok and report.evaluated == 2  # the PR head and the base branch head
        again = watcher.poll_once()
        assert again.evaluated == 0 and again.queued == 0 and again.published == 0

        assert dones(w.evaldir).count(sha) == 1
        ours = w.standin.bot_comments(pull, BOT)
        assert len(ours) == 1 and MARKER in ours[0].body and "`M`" in ours[0].body
        assert "6.1 % faster" in ours[0].body
        assert pull.labels == ["eval:M"]
        label = w.repo.labels["eval:M"]
        assert label.color == "5cc26f" and "evalbot" in label.description
        statuses = w.standin.statuses[sha]
        assert [(s.state, s.context) for s in statuses] == [("success", "evalbot")]
        assert statuses[0].description.startswith("M: 6.1 % faster")

        with w.ledger() as ledger:
            rows = ledger.find(sha)
            assert [(r.pr, r.label, r.author) for r in rows] == [(pull.number, "M", "alice")]
            assert ledger.verify().ok
            # The base branch head became the first frontier.
            assert ledger.frontier("qwen3moe-tiny+gemma4-tiny", "test-gpu").commit_sha == w.standin.head(
                w.repo, "main")


def test_new_commit_updates_the_same_comment_keeps_history_and_swaps_label(tmp_path):
    with world(tmp_path) as w:
        first = w.pr_branch(w.repo, "feature", "S", reason="first try")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        watcher.poll_once()
        second = w.pr_branch(w.repo, "feature", "REJECT", reason="KL gate failed on gemma4")
        watcher.poll_once()

        ours = w.standin.bot_comments(pull, BOT)
        assert len(ours) == 1
        body = ours[0].body
        assert f"`REJECT` for `{second[:12]}`" in body
        history = body.split("<details>", 1)[1]
        assert first[:12] in history and "first try" in history and "`S`" in history
        assert pull.labels == ["eval:REJECT"]
        assert [s.state for s in w.standin.statuses[second]] == ["failure"]
        assert dones(w.evaldir).count(first) == 1 and dones(w.evaldir).count(second) == 1


def test_force_push_before_evaluation_drops_the_old_head(tmp_path):
    with world(tmp_path) as w:
        old = w.pr_branch(w.repo, "feature", "S")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        # The force-push lands between the listing and the pre-evaluation read of the PR.
        w.standin.on_request(lambda: w.standin.force_push(w.repo, "feature", {"EVAL": "label=L\n"}),
                             method="GET", path=r"/repos/acme/kernels/pulls/1")
        watcher.poll_once()
        assert old not in dones(w.evaldir)
        assert pull.head_sha in dones(w.evaldir)
        entries = {e.sha: e for e in watcher.queue.all()}
        assert entries[old].state is State.DROPPED and "superseded" in (entries[old].last_error or "")
        assert pull.labels == ["eval:L"]


def test_closed_pr_is_dropped_and_not_evaluated(tmp_path):
    with world(tmp_path) as w:
        sha = w.pr_branch(w.repo, "feature", "S")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        w.standin.on_request(lambda: w.standin.close_pull(pull), method="GET",
                             path=r"/repos/acme/kernels/pulls/1")
        watcher.poll_once()
        assert sha not in dones(w.evaldir)
        assert w.standin.bot_comments(pull, BOT) == []
        assert [e.state for e in watcher.queue.all() if e.sha == sha] == [State.DROPPED]


@pytest.mark.parametrize(("drafts", "forks", "expected"), [
    (False, True, {"fork"}),
    (True, True, {"fork", "draft"}),
    (False, False, set()),
    (True, False, {"draft"}),
])
def test_drafts_and_forks_follow_the_config(tmp_path, drafts, forks, expected):
    with world(tmp_path, include_drafts=drafts, include_forks=forks) as w:
        fork = w.standin.fork(w.repo, "bob")
        shas = {"fork": w.pr_branch(fork, "f", "S"), "draft": w.pr_branch(w.repo, "d", "XS")}
        w.standin.open_pull(w.repo, fork, "f", "From a fork")
        w.standin.open_pull(w.repo, w.repo, "d", "Draft", draft=True)
        w.watcher().poll_once()
        evaluated = {name for name, sha in shas.items() if sha in dones(w.evaldir)}
        assert evaluated == expected


def test_draft_made_ready_is_evaluated_then(tmp_path):
    with world(tmp_path) as w:
        sha = w.pr_branch(w.repo, "d", "XS")
        pull = w.standin.open_pull(w.repo, w.repo, "d", "Draft", draft=True)
        watcher = w.watcher()
        watcher.poll_once()
        assert sha not in dones(w.evaldir)
        w.standin.set_draft(pull, False)
        watcher.poll_once()
        assert dones(w.evaldir).count(sha) == 1


def test_evaluator_crash_is_retried_after_a_delay_then_failed_and_kept_off_the_pr(tmp_path):
    with world(tmp_path, max_attempts=2) as w:
        sha = w.pr_branch(w.repo, "feature", "S", crash="1")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        reports = settle(watcher)
        assert not reports[0].ok and len(reports) >= 2  # the retry came in a later pass, after its delay
        starts = [s for e, s in evaluations(w.evaldir) if e == "start" and s == sha]
        assert len(starts) == 2
        (entry,) = [e for e in watcher.queue.all() if e.sha == sha]
        assert entry.state is State.FAILED and "simulated evaluator failure" in (entry.last_error or "")
        assert w.standin.bot_comments(pull, BOT) == [] and sha not in w.standin.statuses
        assert not any(name.startswith("eval:") for name in pull.labels)
        watcher.poll_once()
        assert len([s for e, s in evaluations(w.evaldir) if e == "start" and s == sha]) == 2


def test_publish_failure_is_retried_without_evaluating_again(tmp_path):
    with world(tmp_path) as w:
        sha = w.pr_branch(w.repo, "feature", "M")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        # POSTs are not retried in the transport: each 502 fails a publish attempt. A pass tries
        # twice (after the evaluation, and after the discovery that follows it).
        w.standin.fail(502, times=2, method="POST", path=r"/repos/acme/kernels/issues/1/comments")
        first = watcher.poll_once()
        assert not first.ok
        (entry,) = [e for e in watcher.queue.all() if e.sha == sha]
        assert entry.published_at is None and entry.publish_attempts == 2
        assert w.standin.bot_comments(pull, BOT) == []
        second = watcher.poll_once()
        assert second.ok and second.published == 1 and second.evaluated == 0
        assert len(w.standin.bot_comments(pull, BOT)) == 1 and pull.labels == ["eval:M"]
        assert dones(w.evaldir).count(sha) == 1


def test_stop_abandons_the_running_evaluation_cleanly(tmp_path):
    with world(tmp_path) as w:
        sha = w.pr_branch(w.repo, "feature", "M", gate="never")
        w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        def stop_once_started() -> None:
            while ("start", sha) not in evaluations(w.evaldir):
                time.sleep(0.02)
            watcher.request_stop()

        stopper = threading.Thread(target=stop_once_started)
        stopper.start()
        watcher.run()  # returns once stopped, without finishing the gated evaluation
        stopper.join()
        (entry,) = [e for e in watcher.queue.all() if e.sha == sha]
        assert entry.state is State.QUEUED and entry.attempts == 0
        assert ("cancelled", sha) in evaluations(w.evaldir)


def test_dry_run_evaluates_but_writes_nothing(tmp_path):
    with world(tmp_path) as w:
        sha = w.pr_branch(w.repo, "feature", "M")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher(dry_run=True)
        assert watcher.poll_once().ok
        assert sha in dones(w.evaldir)
        assert w.standin.writes() == []
        assert w.standin.bot_comments(pull, BOT) == [] and pull.labels == []
        assert not (tmp_path / "data" / "ledger.sqlite").exists()


def test_low_rate_limit_pauses_the_poller_without_spending_requests(tmp_path):
    with world(tmp_path) as w:
        watcher = w.watcher()
        watcher.poll_once()
        w.standin.remaining = 40  # below the reserve of 50
        watcher.client.branch("main")  # any answer carries the X-RateLimit-* headers
        assert watcher.client.rate_limit_wait() > 3000
        sent = len(w.standin.requests)
        thread = threading.Thread(target=watcher.poll_once)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive()  # pausing until the reset
        assert len(w.standin.requests) == sent
        watcher.request_stop()
        thread.join(5.0)
        assert not thread.is_alive()


def test_unusable_verdict_is_an_evaluator_failure_not_a_crash(tmp_path):
    class Unserialisable:
        def evaluate(self, job, cancel):
            return Verdict("M", ("why",), "md", "gpu", "policy", document={"when": object()})

    with world(tmp_path, max_attempts=1) as w:
        sha = w.pr_branch(w.repo, "feature", "M")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        watcher.evaluator = Unserialisable()
        report = watcher.poll_once()
        assert not report.ok
        (entry,) = [e for e in watcher.queue.all() if e.sha == sha]
        assert entry.state is State.FAILED and "unusable verdict" in (entry.last_error or "")
        assert w.standin.bot_comments(pull, BOT) == [] and sha not in w.standin.statuses
