"""JSON bodies of the GitHub stand-in, built from its state in the shapes GitHub sends.

Every key and value type here follows the recorded real responses in ``shared/github-replay/`` beside the checkout
(``tests/test_github_standin_shape.py`` checks that). Where those recordings only exist from an older API
era (commit statuses: 2012), the stand-in answers in that recorded shape rather than an invented one.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def node_id(kind: str, number: int) -> str:
    return base64.b64encode(f"0:{kind}{number}".encode()).decode().rstrip("=")


@dataclass
class User:
    login: str
    id: int


@dataclass
class Label:
    id: int
    name: str
    color: str
    description: str


@dataclass
class Comment:
    id: int
    user: User
    body: str
    created_at: float
    updated_at: float


@dataclass
class Status:
    id: int
    sha: str
    state: str
    description: str
    target_url: str
    context: str
    creator: User
    created_at: float


@dataclass
class Repo:
    id: int
    owner: User
    name: str
    path: str  # the bare git repository on disk
    created_at: float
    parent: Repo | None = None
    labels: dict[str, Label] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"


@dataclass
class Pull:
    number: int
    id: int
    base: Repo
    base_ref: str
    head: Repo
    head_ref: str
    head_sha: str
    base_sha: str
    user: User
    title: str
    draft: bool
    created_at: float
    updated_at: float
    state: str = "open"
    closed_at: float | None = None
    labels: list[str] = field(default_factory=list)
    comments: list[Comment] = field(default_factory=list)


class Bodies:
    """Renders state as GitHub JSON, with URLs pointing back at the stand-in."""

    def __init__(self, api: str, web: str = "https://github.invalid") -> None:
        self.api = api
        self.web = web

    def user(self, u: User, view_type: bool = True) -> dict[str, Any]:
        api = f"{self.api}/users/{u.login}"
        body = {
            "avatar_url": f"https://avatars.invalid/u/{u.id}?v=4",
            "events_url": f"{api}/events{{/privacy}}",
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "gravatar_id": "",
            "html_url": f"{self.web}/{u.login}",
            "id": u.id,
            "login": u.login,
            "node_id": node_id("User", u.id),
            "organizations_url": f"{api}/orgs",
            "received_events_url": f"{api}/received_events",
            "repos_url": f"{api}/repos",
            "site_admin": False,
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions",
            "type": "User",
            "url": api,
        }
        if view_type:  # absent from the recorded commit authors of a branch
            body["user_view_type"] = "public"
        return body

    def status_creator(self, u: User) -> dict[str, Any]:
        return {
            "avatar_url": f"https://avatars.invalid/u/{u.id}?v=4",
            "gravatar_id": "",
            "id": u.id,
            "login": u.login,
            "url": f"{self.api}/users/{u.login}",
        }

    def repo(self, r: Repo, full: bool = False, upstream: bool = False) -> dict[str, Any]:
        api = f"{self.api}/repos/{r.full_name}"
        body: dict[str, Any] = {
            "allow_forking": True,
            "archive_url": f"{api}/{{archive_format}}{{/ref}}",
            "archived": False,
            "assignees_url": f"{api}/assignees{{/user}}",
            "blobs_url": f"{api}/git/blobs{{/sha}}",
            "branches_url": f"{api}/branches{{/branch}}",
            "clone_url": f"file://{r.path}",
            "collaborators_url": f"{api}/collaborators{{/collaborator}}",
            "comments_url": f"{api}/comments{{/number}}",
            "commits_url": f"{api}/commits{{/sha}}",
            "compare_url": f"{api}/compare/{{base}}...{{head}}",
            "contents_url": f"{api}/contents/{{+path}}",
            "contributors_url": f"{api}/contributors",
            "created_at": iso(r.created_at),
            "default_branch": "main",
            "deployments_url": f"{api}/deployments",
            "description": "CUDA decode kernels",
            "disabled": False,
            "downloads_url": f"{api}/downloads",
            "events_url": f"{api}/events",
            "fork": r.parent is not None,
            "forks": 0,
            "forks_count": 0,
            "forks_url": f"{api}/forks",
            "full_name": r.full_name,
            "git_commits_url": f"{api}/git/commits{{/sha}}",
            "git_refs_url": f"{api}/git/refs{{/sha}}",
            "git_tags_url": f"{api}/git/tags{{/sha}}",
            "git_url": f"git://github.invalid/{r.full_name}.git",
            "has_discussions": False,
            "has_downloads": True,
            "has_issues": True,
            "has_pages": False,
            "has_projects": False,
            "has_wiki": False,
            "homepage": "",
            "hooks_url": f"{api}/hooks",
            "html_url": f"{self.web}/{r.full_name}",
            "id": r.id,
            "is_template": False,
            "issue_comment_url": f"{api}/issues/comments{{/number}}",
            "issue_events_url": f"{api}/issues/events{{/number}}",
            "issues_url": f"{api}/issues{{/number}}",
            "keys_url": f"{api}/keys{{/key_id}}",
            "labels_url": f"{api}/labels{{/name}}",
            "language": "Cuda",
            "languages_url": f"{api}/languages",
            "license": {
                "key": "mit",
                "name": "MIT License",
                "node_id": "MDc6TGljZW5zZTEz",
                "spdx_id": "MIT",
                "url": f"{self.api}/licenses/mit",
            },
            "merges_url": f"{api}/merges",
            "milestones_url": f"{api}/milestones{{/number}}",
            "mirror_url": None,
            "name": r.name,
            "node_id": node_id("Repository", r.id),
            "notifications_url": f"{api}/notifications{{?since,all,participating}}",
            "open_issues": 0,
            "open_issues_count": 0,
            "owner": self.user(r.owner),
            "private": False,
            "pulls_url": f"{api}/pulls{{/number}}",
            "pushed_at": iso(r.created_at),
            "releases_url": f"{api}/releases{{/id}}",
            "size": 1,
            "ssh_url": f"git@github.invalid:{r.full_name}.git",
            "stargazers_count": 0,
            "stargazers_url": f"{api}/stargazers",
            "statuses_url": f"{api}/statuses/{{sha}}",
            "subscribers_url": f"{api}/subscribers",
            "subscription_url": f"{api}/subscription",
            "svn_url": f"{self.web}/{r.full_name}",
            "tags_url": f"{api}/tags",
            "teams_url": f"{api}/teams",
            "topics": ["cuda"],
            "trees_url": f"{api}/git/trees{{/sha}}",
            "updated_at": iso(r.created_at),
            "url": api,
            "visibility": "public",
            "watchers": 0,
            "watchers_count": 0,
            "web_commit_signoff_required": False,
        }
        if full or upstream:
            body |= {"has_pull_requests": True, "pull_request_creation_policy": "all"}
        if full:
            body |= {"network_count": 0, "subscribers_count": 0}
            if r.parent is not None:
                # GitHub nests the upstream repositories with fewer counters than the top level.
                body["parent"] = self.repo(r.parent, upstream=True)
                body["source"] = self.repo(r.parent, upstream=True)
        return body

    def label(self, repo: Repo, lab: Label) -> dict[str, Any]:
        return {
            "color": lab.color,
            "default": False,
            "description": lab.description,
            "id": lab.id,
            "name": lab.name,
            "node_id": node_id("Label", lab.id),
            "url": f"{self.api}/repos/{repo.full_name}/labels/{quote(lab.name, safe='')}",
        }

    def pull(self, p: Pull, full: bool) -> dict[str, Any]:
        repo_api = f"{self.api}/repos/{p.base.full_name}"
        api = f"{repo_api}/pulls/{p.number}"
        html = f"{self.web}/{p.base.full_name}/pull/{p.number}"
        issue = f"{repo_api}/issues/{p.number}"
        statuses = f"{repo_api}/statuses/{p.head_sha}"

        def side(repo: Repo, ref: str, sha: str) -> dict[str, Any]:
            return {
                "label": f"{repo.owner.login}:{ref}",
                "ref": ref,
                "repo": self.repo(repo),
                "sha": sha,
                "user": self.user(repo.owner),
            }

        body: dict[str, Any] = {
            "_links": {
                "comments": {"href": f"{issue}/comments"},
                "commits": {"href": f"{api}/commits"},
                "html": {"href": html},
                "issue": {"href": issue},
                "review_comment": {"href": f"{repo_api}/pulls/comments{{/number}}"},
                "review_comments": {"href": f"{api}/comments"},
                "self": {"href": api},
                "statuses": {"href": statuses},
            },
            "active_lock_reason": None,
            "assignee": None,
            "assignees": [],
            "author_association": "CONTRIBUTOR",
            "auto_merge": None,
            "base": side(p.base, p.base_ref, p.base_sha),
            "body": f"{p.title}\n",
            "closed_at": iso(p.closed_at) if p.closed_at else None,
            "comments_url": f"{issue}/comments",
            "commits_url": f"{api}/commits",
            "created_at": iso(p.created_at),
            "diff_url": f"{html}.diff",
            "draft": p.draft,
            "head": side(p.head, p.head_ref, p.head_sha),
            "html_url": html,
            "id": p.id,
            "issue_url": issue,
            "labels": [self.label(p.base, p.base.labels[name]) for name in p.labels],
            "locked": False,
            # GitHub's test merge of head into base; any stable SHA-shaped value serves here.
            "merge_commit_sha": hashlib.sha1(f"{p.base_sha}{p.head_sha}".encode()).hexdigest(),
            "merged_at": None,
            "milestone": None,
            "node_id": node_id("PullRequest", p.id),
            "number": p.number,
            "patch_url": f"{html}.patch",
            "requested_reviewers": [],
            "requested_teams": [],
            "review_comment_url": f"{repo_api}/pulls/comments{{/number}}",
            "review_comments_url": f"{api}/comments",
            "state": p.state,
            "statuses_url": statuses,
            "title": p.title,
            "updated_at": iso(p.updated_at),
            "url": api,
            "user": self.user(p.user),
        }
        if full:
            body |= {
                "additions": 1,
                "changed_files": 1,
                "comments": len(p.comments),
                "commits": 1,
                "deletions": 0,
                "maintainer_can_modify": False,
                "mergeable": None,
                "mergeable_state": "unknown",
                "merged": False,
                "merged_by": None,
                "rebaseable": None,
                "review_comments": 0,
            }
        return body

    def comment(self, p: Pull, c: Comment) -> dict[str, Any]:
        repo_api = f"{self.api}/repos/{p.base.full_name}"
        return {
            "author_association": "NONE",
            "body": c.body,
            "created_at": iso(c.created_at),
            "html_url": f"{self.web}/{p.base.full_name}/pull/{p.number}#issuecomment-{c.id}",
            "id": c.id,
            "issue_url": f"{repo_api}/issues/{p.number}",
            "node_id": node_id("IssueComment", c.id),
            "performed_via_github_app": None,
            "reactions": {
                "+1": 0, "-1": 0, "confused": 0, "eyes": 0, "heart": 0, "hooray": 0, "laugh": 0,
                "rocket": 0, "total_count": 0,
                "url": f"{repo_api}/issues/comments/{c.id}/reactions",
            },
            "updated_at": iso(c.updated_at),
            "url": f"{repo_api}/issues/comments/{c.id}",
            "user": self.user(c.user),
        }

    def status(self, repo: Repo, s: Status) -> dict[str, Any]:
        return {
            "created_at": iso(s.created_at),
            "creator": self.status_creator(s.creator),
            "description": s.description,
            "id": s.id,
            "state": s.state,
            "target_url": s.target_url,
            "updated_at": iso(s.created_at),
            "url": f"{self.api}/repos/{repo.full_name}/statuses/{s.id}",
        }

    def branch(self, repo: Repo, name: str, sha: str, parent: str | None, author: User, when: float,
               message: str) -> dict[str, Any]:
        api = f"{self.api}/repos/{repo.full_name}"
        html = f"{self.web}/{repo.full_name}"
        who = {"date": iso(when), "email": f"{author.login}@users.noreply.github.com", "name": author.login}
        return {
            "_links": {"html": f"{html}/tree/{name}", "self": f"{api}/branches/{name}"},
            "commit": {
                "author": self.user(author, view_type=False),
                "comments_url": f"{api}/commits/{sha}/comments",
                "commit": {
                    "author": who,
                    "comment_count": 0,
                    "committer": who,
                    "message": message,
                    "tree": {"sha": sha, "url": f"{api}/git/trees/{sha}"},
                    "url": f"{api}/git/commits/{sha}",
                    "verification": {"payload": "", "reason": "unsigned", "signature": "", "verified": False},
                },
                "committer": self.user(author, view_type=False),
                "html_url": f"{html}/commit/{sha}",
                "node_id": node_id("Commit", int(sha[:8], 16)),
                "parents": (
                    [{"html_url": f"{html}/commit/{parent}", "sha": parent, "url": f"{api}/commits/{parent}"}]
                    if parent
                    else []
                ),
                "sha": sha,
                "url": f"{api}/commits/{sha}",
            },
            "name": name,
            "protected": False,
            "protection": {
                "enabled": False,
                "required_status_checks": {"checks": [], "contexts": [], "enforcement_level": "off"},
            },
            "protection_url": f"{api}/branches/{name}/protection",
        }

    @staticmethod
    def rate_limit(limit: int, remaining: int, reset: int) -> dict[str, Any]:
        core = {"limit": limit, "remaining": remaining, "reset": reset, "used": limit - remaining}

        def fresh(n: int) -> dict[str, int]:
            return {"limit": n, "remaining": n, "reset": reset, "used": 0}

        return {
            "rate": core,
            "resources": {
                "actions_runner_registration": fresh(10000),
                "code_scanning_upload": fresh(1000),
                "core": core,
                "dependency_snapshots": fresh(100),
                "graphql": fresh(5000),
                "integration_manifest": fresh(5000),
                "scim": fresh(15000),
                "search": fresh(30),
                "source_import": fresh(100),
            },
        }

    @staticmethod
    def error(message: str) -> dict[str, Any]:
        return {"documentation_url": "https://docs.github.com/rest", "message": message}
