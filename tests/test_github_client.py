"""The GitHub client against the stand-in: conditional reads, retries, rate limits, bad answers, token."""

from __future__ import annotations

import json
import logging
import time

import pytest
from github import GithubException
from watch_support import REPLAY, TOKEN, world

from evalbot.config import GithubConfig
from evalbot.errors import EvalbotError
from evalbot.github.client import GithubClient, GithubRejected, GithubUnavailable
from evalbot.github.heads import GithubDataError, parse_branch, parse_pull
from evalbot.github.token import read_token

PULLS = r"/repos/acme/kernels/pulls"


def open_prs(w, n):
    for i in range(n):
        w.pr_branch(w.repo, f"b{i}", "S")
        w.standin.open_pull(w.repo, w.repo, f"b{i}", f"PR {i}")


def test_listing_parses_heads_forks_and_drafts(tmp_path):
    with world(tmp_path) as w:
        fork = w.standin.fork(w.repo, "alice")
        fork_sha = w.pr_branch(fork, "fast", "M")
        w.standin.open_pull(w.repo, fork, "fast", "From a fork", author="alice")
        own_sha = w.pr_branch(w.repo, "wip", "S")
        w.standin.open_pull(w.repo, w.repo, "wip", "Draft", draft=True)
        pulls = {p.number: p for p in w.client().open_pulls("main")}
        assert pulls[1].head_sha == fork_sha and pulls[1].is_fork and pulls[1].author == "alice"
        assert pulls[1].head_repo == "alice/kernels" and pulls[1].clone_url.startswith("file://")
        assert pulls[2].head_sha == own_sha and not pulls[2].is_fork and pulls[2].draft
        assert pulls[1].fetch_ref == "refs/pull/1/head"


def test_unchanged_listing_is_a_free_304_and_pages_are_not_refetched(tmp_path):
    with world(tmp_path) as w:
        open_prs(w, 120)  # two pages of 100
        client = w.client()
        first = client.open_pulls("main")
        assert len(first) == 120 and len(w.standin.served("GET", PULLS)) == 2
        remaining = w.standin.remaining
        before = len(w.standin.requests)
        again = client.open_pulls("main")
        assert again == first
        assert [(s.path, s.status) for s in w.standin.requests[before:]] == [(PULLS, 304)]
        assert w.standin.remaining == remaining  # a 304 does not count against the rate limit


def test_a_change_anywhere_is_seen_through_page_one(tmp_path):
    with world(tmp_path) as w:
        open_prs(w, 120)
        client = w.client()
        client.open_pulls("main")
        oldest = w.standin.pulls[("acme/kernels", 1)]  # created first: on page 2 by creation order
        new_sha = w.standin.force_push(w.repo, "b0", {"EVAL": "label=XL\n"})
        heads = {p.number: p.head_sha for p in client.open_pulls("main")}
        assert heads[oldest.number] == new_sha


def test_5xx_is_retried_with_backoff(tmp_path):
    with world(tmp_path) as w:
        open_prs(w, 1)
        w.standin.fail(502, times=3, method="GET", path=PULLS)
        assert len(w.client().open_pulls("main")) == 1
        assert [s.status for s in w.standin.served("GET", PULLS)] == [502, 502, 502, 200]


def test_5xx_beyond_the_retries_is_one_line_unavailable(tmp_path):
    with world(tmp_path, retries=2) as w:
        w.standin.fail(503, times=10, method="GET", path=PULLS)
        with pytest.raises(GithubUnavailable) as info:
            w.client().open_pulls("main")
        message = str(info.value)
        assert "listing open pull requests of acme/kernels" in message and "\n" not in message


def test_post_is_not_retried_by_the_transport(tmp_path):
    with world(tmp_path) as w:
        open_prs(w, 1)
        w.standin.fail(502, times=1, method="POST", path=r".*/comments")
        client = w.client()
        with pytest.raises(GithubException):
            client.repo.get_issue(1).create_comment("hello")
        assert [s.status for s in w.standin.served("POST")] == [502]


def test_secondary_rate_limit_waits_for_retry_after(tmp_path):
    with world(tmp_path) as w:
        open_prs(w, 1)
        w.standin.secondary_rate_limit(retry_after=1, times=1, method="GET", path=PULLS)
        start = time.monotonic()
        assert len(w.client().open_pulls("main")) == 1
        assert time.monotonic() - start >= 1.0
        assert [s.status for s in w.standin.served("GET", PULLS)] == [403, 200]


def test_short_primary_rate_limit_is_waited_out_in_place(tmp_path):
    with world(tmp_path) as w:
        open_prs(w, 1)
        client = w.client()
        client.open_pulls("main")
        w.standin.exhaust_rate_limit(1.5)
        start = time.monotonic()
        client.branch("main")
        assert time.monotonic() - start >= 1.0
        assert [s.status for s in w.standin.served("GET", r".*/branches/main")][-2:] == [403, 200]


def test_long_primary_rate_limit_surfaces_with_the_wait_and_pauses_the_poller(tmp_path):
    with world(tmp_path) as w:
        client = w.client()
        client.branch("main")
        assert client.rate_limit_wait() == 0
        w.standin.exhaust_rate_limit(120)
        start = time.monotonic()
        with pytest.raises(GithubUnavailable) as info:
            client.branch("main")
        assert time.monotonic() - start < 10
        assert info.value.wait_s is not None and 100 < info.value.wait_s <= 125
        # The 403 carried X-RateLimit-Remaining: 0, so the poller now knows to pause.
        assert 100 < client.rate_limit_wait() <= 125


def test_slow_answers_time_out_and_are_retried(tmp_path):
    with world(tmp_path, timeout_s=1) as w:
        open_prs(w, 1)
        w.standin.delay(3.0, times=1, method="GET", path=PULLS)
        start = time.monotonic()
        assert len(w.client().open_pulls("main")) == 1
        # Answered by the retry, before the slow first answer was even sent.
        assert 1.0 <= time.monotonic() - start < 2.9
        time.sleep(2.5)
        assert len(w.standin.served("GET", PULLS)) == 2


def test_bad_token_is_rejected_without_showing_it(tmp_path):
    with world(tmp_path) as w:
        wrong = "ghp_wrongTOKENnotknown000000000000"
        client = GithubClient(w.cfg.github, wrong)
        with pytest.raises(GithubRejected) as info:
            client.open_pulls("main")
        assert "rejected the token" in str(info.value) and "401" in str(info.value)
        assert wrong not in str(info.value)


def test_malformed_pull_is_a_one_line_data_error(tmp_path):
    with world(tmp_path) as w:
        open_prs(w, 1)

        def break_head(body):
            body[0]["head"]["sha"] = "not-a-sha"
            return body

        w.standin.corrupt(break_head, path=PULLS)
        with pytest.raises(GithubDataError, match=r"pull request #1 with 'head.sha' = 'not-a-sha'"):
            w.client().open_pulls("main")


def test_token_never_appears_in_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with world(tmp_path) as w:
        open_prs(w, 2)
        w.standin.fail(502, times=2, method="GET", path=PULLS)
        w.standin.secondary_rate_limit(retry_after=0, times=1, method="GET", path=r".*/branches/main")
        watcher = w.watcher()
        watcher.poll_once()
        watcher.poll_once()
        with pytest.raises(GithubRejected):
            GithubClient(w.cfg.github, "ghp_bad").open_pulls("main")
    text = caplog.text
    assert "GET" in text  # PyGithub's debug lines were captured: the check below is not vacuous
    assert TOKEN not in text


def test_token_from_file_or_environment(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("ghp_fromfile\n")
    assert read_token(GithubConfig(token_file=str(token_file)), environ={}) == "ghp_fromfile"
    assert read_token(GithubConfig(token_env="MY_TOKEN"), environ={"MY_TOKEN": "ghp_env"}) == "ghp_env"
    with pytest.raises(EvalbotError, match="set the environment variable MY_TOKEN"):
        read_token(GithubConfig(token_env="MY_TOKEN"), environ={})
    token_file.write_text("two words\n")
    with pytest.raises(EvalbotError, match="expected one token on one line") as info:
        read_token(GithubConfig(token_file=str(token_file)), environ={})
    assert "two words" not in str(info.value)
    with pytest.raises(EvalbotError, match="cannot read"):
        read_token(GithubConfig(token_file=str(tmp_path / "missing")), environ={})


def test_repo_setting_is_checked():
    with pytest.raises(EvalbotError, match="expected 'owner/name'"):
        GithubClient(GithubConfig(repo="just-a-name"), "t")


@pytest.mark.skipif(not REPLAY.is_dir(), reason=f"no GitHub recordings at {REPLAY}")
def test_parsers_read_real_recorded_bodies():
    def bodies(name):
        return [e["response_body"] for e in json.loads((REPLAY / name).read_text()) if e["status"] == 200]

    parsed = 0
    for body in bodies("get_pull.json") + [i for b in bodies("list_pulls.json") for i in b]:
        pull = parse_pull(body)
        assert pull.head_sha == body["head"]["sha"] and pull.number == body["number"]
        assert pull.author == body["user"]["login"] and pull.base_ref == body["base"]["ref"]
        assert pull.is_fork == (body["head"]["repo"] is None
                                or body["head"]["repo"]["full_name"] != body["base"]["repo"]["full_name"])
        parsed += 1
    assert parsed >= 30
    for body in bodies("get_branch.json"):
        if "commit" not in body:  # one recording was cut short: no head to read, a clear error
            with pytest.raises(GithubDataError, match=r"without 'commit\.sha'"):
                parse_branch(body)
            continue
        branch = parse_branch(body)
        assert branch.sha == body["commit"]["sha"] and branch.name == body["name"]
        assert branch.author == body["commit"]["author"]["login"]
