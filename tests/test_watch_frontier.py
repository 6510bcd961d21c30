"""Frontier-delta: when a merge moves the frontier, every open verdict measured against the old one is
queued again and re-measured against the new one; the comment and the ledger keep both verdicts with
their frontiers. Real git, the GitHub stand-in, a real ledger and the scripted evaluator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fake_evaluator import evaluations
from fleet_support import add_fleet, fleet_url, poller, wait_until, worker
from markdown_support import tokens
from test_ledger_support import PG_ENV  # noqa: F401  (the database the fleet fixture uses)
from watch_support import BASKET_TINY, BOT, world

from evalbot import ranking
from evalbot.queue.store import State
from ledger import checkpoint as notes

A_FILES = {"EVAL": "label=M\nreason=A: 6 % faster gemv\n", "gemv_a.cu": "// A's gemv\n"}
B_FILES = {"EVAL": "label=M\nreason=B: 6 % faster gemv\nover=gemv_a.cu:none:B adds nothing over A\n",
           "gemv_b.cu": "// B's gemv, the same idea\n"}


def test_a_merge_moves_the_frontier_and_the_other_pr_is_measured_again(tmp_path):
    with world(tmp_path) as w:
        s = w.standin
        main0 = s.head(w.repo, "main")
        a = s.commit(w.repo, "a", A_FILES, author="alice")
        b = s.commit(w.repo, "b", B_FILES, author="bob")
        pull_a = s.open_pull(w.repo, w.repo, "a", "A: faster gemv", author="alice")
        pull_b = s.open_pull(w.repo, w.repo, "b", "B: faster gemv too", author="bob")
        watcher = w.watcher()
        assert watcher.poll_once().ok
        assert pull_a.labels == pull_b.labels == ["eval:M"]  # both against main0
        _, front, ranked = ranking.read(w.cfg.data_dir)
        assert front == main0 and [(c.pr, c.label, c.current) for c in ranked] == [
            (pull_a.number, "M", True), (pull_b.number, "M", True)]
        shown = subprocess.run([sys.executable, "-m", "evalbot", "frontier", "queue", "--config", str(w.config_path)],
                               capture_output=True, text=True, check=True).stdout
        assert f"#{pull_a.number}" in shown and "alice" in shown and "bob" in shown

        # A merges: main gets A's tree; the base job verifies it and the frontier moves to it.
        s.close_pull(pull_a)
        main1 = s.commit(w.repo, "main", A_FILES, message="Merge #1", author="alice")
        watcher.poll_once()
        with w.ledger() as ledger:
            assert ledger.frontier(BASKET_TINY, "test-gpu").commit_sha == main1
        # The next pass sees B's verdict measured against main0 and queues it again (one pass may do both).
        watcher.poll_once()
        watcher.poll_once()

        done_b = [sha for event, sha in evaluations(w.evaldir) if event == "done" and sha == b]
        assert len(done_b) == 2  # once against main0, once against main1
        (entry,) = [e for e in watcher.queue.all() if e.sha == b]
        assert entry.state == State.DONE and entry.verdict["label"] == "none"
        assert entry.verdict["baseline_sha"] == main1
        assert pull_b.labels == ["eval:none"]
        (comment,) = s.bot_comments(pull_b, BOT)
        assert "B adds nothing over A" in comment.body
        assert f"against frontier {main0[:12]}" in comment.body  # the superseded verdict, with its frontier
        with w.ledger() as ledger:
            rows = sorted(ledger.find(b), key=lambda r: r.seq)
            assert [(r.label, r.frontier_commit) for r in rows] == [("M", main0), ("none", main1)]
            assert ledger.verify().ok
            # The comment carries the signed checkpoint that includes B's newest verdict, byte for
            # byte, and its root is the ledger's at that size.
            (cp,) = [t.content for t in tokens(comment.body) if t.type == "fence" and t.content.startswith("evalbot.")]
            signed = notes.parse(cp).checkpoint
            assert signed.size >= rows[-1].seq and ledger.tree_root(signed.size)[1] == signed.root
        assert f"evalbot ledger verify-proof proof-{rows[-1].seq}.json" in comment.body
        # B's none is no win: the merge queue is empty (A is merged, B adds nothing).
        assert ranking.read(w.cfg.data_dir)[1:] == (main1, [])
        # A is closed: nothing re-queued for it; and a further pass changes nothing.
        assert [sha for event, sha in evaluations(w.evaldir) if event == "done"].count(a) == 1
        again = watcher.poll_once()
        assert again.evaluated == 0 and again.queued == 0


def test_a_reject_is_not_measured_again_when_the_frontier_moves(tmp_path):
    with world(tmp_path) as w:
        s = w.standin
        bad = w.pr_branch(w.repo, "bad", "REJECT", reason="gate top1 failed")
        s.open_pull(w.repo, w.repo, "bad", "Broken", author="carol")
        watcher = w.watcher()
        watcher.poll_once()
        s.commit(w.repo, "main", {"EVAL": "label=S\nreason=merged elsewhere\n", "x.cu": "// x\n"})
        for _ in range(3):
            watcher.poll_once()
        assert [sha for event, sha in evaluations(w.evaldir) if event == "done"].count(bad) == 1


@pytest.mark.postgres
@pytest.mark.slow  # a poller and a worker process start (over 10 s on 2 shared cores)
def test_the_fleet_measures_the_open_pr_again_when_a_merge_moves_the_frontier(tmp_path, url):
    with world(tmp_path) as w:
        add_fleet(w.config_path, url)
        s = w.standin
        main0 = s.head(w.repo, "main")
        s.commit(w.repo, "a", A_FILES, author="alice")
        b = s.commit(w.repo, "b", B_FILES, author="bob")
        pull_a = s.open_pull(w.repo, w.repo, "a", "A: faster gemv", author="alice")
        pull_b = s.open_pull(w.repo, w.repo, "b", "B: faster gemv too", author="bob")
        p = poller(tmp_path, w.config_path, w.evaldir, "poller")
        g = worker(tmp_path, w.config_path, w.evaldir, "test-gpu", "w-a")
        try:
            wait_until("both PRs labelled M", lambda: list(pull_a.labels) == list(pull_b.labels) == ["eval:M"],
                       procs=(p, g), timeout=60)
            # The fleet poller writes the merge queue as the embedded one does.
            wait_until("both ranked against main0", lambda: _queue(w.cfg.data_dir) == (
                main0, [(pull_a.number, "M", True), (pull_b.number, "M", True)]), procs=(p, g), timeout=60)
            s.close_pull(pull_a)
            main1 = s.commit(w.repo, "main", A_FILES, message="Merge #1", author="alice")
            wait_until("B measured again against the merge", lambda: list(pull_b.labels) == ["eval:none"],
                       procs=(p, g), timeout=60)
            wait_until("an empty merge queue against main1", lambda: _queue(w.cfg.data_dir) == (main1, []),
                       procs=(p, g), timeout=60)
        finally:
            assert p.term() == 0
            g.term()
        assert [sha for event, sha in evaluations(w.evaldir) if event == "done"].count(b) == 2
        with w.ledger() as ledger:
            rows = sorted(ledger.find(b), key=lambda r: r.seq)
            assert [(r.label, r.frontier_commit) for r in rows] == [("M", main0), ("none", main1)]
        (comment,) = s.bot_comments(pull_b, BOT)
        assert "B adds nothing over A" in comment.body


def _queue(data_dir: Path) -> tuple[str | None, list[tuple[int, str, bool]]] | None:
    try:
        _, front, ranked = ranking.read(data_dir)
    except FileNotFoundError:  # the poller has not written it yet (it replaces the file atomically)
        return None
    return front, [(c.pr, c.label, c.current) for c in ranked]


@pytest.fixture
def url(tmp_path):
    yield from fleet_url(tmp_path)


def test_a_pr_head_that_became_the_frontier_is_not_measured_again_and_again(tmp_path):
    # Merged by fast-forward: main points at the PR's own head while the PR still shows as open.
    with world(tmp_path) as w:
        s = w.standin
        head = s.commit(w.repo, "ff", A_FILES, author="alice")
        s.open_pull(w.repo, w.repo, "ff", "fast-forward me", author="alice")
        watcher = w.watcher()
        watcher.poll_once()
        s.push_existing(w.repo, "main", head)
        for _ in range(4):
            watcher.poll_once()
        with w.ledger() as ledger:
            assert ledger.frontier(BASKET_TINY, "test-gpu").commit_sha == head
        # Evaluated once, as the PR head (the base branch's job takes that verdict over), never again.
        assert [sha for event, sha in evaluations(w.evaldir) if event == "done"].count(head) == 1
