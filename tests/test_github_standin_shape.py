"""The stand-in's bodies have the shape of GitHub's: checked against the real recorded responses.

The recordings (``../shared/github-replay/``) span 2012 to 2026, so a key GitHub added in 2019 is
absent from the older ones. For every object path (``head.repo.owner``, ``labels[]`` ...) the check is:

* no key that GitHub never sent at that path (keys ⊆ union over the recordings), and
* every key GitHub always sent there (keys ⊇ intersection over the recordings), and
* every value of a type GitHub sent at that path (``null`` included only where a recording has it).

A list item of ``GET /pulls`` may carry keys of the full pull request (GitHub's "simple" pull request
is a subset of the full one); its required keys still come from the list recordings alone.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from watch_support import REPLAY, TOKEN, world

pytestmark = pytest.mark.skipif(not REPLAY.is_dir(), reason=f"no GitHub recordings at {REPLAY}")


# Null in GitHub's published schema for an open, unmerged pull request; the recordings of the full
# pull request are all of a merged one, so they cannot show it.
NULLABLE = frozenset({"$.merged_by"})


@dataclass
class Schema:
    types: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    keysets: dict[str, list[frozenset[str]]] = field(default_factory=lambda: defaultdict(list))
    upper: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def learn(self, value: Any, path: str = "$", required: bool = True) -> None:
        self.types[path].add(type(value).__name__)
        if isinstance(value, dict):
            self.upper[path] |= set(value)
            if required:
                self.keysets[path].append(frozenset(value))
            for key, item in value.items():
                self.learn(item, f"{path}.{key}", required)
        elif isinstance(value, list):
            for item in value:
                self.learn(item, f"{path}[]", required)

    def problems(self, value: Any, path: str = "$") -> list[str]:
        if path not in self.types:
            return []  # GitHub's recordings say nothing here (e.g. inside a list they sent empty)
        kind = type(value).__name__
        if kind not in self.types[path] and not (value is None and path in NULLABLE):
            return [f"{path}: {kind}, GitHub sent {sorted(self.types[path])}"]
        found: list[str] = []
        if isinstance(value, dict):
            extra = set(value) - self.upper[path]
            if extra:
                found.append(f"{path}: keys GitHub never sent: {sorted(extra)}")
            if self.keysets[path]:
                missing = frozenset.intersection(*self.keysets[path]) - set(value)
                if missing:
                    found.append(f"{path}: missing keys GitHub always sent: {sorted(missing)}")
            for key, item in value.items():
                found += self.problems(item, f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                found += self.problems(item, f"{path}[]")
        return found


def recorded_bodies(name: str, as_items: bool) -> list[Any]:
    bodies = [e["response_body"] for e in json.loads((REPLAY / name).read_text())
              if 200 <= e["status"] < 300 and e["response_body"] is not None]
    if as_items:
        return [item for body in bodies for item in body]
    return bodies


def schema(required: list[str], optional: list[str] = (), items: bool = False) -> Schema:
    s = Schema()
    for name in required:
        for body in recorded_bodies(name, items):
            s.learn(body)
    for name in optional:
        for body in recorded_bodies(name, name.startswith("list")):
            s.learn(body, required=False)
    return s


LABEL_FILES = ["list_repo_labels.json", "get_repo_label.json", "create_repo_label.json",
               "add_issue_labels.json", "list_issue_labels.json", "remove_issue_label.json"]
COMMENT_FILES = ["list_issue_comments.json", "create_issue_comment.json", "edit_issue_comment.json"]


def label_schema() -> Schema:
    s = Schema()
    for name in LABEL_FILES:
        items = name.startswith(("list", "add", "remove"))
        for body in recorded_bodies(name, items):
            s.learn(body)
    return s


def comment_schema() -> Schema:
    s = Schema()
    for name in COMMENT_FILES:
        for body in recorded_bodies(name, name.startswith("list")):
            s.learn(body)
    return s


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One body of every kind the bot reads or writes, fetched from the stand-in over HTTP."""
    with world(tmp_path_factory.mktemp("shape")) as w:
        fork = w.standin.fork(w.repo, "alice")
        w.pr_branch(fork, "faster", "M")
        w.standin.open_pull(w.repo, fork, "faster", "Faster", author="alice")
        api, repo = w.standin.api_url, "/repos/acme/kernels"
        s = requests.Session()
        s.headers["Authorization"] = f"token {TOKEN}"

        def call(method: str, path: str, body: Any = None, status: int = 200) -> Any:
            response = s.request(method, api + path, json=body)
            assert response.status_code == status, (path, response.text)
            return response.json()

        out = {
            "label_created": call("POST", f"{repo}/labels", {"name": "eval:M", "color": "5cc26f",
                                                               "description": "evalbot verdict: M"}, 201),
            "labels_added": call("POST", f"{repo}/issues/1/labels", ["eval:M"]),
            "comment_created": call("POST", f"{repo}/issues/1/comments", {"body": "hello"}, 201),
            "status_created": call("POST", f"{repo}/statuses/{w.standin.head(fork, 'faster')}",
                                   {"state": "success", "description": "M", "context": "evalbot"}, 201),
        }
        out |= {
            "pulls": call("GET", f"{repo}/pulls"),
            "pull": call("GET", f"{repo}/pulls/1"),
            "repo": call("GET", repo),
            "fork": call("GET", "/repos/alice/kernels"),
            "branch": call("GET", f"{repo}/branches/main"),
            "labels": call("GET", f"{repo}/labels"),
            "label": call("GET", f"{repo}/labels/eval%3AM"),
            "issue_labels": call("GET", f"{repo}/issues/1/labels"),
            "comments": call("GET", f"{repo}/issues/1/comments"),
            "comment_edited": call("PATCH", f"{repo}/issues/comments/{out['comment_created']['id']}",
                                   {"body": "edited"}),
            "label_removed": call("DELETE", f"{repo}/issues/1/labels/eval%3AM"),
            "rate_limit": call("GET", "/rate_limit"),
            "not_found": call("GET", f"{repo}/branches/nope", status=404),
        }
        out["labels_added_again"] = call("POST", f"{repo}/issues/1/labels", ["eval:M"])
        return out


def cases(served: dict[str, Any]) -> list[tuple[str, Schema, Any]]:
    labels, comments = label_schema(), comment_schema()
    pull_items = schema(["list_pulls.json"], ["get_pull.json"], items=True)
    return [
        ("GET /pulls item", pull_items, served["pulls"][0]),
        ("GET /pulls/N", schema(["get_pull.json"], ["list_pulls.json"]), served["pull"]),
        ("GET /repos/o/r", schema(["get_repo.json"]), served["repo"]),
        ("GET /repos/o/r (a fork)", schema(["get_repo.json"]), served["fork"]),
        ("GET /branches/b", schema(["get_branch.json"]), served["branch"]),
        ("GET /rate_limit", schema(["rate_limit.json"]), served["rate_limit"]),
        ("POST /labels", labels, served["label_created"]),
        ("GET /labels/x", labels, served["label"]),
        *[("GET /labels item", labels, item) for item in served["labels"]],
        *[("issue labels item", labels, item) for key in ("labels_added", "issue_labels", "labels_added_again")
          for item in served[key]],
        ("POST /issues/N/comments", comments, served["comment_created"]),
        ("PATCH /issues/comments/N", comments, served["comment_edited"]),
        *[("GET /issues/N/comments item", comments, item) for item in served["comments"]],
        ("POST /statuses/sha", schema(["create_commit_status.json"]), served["status_created"]),
    ]


def test_every_body_has_the_recorded_shape(served):
    checked = cases(served)
    assert len(checked) >= 16
    problems = [f"{name}: {p}" for name, s, body in checked for p in s.problems(body)]
    assert not problems, "\n".join(problems)


def test_error_body_has_the_recorded_shape(served):
    recorded = [e["response_body"] for e in json.loads((REPLAY / "get_branch.json").read_text())
                if e["status"] == 404]
    assert recorded, "the recordings hold a 404"
    assert set(served["not_found"]) == set(recorded[0])
    assert {type(v) for v in served["not_found"].values()} == {str}


def test_the_check_catches_a_wrong_shape(served):
    pull = json.loads(json.dumps(served["pull"]))
    s = schema(["get_pull.json"], ["list_pulls.json"])
    assert s.problems(pull) == []
    del pull["head"]["sha"]
    pull["number"] = "7"
    pull["head"]["repo"]["invented"] = 1
    found = "\n".join(s.problems(pull))
    assert "$.head: missing keys GitHub always sent: ['sha']" in found
    assert "$.number: str" in found
    assert "keys GitHub never sent: ['invented']" in found


def test_recordings_cover_what_the_bot_parses():
    """The paths the poller reads exist in the recordings, so the shape check is about them."""
    s = schema(["get_pull.json"], ["list_pulls.json"])
    for path in ("$.number", "$.state", "$.draft", "$.head.sha", "$.head.repo.full_name", "$.base.ref",
                 "$.base.sha", "$.base.repo.clone_url", "$.user.login", "$.html_url"):
        assert path in s.types, path
    assert Path(REPLAY / "README.md").is_file()
