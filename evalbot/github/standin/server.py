"""A local GitHub stand-in: an HTTP server on 127.0.0.1 speaking the REST calls evalbot makes.

PyGithub talks to it through ``base_url``. Bodies come from :mod:`.bodies` (shapes checked against
the real recordings), repositories are real bare git repos served over ``file://`` (:mod:`.git`),
so a PR head can be fetched exactly as from GitHub (``refs/pull/N/head`` on the base repository, any
commit by SHA). What GitHub does that the bot relies on is reproduced here:

* weak ``ETag`` on every GET and ``304 Not Modified`` for a matching ``If-None-Match``; a 304 does not
  count against the rate limit;
* the primary rate limit (``X-RateLimit-*`` headers, 403 "API rate limit exceeded" at zero);
* ``Authorization`` checked (401 "Bad credentials");
* pagination with ``Link`` headers;
* ``POST .../issues/N/labels`` creating unknown repository labels on the fly;
* new comments and label changes bumping the PR's ``updated_at``.

Tests drive it through methods (``commit``, ``force_push``, ``open_pull``, ``close_pull``) and inject
faults (``fail``, ``secondary_rate_limit``, ``exhaust_rate_limit``, ``delay``, ``corrupt``, and
``on_request`` to change state just before a matching request is answered).
Every request served is logged in ``requests`` for call counting.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from evalbot.github.standin import git as sgit
from evalbot.github.standin.bodies import Bodies, Comment, Label, Pull, Repo, Status, User

JSON = dict[str, Any] | list[Any] | None
PRIMARY_LIMIT_MESSAGE = "API rate limit exceeded for user ID {uid}."
SECONDARY_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)


@dataclass
class Served:
    method: str
    path: str
    query: dict[str, str]
    status: int


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    remaining: int
    status: int = 0
    delay_s: float = 0.0
    retry_after: int | None = None
    message: str = ""


@dataclass
class _Rewrite:
    method: str
    pattern: re.Pattern[str]
    remaining: int
    transform: Callable[[Any], Any]


@dataclass
class _Hook:
    method: str
    pattern: re.Pattern[str]
    action: Callable[[], None]
    once: bool


@dataclass
class _Reply:
    status: int
    body: JSON
    headers: dict[str, str] = field(default_factory=dict)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class GithubStandin:
    """State, fault injection and the HTTP server. Use as a context manager."""

    def __init__(self, root: Path, rate_limit: int = 5000) -> None:
        self.root = root
        self._lock = threading.RLock()
        self._ids = iter(range(1000, 10**9))
        self.users: dict[str, User] = {}
        self.tokens: dict[str, User] = {}
        self.repos: dict[str, Repo] = {}
        self.pulls: dict[tuple[str, int], Pull] = {}
        self.statuses: dict[str, list[Status]] = {}  # by sha
        self.requests: list[Served] = []
        self._faults: list[_Fault] = []
        self._hooks: list[_Hook] = []
        self._rewrites: list[_Rewrite] = []
        self.rate_limit = rate_limit
        self.remaining = rate_limit
        self.reset_at = int(time.time()) + 3600
        self._clock = 1_700_000_000.0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.api_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.bodies = Bodies(self.api_url)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> GithubStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- state set-up (what users do on github.com) ------------------------------------------------

    def _next_id(self) -> int:
        return next(self._ids)

    def _tick(self) -> float:
        # GitHub timestamps have one-second resolution; a strictly increasing clock keeps
        # "sort by updated" deterministic in tests that change several things within a second.
        self._clock += 1.0
        return self._clock

    def user(self, login: str, token: str | None = None) -> User:
        with self._lock:
            u = self.users.get(login) or User(login, self._next_id())
            self.users[login] = u
            if token:
                self.tokens[token] = u
            return u

    def create_repo(self, owner: str, name: str, files: dict[str, str] | None = None) -> Repo:
        with self._lock:
            path = sgit.init_bare(self.root / owner / f"{name}.git")
            repo = Repo(self._next_id(), self.user(owner), name, str(path), self._tick())
            self.repos[repo.full_name] = repo
            sha = sgit.commit(path, files or {"README.md": "kernels\n"}, "initial", owner, None,
                              int(self._clock))
            sgit.set_ref(path, "refs/heads/main", sha)
            return repo

    def fork(self, repo: Repo, owner: str) -> Repo:
        with self._lock:
            path = sgit.fork_bare(Path(repo.path), self.root / owner / f"{repo.name}.git")
            fork = Repo(self._next_id(), self.user(owner), repo.name, str(path), self._tick(), parent=repo)
            self.repos[fork.full_name] = fork
            return fork

    def head(self, repo: Repo, branch: str) -> str | None:
        return sgit.resolve(Path(repo.path), f"refs/heads/{branch}")

    def commit(self, repo: Repo, branch: str, files: dict[str, str], message: str = "change",
               author: str | None = None, parent: str | None = "tip") -> str:
        """Push a new commit onto ``branch`` (``parent="tip"``) or, with another parent, rewrite it."""
        with self._lock:
            path = Path(repo.path)
            base = self.head(repo, branch) or self.head(repo, "main")
            parent_sha = base if parent == "tip" else parent
            sha = sgit.commit(path, files, message, author or repo.owner.login, parent_sha, int(self._tick()))
            sgit.set_ref(path, f"refs/heads/{branch}", sha)
            self._sync_pulls(repo, branch)
            return sha

    def force_push(self, repo: Repo, branch: str, files: dict[str, str], message: str = "amended") -> str:
        """Replace the tip of ``branch`` by a different commit on the same parent (``git push -f``)."""
        with self._lock:
            tip = self.head(repo, branch)
            assert tip, f"no branch {branch} in {repo.full_name}"
            parent = sgit.parent_of(Path(repo.path), tip)
            return self.commit(repo, branch, files, message, parent=parent)

    def push_existing(self, repo: Repo, branch: str, sha: str) -> None:
        """Point ``branch`` at a commit it had before (``git push -f origin <old sha>:<branch>``)."""
        with self._lock:
            sgit.set_ref(Path(repo.path), f"refs/heads/{branch}", sha)
            self._tick()
            self._sync_pulls(repo, branch)

    def _sync_pulls(self, repo: Repo, branch: str) -> None:
        for pull in self.pulls.values():
            if pull.state != "open":
                continue
            if pull.head is repo and pull.head_ref == branch:
                sha = self.head(repo, branch)
                assert sha
                if sha != pull.head_sha:
                    pull.head_sha = sha
                    pull.updated_at = self._clock
                    sgit.copy_ref(Path(repo.path), f"refs/heads/{branch}", Path(pull.base.path),
                                  f"refs/pull/{pull.number}/head")
            if pull.base is repo and pull.base_ref == branch:
                pull.base_sha = self.head(repo, branch) or pull.base_sha

    def open_pull(self, base: Repo, head: Repo, head_ref: str, title: str, author: str | None = None,
                  draft: bool = False, base_ref: str = "main") -> Pull:
        with self._lock:
            head_sha = self.head(head, head_ref)
            base_sha = self.head(base, base_ref)
            assert head_sha and base_sha
            number = 1 + max((n for (r, n) in self.pulls if r == base.full_name), default=0)
            now = self._tick()
            pull = Pull(number, self._next_id(), base, base_ref, head, head_ref, head_sha, base_sha,
                        self.user(author or head.owner.login), title, draft, now, now)
            self.pulls[(base.full_name, number)] = pull
            sgit.copy_ref(Path(head.path), f"refs/heads/{head_ref}", Path(base.path),
                          f"refs/pull/{number}/head")
            return pull

    def close_pull(self, pull: Pull) -> None:
        with self._lock:
            pull.state = "closed"
            pull.closed_at = pull.updated_at = self._tick()

    def set_draft(self, pull: Pull, draft: bool) -> None:
        with self._lock:
            pull.draft = draft
            pull.updated_at = self._tick()

    def bot_comments(self, pull: Pull, login: str) -> list[Comment]:
        with self._lock:
            return [c for c in pull.comments if c.user.login == login]

    # -- faults ------------------------------------------------------------------------------------

    def fail(self, status: int = 502, times: int = 1, method: str = "*", path: str = ".*") -> None:
        """Answer the next ``times`` matching requests with ``status`` (a 5xx: GitHub's bad day)."""
        self._add_fault(_Fault(method, re.compile(path), times, status=status))

    def delay(self, seconds: float, times: int = 1, method: str = "*", path: str = ".*") -> None:
        self._add_fault(_Fault(method, re.compile(path), times, delay_s=seconds))

    def secondary_rate_limit(self, retry_after: int = 1, times: int = 1, method: str = "*",
                             path: str = ".*") -> None:
        self._add_fault(_Fault(method, re.compile(path), times, status=403, retry_after=retry_after,
                               message=SECONDARY_LIMIT_MESSAGE))

    def exhaust_rate_limit(self, seconds: float) -> None:
        """Spend the primary rate limit: every request gets 403 until ``seconds`` from now."""
        with self._lock:
            self.remaining = 0
            self.reset_at = int(time.time() + seconds) + 1

    def corrupt(self, transform: Callable[[Any], Any], times: int = 1, method: str = "GET",
                path: str = ".*") -> None:
        """Pass the next ``times`` matching 200 bodies through ``transform`` (a malformed answer)."""
        with self._lock:
            self._rewrites.append(_Rewrite(method, re.compile(path), times, transform))

    def on_request(self, action: Callable[[], None], method: str = "*", path: str = ".*",
                   once: bool = True) -> None:
        """Run ``action`` (e.g. a force-push) just before serving the next matching request."""
        with self._lock:
            self._hooks.append(_Hook(method, re.compile(path), action, once))

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, items: list[Any], method: str, path: str) -> list[Any]:
        taken = []
        for item in list(items):
            if item.method in ("*", method) and item.pattern.fullmatch(path):
                taken.append(item)
        return taken

    # -- request counting --------------------------------------------------------------------------

    def served(self, method: str | None = None, path: str = ".*") -> list[Served]:
        with self._lock:
            rx = re.compile(path)
            return [s for s in self.requests if (method in (None, s.method)) and rx.fullmatch(s.path)]

    def writes(self) -> list[Served]:
        return [s for s in self.served() if s.method != "GET"]

    # -- HTTP --------------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as separate writes: with Nagle's algorithm and the client's
            # delayed ACK every keep-alive request would wait ~40 ms for nothing.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def _serve(self) -> None:
                standin._serve(self)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

        return Handler

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        method = h.command

        with self._lock:
            hooks = self._take(self._hooks, method, path)
            for hook in hooks:
                if hook.once:
                    self._hooks.remove(hook)
        for hook in hooks:
            hook.action()

        with self._lock:
            faults = self._take(self._faults, method, path)
            fault = faults[0] if faults else None
            if fault:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
        if fault and fault.delay_s:
            time.sleep(fault.delay_s)

        with self._lock:
            reply = self._reply(h, method, path, query, raw, fault)
            self.requests.append(Served(method, path, query, reply.status))
        self._write(h, reply)

    def _rate_headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
            "X-RateLimit-Used": str(self.rate_limit - self.remaining),
            "X-RateLimit-Resource": "core",
        }

    def _reply(self, h: BaseHTTPRequestHandler, method: str, path: str, query: dict[str, str], raw: bytes,
               fault: _Fault | None) -> _Reply:
        if time.time() >= self.reset_at:
            self.remaining, self.reset_at = self.rate_limit, int(time.time()) + 3600
        if fault and fault.status:
            if fault.status >= 500:
                return _Reply(fault.status, {"message": "Server Error"}, self._rate_headers())
            headers = self._rate_headers()
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            return _Reply(fault.status, Bodies.error(fault.message), headers)

        auth = h.headers.get("Authorization", "")
        user = self.tokens.get(auth.split(" ", 1)[1] if " " in auth else "")
        if user is None:
            return _Reply(401, Bodies.error("Bad credentials"))
        if path == "/rate_limit":  # free, as on GitHub
            return _Reply(200, Bodies.rate_limit(self.rate_limit, self.remaining, self.reset_at),
                          self._rate_headers())
        if self.remaining <= 0:
            message = PRIMARY_LIMIT_MESSAGE.format(uid=user.id)
            return _Reply(403, Bodies.error(message), self._rate_headers())

        try:
            body = json.loads(raw) if raw else None
            reply = self._route(method, path, query, body, user)
        except HttpError as exc:
            reply = _Reply(exc.status, Bodies.error(exc.message))
        except (ValueError, KeyError, TypeError) as exc:
            reply = _Reply(400, Bodies.error(f"Problems parsing JSON: {exc}"))

        for rewrite in self._take(self._rewrites, method, path):
            if reply.status < 300:
                reply.body = rewrite.transform(json.loads(json.dumps(reply.body)))
                rewrite.remaining -= 1
                if rewrite.remaining <= 0:
                    self._rewrites.remove(rewrite)
                break
        if method == "GET" and reply.status == 200:
            etag = 'W/"' + hashlib.sha256(json.dumps(reply.body, sort_keys=True).encode()).hexdigest() + '"'
            reply.headers["ETag"] = etag
            if etag in [t.strip() for t in h.headers.get("If-None-Match", "").split(",")]:
                return _Reply(304, None, {"ETag": etag, **self._rate_headers()})
        self.remaining -= 1
        reply.headers.update(self._rate_headers())
        return reply

    @staticmethod
    def _write(h: BaseHTTPRequestHandler, reply: _Reply) -> None:
        data = b"" if reply.body is None else json.dumps(reply.body).encode()
        h.send_response(reply.status)
        for key, value in reply.headers.items():
            h.send_header(key, value)
        if reply.body is not None:
            h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if data:
            h.wfile.write(data)

    # -- routes ------------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict[str, str], body: Any, user: User) -> _Reply:
        if method == "GET" and path == "/user":
            return _Reply(200, self.bodies.user(user))
        m = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", path)
        if not m:
            raise HttpError(404, "Not Found")
        repo = self.repos.get(f"{m[1]}/{m[2]}")
        if repo is None:
            raise HttpError(404, "Not Found")
        rest = m[3] or ""
        for verb, pattern, handler in self._routes():
            if verb == method and (found := re.fullmatch(pattern, rest)):
                return handler(repo, query, body, user, *[unquote(g) for g in found.groups()])
        raise HttpError(404, "Not Found")

    def _routes(self) -> list[tuple[str, str, Callable[..., _Reply]]]:
        return [
            ("GET", r"", lambda repo, q, b, u: _Reply(200, self.bodies.repo(repo, full=True))),
            ("GET", r"/pulls", self._list_pulls),
            ("GET", r"/pulls/(\d+)", self._get_pull),
            ("GET", r"/branches/([^/]+)", self._get_branch),
            ("GET", r"/issues/(\d+)/comments", self._list_comments),
            ("POST", r"/issues/(\d+)/comments", self._create_comment),
            ("PATCH", r"/issues/comments/(\d+)", self._edit_comment),
            ("GET", r"/issues/(\d+)/labels", self._issue_labels),
            ("POST", r"/issues/(\d+)/labels", self._add_labels),
            ("DELETE", r"/issues/(\d+)/labels/(.+)", self._remove_label),
            ("GET", r"/labels", self._list_labels),
            ("GET", r"/labels/(.+)", self._get_label),
            ("POST", r"/labels", self._create_label),
            ("POST", r"/statuses/([0-9a-f]{40})", self._create_status),
            ("GET", r"/commits/([0-9a-f]{40})/statuses", self._list_statuses),
            ("GET", r"/statuses/([0-9a-f]{40})", self._list_statuses),  # the older spelling PyGithub uses
        ]

    def _paginate(self, items: list[Any], query: dict[str, str], path: str) -> _Reply:
        per_page = min(int(query.get("per_page", 30)), 100)
        page = max(int(query.get("page", 1)), 1)
        last = max((len(items) + per_page - 1) // per_page, 1)
        reply = _Reply(200, items[(page - 1) * per_page: page * per_page])
        links = []
        for rel, number in (("prev", page - 1), ("next", page + 1), ("first", 1), ("last", last)):
            if (rel in ("next", "last") and page < last) or (rel in ("prev", "first") and page > 1):
                params = urlencode({**query, "page": number})
                links.append(f'<{self.api_url}{path}?{params}>; rel="{rel}"')
        if links:
            reply.headers["Link"] = ", ".join(links)
        return reply

    def _pull(self, repo: Repo, number: str) -> Pull:
        pull = self.pulls.get((repo.full_name, int(number)))
        if pull is None:
            raise HttpError(404, "Not Found")
        return pull

    def _list_pulls(self, repo: Repo, query: dict[str, str], body: Any, user: User) -> _Reply:
        state = query.get("state", "open")
        pulls = [p for (r, _), p in self.pulls.items() if r == repo.full_name]
        pulls = [p for p in pulls if state == "all" or p.state == state]
        if "base" in query:
            pulls = [p for p in pulls if p.base_ref == query["base"]]
        sort = query.get("sort", "created")
        default_direction = "desc" if sort == "created" else "asc"
        key = (lambda p: p.updated_at) if sort == "updated" else (lambda p: p.created_at)
        pulls.sort(key=key, reverse=query.get("direction", default_direction) == "desc")
        items = [self.bodies.pull(p, full=False) for p in pulls]
        return self._paginate(items, query, f"/repos/{repo.full_name}/pulls")

    def _get_pull(self, repo: Repo, query: dict[str, str], body: Any, user: User, number: str) -> _Reply:
        return _Reply(200, self.bodies.pull(self._pull(repo, number), full=True))

    def _get_branch(self, repo: Repo, query: dict[str, str], body: Any, user: User, name: str) -> _Reply:
        sha = self.head(repo, name)
        if sha is None:
            raise HttpError(404, "Branch not found")
        path = Path(repo.path)
        author = sgit.git(path, "log", "-1", "--format=%an", sha)
        when = float(sgit.git(path, "log", "-1", "--format=%at", sha))
        message = sgit.git(path, "log", "-1", "--format=%B", sha)
        return _Reply(200, self.bodies.branch(repo, name, sha, sgit.parent_of(path, sha),
                                              self.user(author), when, message))

    def _list_comments(self, repo: Repo, query: dict[str, str], body: Any, user: User, number: str) -> _Reply:
        pull = self._pull(repo, number)
        items = [self.bodies.comment(pull, c) for c in pull.comments]
        return self._paginate(items, query, f"/repos/{repo.full_name}/issues/{number}/comments")

    def _create_comment(self, repo: Repo, query: dict[str, str], body: Any, user: User,
                        number: str) -> _Reply:
        pull = self._pull(repo, number)
        if not isinstance(body, dict) or not isinstance(body.get("body"), str):
            raise HttpError(422, "Validation Failed")
        now = time.time()
        comment = Comment(self._next_id(), user, body["body"], now, now)
        pull.comments.append(comment)
        pull.updated_at = self._tick()
        return _Reply(201, self.bodies.comment(pull, comment))

    def _edit_comment(self, repo: Repo, query: dict[str, str], body: Any, user: User, cid: str) -> _Reply:
        for pull in self.pulls.values():
            for comment in pull.comments:
                if pull.base is repo and comment.id == int(cid):
                    comment.body = body["body"]
                    comment.updated_at = time.time()
                    return _Reply(200, self.bodies.comment(pull, comment))
        raise HttpError(404, "Not Found")

    def _issue_labels(self, repo: Repo, query: dict[str, str], body: Any, user: User, number: str) -> _Reply:
        pull = self._pull(repo, number)
        items = [self.bodies.label(repo, repo.labels[n]) for n in pull.labels]
        return self._paginate(items, query, f"/repos/{repo.full_name}/issues/{number}/labels")

    def _add_labels(self, repo: Repo, query: dict[str, str], body: Any, user: User, number: str) -> _Reply:
        pull = self._pull(repo, number)
        names = body["labels"] if isinstance(body, dict) else body
        for name in names:
            if name not in repo.labels:
                repo.labels[name] = Label(self._next_id(), name, "ededed", "")
            if name not in pull.labels:
                pull.labels.append(name)
                pull.updated_at = self._tick()
        return _Reply(200, [self.bodies.label(repo, repo.labels[n]) for n in pull.labels])

    def _remove_label(self, repo: Repo, query: dict[str, str], body: Any, user: User, number: str,
                      name: str) -> _Reply:
        pull = self._pull(repo, number)
        if name not in pull.labels:
            raise HttpError(404, "Label does not exist")
        pull.labels.remove(name)
        pull.updated_at = self._tick()
        return _Reply(200, [self.bodies.label(repo, repo.labels[n]) for n in pull.labels])

    def _list_labels(self, repo: Repo, query: dict[str, str], body: Any, user: User) -> _Reply:
        items = [self.bodies.label(repo, lab) for lab in repo.labels.values()]
        return self._paginate(items, query, f"/repos/{repo.full_name}/labels")

    def _get_label(self, repo: Repo, query: dict[str, str], body: Any, user: User, name: str) -> _Reply:
        if name not in repo.labels:
            raise HttpError(404, "Not Found")
        return _Reply(200, self.bodies.label(repo, repo.labels[name]))

    def _create_label(self, repo: Repo, query: dict[str, str], body: Any, user: User) -> _Reply:
        name = body["name"]
        if name in repo.labels:
            raise HttpError(422, "Validation Failed")
        color, description = body.get("color", "ededed"), body.get("description", "")
        repo.labels[name] = Label(self._next_id(), name, color, description)
        return _Reply(201, self.bodies.label(repo, repo.labels[name]))

    def _create_status(self, repo: Repo, query: dict[str, str], body: Any, user: User, sha: str) -> _Reply:
        if body.get("state") not in ("error", "failure", "pending", "success"):
            raise HttpError(422, "Validation Failed")
        status = Status(self._next_id(), sha, body["state"], body.get("description", ""),
                        body.get("target_url", ""), body.get("context", "default"), user, time.time())
        self.statuses.setdefault(sha, []).append(status)
        return _Reply(201, self.bodies.status(repo, status))

    def _list_statuses(self, repo: Repo, query: dict[str, str], body: Any, user: User, sha: str) -> _Reply:
        """Newest first, as GitHub lists them; each with its context."""
        listed = [{**self.bodies.status(repo, s), "context": s.context} for s in reversed(self.statuses.get(sha, []))]
        return self._paginate(listed, query, f"/repos/{repo.full_name}/statuses/{sha}")
