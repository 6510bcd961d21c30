"""The scripted scenario: ``evalbot watch`` as a real process through a bad day on GitHub.

Three PRs — A force-pushed while its first head is being evaluated, B from a fork, C closed while
queued — and the base branch. The bot is SIGKILLed in the middle of B's evaluation and restarted
into a GitHub that answers 502s, a secondary rate limit on a comment and an exhausted primary rate
limit for a while. At the end: one comment per evaluated PR, the right labels, every commit that
had to be evaluated evaluated to completion exactly once, and a ledger that verifies.
"""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

import pytest
from fake_evaluator import evaluations
from watch_support import BOT, TOKEN, Bot, world

from evalbot.github.sticky import MARKER
from evalbot.queue.store import JobQueue, State

pytestmark = pytest.mark.slow


def count(evaldir: Path, event: str) -> Counter[str]:
    return Counter(sha for e, sha in evaluations(evaldir) if e == event)


def test_bad_day_scenario(tmp_path):
    with world(tmp_path, max_attempts=3) as w:
        s = w.standin
        main_sha = s.head(w.repo, "main")
        c_sha = w.pr_branch(w.repo, "c", "XS", reason="tiny")
        pull_c = s.open_pull(w.repo, w.repo, "c", "C: will be closed")
        fork = s.fork(w.repo, "bob")
        b_sha = w.pr_branch(fork, "b", "M", reason="6 % faster", gate="b")
        pull_b = s.open_pull(w.repo, fork, "b", "B: from a fork", author="bob")
        a1 = w.pr_branch(w.repo, "a", "S", reason="first version", gate="a1")
        pull_a = s.open_pull(w.repo, w.repo, "a", "A: force-pushed mid-evaluation")

        # -- first run: A's first head is being evaluated when its author force-pushes ------------
        bot = Bot(w, "run1")
        bot.wait_for("A1 to start", lambda: count(w.evaldir, "start")[a1] == 1)
        a2 = s.force_push(w.repo, "a", {"EVAL": "label=L\nreason=second version\n", "kernel.cu": "// v2\n"})
        w.open_gate("a1")
        bot.wait_for("B to start", lambda: count(w.evaldir, "start")[b_sha] == 1)
        s.close_pull(pull_c)  # C is queued behind B: it must be dropped, never evaluated

        # -- the bot dies mid-evaluation; GitHub has a bad day ------------------------------------
        bot.proc.send_signal(signal.SIGKILL)
        assert bot.proc.wait(10) == -signal.SIGKILL
        s.fail(502, times=4, method="GET")
        s.secondary_rate_limit(retry_after=1, times=1, method="POST", path=r".*/issues/\d+/comments")
        # The primary limit runs out at the restarted bot's first request, whenever that comes.
        s.on_request(lambda: s.exhaust_rate_limit(2.0), method="GET", path=r"/repos/acme/kernels/pulls")

        bot = Bot(w, "run2")
        bot.wait_for("B to restart", lambda: count(w.evaldir, "start")[b_sha] == 2)
        second = Bot(w, "intruder", "--once")
        assert second.proc.wait(30) == 2
        assert "another evalbot watch" in second.output() and "is running for this ledger" in second.output()
        w.open_gate("b")

        def settled() -> bool:
            queue = JobQueue(w.ledger().engine)
            entries = queue.all()
            return (any(e.sha == a2 for e in entries)
                    and all(e.state in (State.DONE, State.DROPPED) for e in entries)
                    and all(e.published_at for e in entries if e.state is State.DONE))

        bot.wait_for("every result to be published", settled, timeout=90)
        bot.proc.send_signal(signal.SIGTERM)
        assert bot.proc.wait(30) == 0, bot.output()

        # -- what GitHub shows ------------------------------------------------------------------------
        (comment_a,) = s.bot_comments(pull_a, BOT)
        current, history = comment_a.body.split("<details>", 1)
        assert comment_a.body.startswith(MARKER)
        assert f"`L` for `{a2[:12]}`" in current and "second version" in current
        assert a1[:12] in history and "`S`" in history and "first version" in history
        (comment_b,) = s.bot_comments(pull_b, BOT)
        assert f"`M` for `{b_sha[:12]}`" in comment_b.body
        assert s.bot_comments(pull_c, BOT) == []
        assert pull_a.labels == ["eval:L"] and pull_b.labels == ["eval:M"] and pull_c.labels == []
        assert [st.state for st in s.statuses[a1]] == ["success"]  # the superseded head: status only
        assert {st.state for sha in (a2, b_sha, main_sha) for st in s.statuses[sha]} == {"success"}
        assert c_sha not in s.statuses

        # -- every commit evaluated to completion exactly once; B started twice (killed once) -------
        done = count(w.evaldir, "done")
        assert done == Counter({main_sha: 1, a1: 1, a2: 1, b_sha: 1})
        assert count(w.evaldir, "start")[b_sha] == 2 and c_sha not in count(w.evaldir, "start")

        # -- the ledger -----------------------------------------------------------------------------
        with w.ledger() as ledger:
            assert ledger.verify().ok
            for sha, label in ((main_sha, "none"), (a1, "S"), (a2, "L"), (b_sha, "M")):
                assert [(r.label, r.status) for r in ledger.find(sha)] == [(label, "complete")]
            assert ledger.count() == 4
            assert ledger.frontier("qwen3moe-tiny+gemma4-tiny", "test-gpu").commit_sha == main_sha
        queue = {e.sha: e for e in JobQueue(w.ledger().engine).all()}
        assert queue[c_sha].state is State.DROPPED and "closed" in (queue[c_sha].last_error or "")
        assert queue[b_sha].attempts == 2

        # -- the bad day really happened, and nothing leaked ----------------------------------------
        statuses = Counter(r.status for r in s.requests)
        assert statuses[502] >= 4 and statuses[403] >= 2 and statuses[304] >= 1
        for name in ("run1", "run2", "intruder"):
            assert TOKEN not in (w.root / f"{name}.out").read_text()
        log = (w.root / "run2.out").read_text()
        assert "re-queued" in log and f"dropped pr/{pull_c.number}" in log and "publishing pr/" in log
