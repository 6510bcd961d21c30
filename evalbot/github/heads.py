"""What the poller needs from GitHub's pull-request and branch JSON, checked on the way in.

The REST bodies are parsed here rather than through PyGithub objects because they arrive through
conditional requests (see ``client.py``); a body missing a field the bot relies on is a one-line
:class:`GithubDataError` naming the object and the field, never a ``KeyError`` deep in the loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from evalbot.errors import EvalbotError

_SHA = re.compile(r"[0-9a-f]{40}")


class GithubDataError(EvalbotError):
    pass


@dataclass(frozen=True)
class PullHead:
    number: int
    state: str  # "open" or "closed"
    draft: bool
    head_sha: str
    head_repo: str | None  # "owner/name"; None when the fork was deleted
    base_repo: str
    base_ref: str
    base_sha: str
    author: str
    clone_url: str  # of the base repository, where refs/pull/N/head lives
    html_url: str

    @property
    def is_fork(self) -> bool:
        return self.head_repo != self.base_repo

    @property
    def fetch_ref(self) -> str:
        return f"refs/pull/{self.number}/head"


@dataclass(frozen=True)
class BranchHead:
    name: str
    sha: str
    author: str


def _get(data: Any, path: str, kind: type, what: str) -> Any:
    value = data
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise GithubDataError(f"GitHub sent {what} without {path!r}")
        value = value[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise GithubDataError(f"GitHub sent {what} with {path!r} = {value!r} (expected {kind.__name__})")
    return value


def _sha(data: Any, path: str, what: str) -> str:
    value = _get(data, path, str, what)
    if not _SHA.fullmatch(value):
        raise GithubDataError(f"GitHub sent {what} with {path!r} = {value!r} (expected a 40-hex SHA)")
    return value


def parse_pull(data: Any) -> PullHead:
    number = _get(data, "number", int, "a pull request")
    what = f"pull request #{number}"
    head_repo = data.get("head", {}).get("repo") if isinstance(data.get("head"), dict) else None
    return PullHead(
        number=number,
        state=_get(data, "state", str, what),
        # Older API versions omit "draft"; absent means not a draft.
        draft=bool(data.get("draft", False)),
        head_sha=_sha(data, "head.sha", what),
        head_repo=_get(data, "head.repo.full_name", str, what) if head_repo is not None else None,
        base_repo=_get(data, "base.repo.full_name", str, what),
        base_ref=_get(data, "base.ref", str, what),
        base_sha=_sha(data, "base.sha", what),
        author=_get(data, "user.login", str, what),
        clone_url=_get(data, "base.repo.clone_url", str, what),
        html_url=_get(data, "html_url", str, what),
    )


def parse_pulls(data: Any) -> list[PullHead]:
    if not isinstance(data, list):
        raise GithubDataError(f"GitHub sent a pull-request list that is a {type(data).__name__}")
    return [parse_pull(item) for item in data]


def parse_branch(data: Any) -> BranchHead:
    name = _get(data, "name", str, "a branch")
    what = f"branch {name!r}"
    sha = _sha(data, "commit.sha", what)
    commit = data.get("commit")
    # "author" is the GitHub account behind the commit and is null when its email matches none.
    account = commit.get("author") if isinstance(commit, dict) else None
    if isinstance(account, dict) and isinstance(account.get("login"), str):
        author = account["login"]
    else:
        author = _get(data, "commit.commit.author.name", str, what)
    return BranchHead(name=name, sha=sha, author=author)
