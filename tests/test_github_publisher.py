"""Publishing converges: one sticky comment, one eval:* label, a status — however often it runs."""

from __future__ import annotations

import re

import pytest
import requests
from markdown_support import assert_inert, headings
from watch_support import BOT, TOKEN, world

from evalbot import verdict
from evalbot.github.publisher import Publisher
from evalbot.github.standin import Label
from evalbot.github.sticky import MARKER, Outcome, render
from tests.test_verdict import SLOT, VERDICT_HTML, hostile_build_doc


def outcome(sha: str, label: str | None = "M", summary: str = "6 % faster") -> Outcome:
    return Outcome(sha, label, summary, f"**{label}** — {summary}\n", "2026-01-01 00:00 UTC")


@pytest.fixture
def pr(tmp_path):
    with world(tmp_path) as w:
        w.pr_branch(w.repo, "feature", "M")
        pull = w.standin.open_pull(w.repo, w.repo, "feature", "Feature")
        yield w, pull, Publisher(w.client(), "evalbot")


def test_comment_is_created_once_then_edited_in_place(pr):
    w, pull, pub = pr
    pub.sticky_comment(1, render(outcome(pull.head_sha), []))
    (first,) = w.standin.bot_comments(pull, BOT)
    writes = len(w.standin.writes())
    pub.sticky_comment(1, render(outcome(pull.head_sha), []))
    assert len(w.standin.writes()) == writes  # same text: nothing sent
    pub.sticky_comment(1, render(outcome("b" * 40, "L"), [outcome(pull.head_sha)]))
    (again,) = w.standin.bot_comments(pull, BOT)
    assert again.id == first.id and "`L`" in again.body
    assert [s.method for s in w.standin.writes()][-1] == "PATCH"


def test_someone_elses_comment_with_the_marker_is_left_alone(pr):
    w, pull, pub = pr
    w.standin.user("mallory", token="mallory-token")
    requests.post(f"{w.standin.api_url}/repos/acme/kernels/issues/1/comments",
                  json={"body": f"{MARKER}\nlabel XL please"},
                  headers={"Authorization": "token mallory-token"}, timeout=5).raise_for_status()
    pub.sticky_comment(1, render(outcome(pull.head_sha), []))
    bodies = {c.user.login: c.body for c in pull.comments}
    assert bodies["mallory"] == f"{MARKER}\nlabel XL please"
    assert "`M`" in bodies[BOT]


def test_labels_created_with_colour_stale_removed_others_kept(pr):
    w, pull, pub = pr
    w.repo.labels["bug"] = Label(1, "bug", "ff0000", "")
    w.repo.labels["eval:S"] = Label(2, "eval:S", "ededed", "")
    pull.labels.extend(["bug", "eval:S"])
    pub.labels(1, "REJECT")
    assert pull.labels == ["bug", "eval:REJECT"]
    assert w.repo.labels["eval:REJECT"].color == "b60205"
    writes = len(w.standin.writes())
    pub.labels(1, "REJECT")
    assert len(w.standin.writes()) == writes
    pub.labels(1, None)
    assert pull.labels == ["bug"]


def test_existing_repository_label_is_not_recreated(pr):
    w, pull, pub = pr
    w.repo.labels["eval:M"] = Label(5, "eval:M", "123456", "picked by the maintainers")
    pub.labels(1, "M")
    assert w.repo.labels["eval:M"].color == "123456"
    assert not w.standin.served("POST", r"/repos/acme/kernels/labels")
    assert pull.labels == ["eval:M"]


@pytest.mark.parametrize(("label", "state"), [("XL", "success"), ("none", "success"),
                                              ("REJECT", "failure"), (None, "error")])
def test_status_state_and_short_description(pr, label, state):
    w, pull, pub = pr
    pub.status(outcome(pull.head_sha, label, "x" * 300), "https://example.invalid/c/1")
    (status,) = w.standin.statuses[pull.head_sha]
    assert status.state == state and status.context == "evalbot"
    assert len(status.description) <= 140 and status.description.endswith("…")
    assert status.target_url == "https://example.invalid/c/1"


def test_republishing_the_same_result_only_repeats_the_status(pr):
    w, pull, pub = pr
    pub.publish_pull(1, outcome(pull.head_sha), [], set_label=True)
    writes = len(w.standin.writes())
    pub.publish_pull(1, outcome(pull.head_sha), [], set_label=True)
    assert [s.method + " " + s.path for s in w.standin.writes()[writes:]] == [
        f"POST /repos/acme/kernels/statuses/{pull.head_sha}"
    ]
    assert len(w.standin.bot_comments(pull, BOT)) == 1 and pull.labels == ["eval:M"]


def test_render_keeps_history_collapsed_and_bounded():
    earlier = [outcome(f"{i:040x}", "S", f"try {i} | with a pipe") for i in range(40)]
    body = render(outcome("f" * 40, "XL", "big win"), earlier)
    assert body.startswith(MARKER)
    head, history = body.split("<details>", 1)
    assert "`XL` for `ffffffffffff`" in head and "big win" in head
    assert "Earlier commits (40)" in history and history.count("\n| `") == 30 and "and 10 older" in history
    assert "`try 0 ¦ with a pipe`" in history


def test_render_leaves_out_a_verdict_github_would_refuse():
    # Cut anywhere, this one would leave its fence open and the rest of the comment inside it.
    body = render(Outcome("f" * 40, "M", "s", "```\n" + "y" * 100_000, ""), [outcome("e" * 40)])
    assert len(body) < 65_536 and "too long for a comment" in body and "y" * 100 not in body
    assert "<details><summary>Earlier commits (1)</summary>" in body


def test_hostile_verdict_as_github_receives_it(pr):
    w, pull, pub = pr
    doc = hostile_build_doc()  # published as the watcher does: the summary is the first reason
    hostile = Outcome(pull.head_sha, "REJECT", doc["reasons"][0], verdict.markdown(doc), "2026-01-02 00:00 UTC")
    pub.publish_pull(1, hostile, [outcome("e" * 40, None, f"could not be completed: {SLOT}")], set_label=True)
    (comment,) = w.standin.bot_comments(pull, BOT)
    assert comment.body.startswith(MARKER + "\n")
    assert headings(comment.body) == [f"evalbot: `REJECT` for `{pull.head_sha[:12]}`", "evalbot: **`REJECT`**"]
    history = r"<details><summary>Earlier commits \(1\)</summary>"
    assert_inert(comment.body, "PWN", {re.escape(MARKER), *VERDICT_HTML, history})
    (status,) = w.standin.statuses[pull.head_sha]
    assert "\n" not in status.description and len(status.description) <= 140
    assert status.description.startswith("REJECT: build failed: slot rmsnorm\\n\\n### evalbot: XL PWN\\n[prize PWN]")


def test_a_comment_of_ours_that_quotes_the_marker_is_not_the_sticky_one(pr):
    w, pull, pub = pr
    quoting = f"an earlier note quoting `{MARKER}` in passing"
    requests.post(f"{w.standin.api_url}/repos/acme/kernels/issues/1/comments", json={"body": quoting},
                  headers={"Authorization": f"token {TOKEN}"}, timeout=5).raise_for_status()
    pub.sticky_comment(1, render(outcome(pull.head_sha), []))
    first, sticky = w.standin.bot_comments(pull, BOT)
    assert first.body == quoting and sticky.body.startswith(MARKER)
