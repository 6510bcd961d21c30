"""Against the GitHub stand-in: failed evaluations (the validator's infrastructure failed) kept to
the queue and the operator's log, never on the PR or in the public ledger, retried after a restart
only; and a PR whose head returns to an evaluated commit (A1 → A2 → A1) republished from the stored
verdict without evaluating again."""

from __future__ import annotations

import threading
import time

from fake_evaluator import evaluations
from watch_support import BOT, TOKEN, World, settle, world

from evalbot.config import Config, GithubConfig, LedgerConfig, PathsConfig
from evalbot.queue.store import State
from evalbot.watch import ERROR_MAX_CHARS, clean_error, secrets_of

BASKET = "qwen3moe-tiny+gemma4-tiny"


def events(w: World, event: str, sha: str) -> int:
    return sum(1 for e, s in evaluations(w.evaldir) if e == event and s == sha)


def idle_requests(w: World, watcher) -> list[str]:
    """The requests one poll makes when nothing changed."""
    before = len(w.standin.requests)
    report = watcher.poll_once()
    assert report.ok and report.evaluated == 0 and report.published == 0 and report.queued == 0
    return [f"{r.method} {r.path} {r.status}" for r in w.standin.requests[before:]]


# -- failed evaluations ----------------------------------------------------------------------------


def test_infrastructure_failure_stays_off_the_pr_and_the_ledger(tmp_path, caplog):
    with world(tmp_path, max_attempts=2) as w:
        cfg = w.cfg
        w.pr_branch(w.repo, "feature", "S", reason="first try")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature", author="alice")
        watcher = w.watcher()
        assert watcher.poll_once().ok
        assert pull.labels == ["eval:S"]
        (before,) = w.standin.bot_comments(pull, BOT)
        with w.ledger() as ledger:
            frontier = ledger.frontier(BASKET, "test-gpu")
            assert frontier is not None
            rows_before = ledger.count()
        writes_before = len(w.standin.writes())

        # The infrastructure breaks with an error that quotes secrets: the token in a clone URL, the
        # signing key's path, the token file's path.
        error = (f"fetch https://x-access-token:{TOKEN}@github.com/acme/kernels.git failed; "
                 f"cannot read {cfg.ledger.signing_key}; token file {cfg.github.token_file}; "
                 f"Authorization: token {TOKEN}")
        a2 = w.standin.commit(w.repo, "feature", {"EVAL": f"label=M\ncrash=1\nerror={error}\n"})
        reports = settle(watcher)
        assert not reports[0].ok and reports[0].waiting == 1  # the first attempt failed: a retry is due later
        assert events(w, "start", a2) == 2 and events(w, "done", a2) == 0
        assert sum(r.failed for r in reports) == 1

        (entry,) = [e for e in watcher.queue.all() if e.sha == a2]
        assert entry.state is State.FAILED and entry.attempts == 2
        assert entry.recorded_at is None and entry.published_at is None and entry.shown_at is None
        assert "fetch https://[redacted]@github.com/acme/kernels.git failed" in (entry.last_error or "")

        # The operator's log has it, sanitized; the PR and the ledger have nothing of it.
        logged = "\n".join(r.getMessage() for r in caplog.records if a2[:12] in r.getMessage())
        assert "github.com/acme/kernels.git failed" in logged and "Nothing is published" in logged
        for secret in (TOKEN, cfg.ledger.signing_key, cfg.github.token_file):
            assert secret not in caplog.text
        assert len(w.standin.writes()) == writes_before  # no comment, label or status written
        assert a2 not in w.standin.statuses
        (comment,) = w.standin.bot_comments(pull, BOT)
        assert comment.body == before.body and "could not be completed" not in comment.body
        with w.ledger() as ledger:
            assert ledger.count() == rows_before and ledger.find(a2) == []
            assert ledger.frontier(BASKET, "test-gpu").commit_sha == frontier.commit_sha
            assert ledger.verify().ok

        # Nothing left to do: the next polls are idle (O(1) requests) and evaluate nothing.
        assert len(idle_requests(w, watcher)) == 2
        assert events(w, "start", a2) == 2


def test_failed_base_branch_commit_never_advances_the_frontier(tmp_path):
    with world(tmp_path, max_attempts=1) as w:
        watcher = w.watcher()
        assert watcher.poll_once().ok
        first = w.standin.head(w.repo, "main")
        broken = w.standin.commit(w.repo, "main", {"EVAL": "label=XL\nspeedup=1.5\ncrash=1\n"})
        assert not watcher.poll_once().ok
        assert broken not in w.standin.statuses
        with w.ledger() as ledger:
            assert ledger.find(broken) == []
            assert [a.commit_sha for a in ledger.frontier_history()] == [first]
            assert ledger.verify().ok
        # A PR opened now is measured against the old frontier, not the failed commit.
        sha = w.pr_branch(w.repo, "feature", "S")
        w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher.poll_once()
        (entry,) = [e for e in watcher.queue.all() if e.sha == sha]
        assert entry.verdict is not None and entry.verdict["baseline_sha"] == first


def test_failed_commit_is_retried_after_a_restart_only(tmp_path):
    with world(tmp_path, max_attempts=2) as w:
        sha = w.pr_branch(w.repo, "feature", "M", crash_until="fixed")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        other = w.pr_branch(w.repo, "other", "S", crash="1")
        moved = w.standin.open_pull(w.repo, w.repo, "other", "Other")
        watcher = w.watcher()
        settle(watcher)
        assert events(w, "start", sha) == 2 and events(w, "start", other) == 2
        # The same process does not try again, however many polls follow.
        watcher.poll_once()
        watcher.poll_once()
        assert events(w, "start", sha) == 2

        # `other` moves on to a good commit (evaluated: a new head); its failed commit is no head now.
        fixed_other = w.standin.force_push(w.repo, "other", {"EVAL": "label=XS\n"})
        watcher.poll_once()
        assert events(w, "done", fixed_other) == 1

        # The validator fixes its setup and restarts evalbot: the failed head runs again, once.
        w.open_gate("fixed")
        restarted = w.watcher()
        report = restarted.poll_once()
        assert report.ok and report.evaluated == 1
        assert events(w, "start", sha) == 3 and events(w, "done", sha) == 1
        assert events(w, "start", other) == 2  # not a head any more: not retried
        (comment,) = w.standin.bot_comments(pull, BOT)
        assert f"`M` for `{sha[:12]}`" in comment.body
        assert pull.labels == ["eval:M"]
        assert [s.state for s in w.standin.statuses[sha]] == ["success"]  # the failures were never shown
        assert moved.labels == ["eval:XS"]
        with w.ledger() as ledger:
            assert [(r.status, r.label) for r in ledger.find(sha)] == [("complete", "M")]
            assert ledger.find(other) == []
            assert ledger.verify().ok

        # A restart with nothing failed evaluates nothing.
        again = w.watcher()
        assert again.poll_once().evaluated == 0
        assert events(w, "start", sha) == 3


def test_a_retry_that_fails_again_is_not_retried_in_that_process_and_never_published(tmp_path):
    with world(tmp_path, max_attempts=1) as w:
        sha = w.pr_branch(w.repo, "feature", "M", crash="1")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        w.watcher().poll_once()
        restarted = w.watcher()
        restarted.poll_once()
        restarted.poll_once()
        assert events(w, "start", sha) == 2
        assert w.standin.bot_comments(pull, BOT) == [] and sha not in w.standin.statuses
        with w.ledger() as ledger:
            assert ledger.find(sha) == []
            assert ledger.verify().ok


def test_one_commit_in_two_prs_is_evaluated_once_even_when_it_fails(tmp_path):
    with world(tmp_path, max_attempts=2) as w:
        sha = w.pr_branch(w.repo, "feature", "M", crash_until="fixed")
        fork = w.standin.fork(w.repo, "bob")  # the fork's branch is the same commit
        first = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        second = w.standin.open_pull(w.repo, fork, "feature", "Same commit from a fork")
        assert first.head_sha == second.head_sha == sha
        watcher = w.watcher()
        settle(watcher)
        watcher.poll_once()
        assert events(w, "start", sha) == 2  # one round of max_attempts, not one per PR
        for pull in (first, second):
            assert w.standin.bot_comments(pull, BOT) == []
        with w.ledger() as ledger:
            assert ledger.find(sha) == []

        w.open_gate("fixed")
        restarted = w.watcher()  # both PRs' failed rows are retried; the commit runs once
        restarted.poll_once()
        assert events(w, "start", sha) == 3 and events(w, "done", sha) == 1
        assert first.labels == second.labels == ["eval:M"]
        with w.ledger() as ledger:
            assert [r.status for r in ledger.find(sha)] == ["complete"] and ledger.verify().ok


def test_clean_error_redacts_secrets_and_bounds_the_text(tmp_path):
    key = tmp_path / "keys" / "validator.pem"
    token_file = tmp_path / "secrets" / "gh"
    cfg = Config(github=GithubConfig(token_file=str(token_file)),
                 ledger=LedgerConfig(signing_key=str(key)), paths=PathsConfig(data_dir=str(tmp_path / "data")))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "holdout_seed").write_text("8141592653589793\n")
    secrets = secrets_of(cfg, "s3cr3t-token-value")
    assert {"s3cr3t-token-value", str(key), str(token_file), "8141592653589793"} <= set(secrets)
    cases = {
        f"open {token_file} failed": "open [redacted] failed",
        "git clone https://x-access-token:abcdef123456@github.com/a/b.git": "git clone https://[redacted]@github.com/a/b.git",
        "bad credentials ghp_0123456789abcdefABCDEF0123456789abcd": "bad credentials [redacted]",
        "header Authorization: Bearer abcdefghijklmnop1234": "header Authorization: [redacted]",
        "env GITHUB_TOKEN=abcdefgh12345678 set": "env GITHUB_[redacted] set",
        "seed 8141592653589793 rejected": "seed [redacted] rejected",
        "cannot load /home/v/.config/evalbot/signing.key: denied": "cannot load [secret path]: denied",
        "-----BEGIN OPENSSH PRIVATE KEY----- abc": "[redacted]",
        "unexpected token: '}' at 3 tokens/s": "unexpected token: '}' at 3 tokens/s",
        "line one\n  line two\ttabbed": "line one line two tabbed",
    }
    for text, expected in cases.items():
        assert clean_error(text, secrets) == expected, text
    long = clean_error("x" * 5000)
    assert len(long) == ERROR_MAX_CHARS and long.endswith("…")
    assert clean_error(f"no key at {key}", secrets) == "no key at [redacted]"
    assert clean_error(f"no key at {key}") == "no key at [secret path]"  # the pattern, without the list


# -- A1 → A2 → A1 ----------------------------------------------------------------------------------


def test_head_back_to_an_evaluated_commit_republishes_its_stored_verdict(tmp_path):
    with world(tmp_path) as w:
        a1 = w.pr_branch(w.repo, "feature", "S", reason="first try")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        watcher.poll_once()
        a2 = w.standin.force_push(w.repo, "feature", {"EVAL": "label=REJECT\nreason=KL gate failed\n"})
        watcher.poll_once()
        assert pull.labels == ["eval:REJECT"]

        w.standin.push_existing(w.repo, "feature", a1)  # git push -f origin A1:feature
        assert pull.head_sha == a1
        report = watcher.poll_once()
        assert report.ok and report.evaluated == 0 and report.published == 1 and report.queued == 0
        assert events(w, "start", a1) == 1 and events(w, "start", a2) == 1

        (comment,) = w.standin.bot_comments(pull, BOT)
        top, history = comment.body.split("<details>", 1)
        assert f"`S` for `{a1[:12]}`" in top and "first try" in top
        assert a2[:12] in history and "`REJECT`" in history and "KL gate failed" in history
        assert a1[:12] not in history  # the current commit is on top, not in its own history
        assert pull.labels == ["eval:S"]
        assert [s.state for s in w.standin.statuses[a1]][-1] == "success"
        assert [s.state for s in w.standin.statuses[a2]] == ["failure"]
        with w.ledger() as ledger:
            assert len(ledger.find(a1)) == 1 and len(ledger.find(a2)) == 1 and ledger.verify().ok

        # Converged: the next poll is idle again.
        assert len(idle_requests(w, watcher)) == 2
        # And back to A2: its stored REJECT comes back, still without an evaluation; after a restart too.
        w.standin.push_existing(w.repo, "feature", a2)
        restarted = w.watcher()
        assert restarted.poll_once().evaluated == 0
        (comment,) = w.standin.bot_comments(pull, BOT)
        assert f"`REJECT` for `{a2[:12]}`" in comment.body.split("<details>", 1)[0]
        assert pull.labels == ["eval:REJECT"]
        assert events(w, "start", a1) == 1 and events(w, "start", a2) == 1


def test_head_back_to_a_failed_commit_publishes_nothing_and_waits_for_a_restart(tmp_path):
    with world(tmp_path, max_attempts=1) as w:
        a1 = w.pr_branch(w.repo, "feature", "M", crash="1")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        watcher.poll_once()
        a2 = w.standin.force_push(w.repo, "feature", {"EVAL": "label=L\n"})
        watcher.poll_once()
        assert pull.labels == ["eval:L"]
        w.standin.push_existing(w.repo, "feature", a1)
        report = watcher.poll_once()
        assert report.evaluated == 0 and report.published == 0  # its failure is not public
        assert events(w, "start", a1) == 1 and a1 not in w.standin.statuses
        (comment,) = w.standin.bot_comments(pull, BOT)
        assert f"`L` for `{a2[:12]}`" in comment.body and a1[:12] not in comment.body
        restarted = w.watcher()  # a restart retries the failed head once
        restarted.poll_once()
        assert events(w, "start", a1) == 2
        with w.ledger() as ledger:
            assert ledger.find(a1) == []


def test_head_back_to_a_commit_only_published_as_a_status_is_shown_on_the_pr(tmp_path):
    """A1 finishes after the PR moved to A2 (A1 gets a status only); A2 finishes after the PR moved
    back to A1. The comment must end up on A1, with A2 in its history."""
    with world(tmp_path) as w:
        a1 = w.pr_branch(w.repo, "feature", "S", gate="a1", reason="first")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher()
        a2: list[str] = []

        def wait_for(sha: str) -> None:
            deadline = time.monotonic() + 30
            while not events(w, "start", sha) and time.monotonic() < deadline:
                time.sleep(0.02)

        def script() -> None:
            wait_for(a1)
            a2.append(w.standin.force_push(w.repo, "feature", {"EVAL": "label=M\ngate=a2\n"}))
            w.open_gate("a1")
            wait_for(a2[0])
            w.standin.push_existing(w.repo, "feature", a1)
            w.open_gate("a2")

        thread = threading.Thread(target=script)
        thread.start()
        watcher.poll_once()
        thread.join(30)
        assert events(w, "start", a1) == 1 and events(w, "start", a2[0]) == 1
        (comment,) = w.standin.bot_comments(pull, BOT)
        top, history = comment.body.split("<details>", 1)
        assert f"`S` for `{a1[:12]}`" in top and a2[0][:12] in history
        assert pull.labels == ["eval:S"]
        assert [s.state for s in w.standin.statuses[a2[0]]] == ["success"]
        assert len(idle_requests(w, watcher)) == 2


def test_dry_run_republishes_nothing_on_idle_polls_and_writes_nothing(tmp_path):
    with world(tmp_path) as w:
        a1 = w.pr_branch(w.repo, "feature", "S")
        w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        watcher = w.watcher(dry_run=True)
        assert watcher.poll_once().published == 2  # the PR head and the base branch head, "published"
        assert watcher.poll_once().published == 0
        w.standin.force_push(w.repo, "feature", {"EVAL": "label=M\n"})
        watcher.poll_once()
        w.standin.push_existing(w.repo, "feature", a1)
        report = watcher.poll_once()
        assert report.evaluated == 0 and report.published == 1
        assert watcher.poll_once().published == 0
        assert events(w, "start", a1) == 1
        assert w.standin.writes() == []
