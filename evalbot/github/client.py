"""PyGithub, configured for a daemon: retries with backoff, rate limits respected, conditional reads.

* Transport retries (PyGithub's ``GithubRetry`` on urllib3): 5xx, 429, timeouts and 403 secondary
  rate limits are retried with exponential backoff or ``Retry-After``. POST is never retried at this
  level: a POST that timed out may have been applied, and re-sending it could double-post; instead the
  whole publish step is retried later and is idempotent (see ``publisher.py``).
* The primary rate limit: PyGithub records ``X-RateLimit-Remaining``/``-Reset`` from every response;
  :meth:`GithubClient.rate_limit_wait` tells the poller how long to pause before spending the reserve,
  and a request that hits the limit anyway waits in place at most ``_MAX_WAIT_IN_REQUEST_S`` before
  surfacing as :class:`GithubUnavailable` with the time to wait.
* Reads the poller repeats every interval are conditional (``If-None-Match`` with the last ``ETag``):
  GitHub answers ``304 Not Modified``, which does not count against the rate limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import github
import requests
from github import Auth, Github, GithubException, GithubRetry
from github.Repository import Repository
from github.Requester import Requester

from evalbot.config import GithubConfig
from evalbot.errors import EvalbotError
from evalbot.github.heads import (
    BranchHead,
    GithubDataError,
    PullHead,
    parse_branch,
    parse_pull,
    parse_pulls,
)

_MAX_WAIT_IN_REQUEST_S = 30.0
_SECONDARY_DEFAULT_WAIT_S = 60.0  # GitHub's advice when a secondary limit names no Retry-After
_PER_PAGE = 100
# Idempotent verbs only; see the module docstring for POST.
_RETRIED_METHODS = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})


class GithubUnavailable(EvalbotError):
    """GitHub is down, slow or rate-limiting us: try again later (after ``wait_s`` when known)."""

    def __init__(self, message: str, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.wait_s = wait_s


class GithubRejected(EvalbotError):
    """GitHub refused the request itself (bad token, missing repository, invalid input)."""


def _message(exc: GithubException) -> str:
    data = exc.data if isinstance(exc.data, dict) else {}
    text = data.get("message") or exc.message or ""
    return f"{exc.status} {text}".strip()


def _rate_wait(exc: github.RateLimitExceededException, clock: Callable[[], float]) -> float:
    """How long GitHub asked us to back off: ``Retry-After``, the primary reset, or a minute."""
    wait = getattr(exc, "wait", None)  # set when GithubRetry declined to wait that long in place
    if wait is not None:
        return float(wait)
    headers = {k.lower(): v for k, v in (exc.headers or {}).items()}
    retry_after = str(headers.get("retry-after", ""))
    if retry_after.isdigit():
        return float(retry_after)
    message = exc.data.get("message", "") if isinstance(exc.data, dict) else ""
    reset = str(headers.get("x-ratelimit-reset", ""))
    # Only the primary limit ends at X-RateLimit-Reset; a secondary one carries that header too.
    if Requester.isPrimaryRateLimitError(message) and reset.isdigit():
        return max(int(reset) - clock(), 0.0) + 1.0
    return _SECONDARY_DEFAULT_WAIT_S


def _transport_failure(exc: requests.RequestException) -> str:
    """What went wrong below HTTP, in a few words (urllib3's full text repeats the whole URL)."""
    reason = exc.args[0] if exc.args else exc
    reason = getattr(reason, "reason", None) or reason
    if isinstance(exc, requests.exceptions.RetryError):
        return f"GitHub kept failing, retries spent ({reason})"
    if isinstance(exc, requests.exceptions.Timeout):
        return "GitHub did not answer in time, retries spent"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"cannot reach GitHub ({type(reason).__name__})"
    return f"{type(exc).__name__}: {reason}"


@contextmanager
def github_call(what: str, clock: Callable[[], float] = time.time) -> Iterator[None]:
    """Turn PyGithub/requests failures into one-line :class:`GithubUnavailable`/:class:`GithubRejected`."""
    try:
        yield
    except github.RateLimitExceededException as exc:
        raise GithubUnavailable(f"{what}: GitHub rate limit ({_message(exc)})", wait_s=_rate_wait(exc, clock)) from None
    except github.BadAttributeException as exc:
        raise GithubDataError(f"{what}: GitHub sent an unexpected value ({exc.actual_value!r})") from None
    except GithubException as exc:
        if exc.status >= 500 or exc.status == 429:
            raise GithubUnavailable(f"{what}: GitHub answered {_message(exc)}") from None
        if exc.status == 401:
            raise GithubRejected(f"{what}: GitHub rejected the token ({_message(exc)})") from None
        raise GithubRejected(f"{what}: GitHub answered {_message(exc)}") from None
    except requests.RequestException as exc:
        raise GithubUnavailable(f"{what}: {_transport_failure(exc)}") from None


class GithubClient:
    """The configured repository on GitHub, as the poller and the publisher use it."""

    def __init__(self, cfg: GithubConfig, token: str, clock: Callable[[], float] = time.time) -> None:
        owner, _, name = cfg.repo.partition("/")
        if not owner or not name or "/" in name:
            raise EvalbotError(f"[github] repo: expected 'owner/name', got {cfg.repo!r}")
        self.cfg = cfg
        self.repo_name = cfg.repo
        self.clock = clock
        retry = GithubRetry(
            total=cfg.retries,
            backoff_factor=cfg.backoff_s,
            max_rate_limit_wait=_MAX_WAIT_IN_REQUEST_S,
            allowed_methods=_RETRIED_METHODS,
            status_forcelist=[*range(500, 600), 429],
        )
        self.gh = Github(
            auth=Auth.Token(token),
            base_url=cfg.api_url.rstrip("/"),
            timeout=cfg.timeout_s,
            retry=retry,
            per_page=_PER_PAGE,
            seconds_between_requests=cfg.request_interval_s or None,
            seconds_between_writes=cfg.write_interval_s or None,
            lazy=True,  # objects are addressed by URL; only the calls we make are sent
        )
        self.repo: Repository = self.gh.get_repo(self.repo_name)
        self._cache: dict[str, tuple[str, Any, dict[str, Any]]] = {}
        self._login: str | None = None
        self._open_pulls: list[PullHead] | None = None
        self._clone_url: str | None = None
        # A rate-limited request that gave up raised inside the transport, before PyGithub could
        # note the response's X-RateLimit-* headers; the wait it reported is kept here instead.
        self._blocked_until = 0.0

    @contextmanager
    def call(self, what: str) -> Iterator[None]:
        """:func:`github_call`, also remembering a rate-limit wait for :meth:`rate_limit_wait`."""
        try:
            with github_call(what, self.clock):
                yield
        except GithubUnavailable as exc:
            if exc.wait_s is not None:
                self._blocked_until = max(self._blocked_until, self.clock() + exc.wait_s)
            raise

    # -- conditional reads -----------------------------------------------------------------------

    def _get(self, url: str, params: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any], bool]:
        """GET with ``If-None-Match``. Returns (body, headers, changed); a 304 returns the cached body."""
        key = url + ("?" + json.dumps(params, sort_keys=True) if params else "")
        cached = self._cache.get(key)
        headers = {"If-None-Match": cached[0]} if cached else {}
        status, resp_headers, output = self.gh.requester.requestJson("GET", url, params, headers)
        if status == 304 and cached:
            return cached[1], cached[2], False
        data = json.loads(output) if output else None
        if status >= 400:
            raise self.gh.requester.createException(status, resp_headers, data)
        if status != 200:
            raise GithubException(status, data, resp_headers, "unexpected status")
        etag = resp_headers.get("etag")
        if etag:
            self._cache[key] = (etag, data, resp_headers)
        return data, resp_headers, True

    def open_pulls(self, base_ref: str) -> list[PullHead]:
        """Open PRs into ``base_ref``, most recently updated first.

        Sorted by ``updated`` so that any change the poller cares about (new PR, new head commit,
        draft toggled, closed, retargeted) moves that PR to the top of page 1; a 304 on page 1
        therefore means nothing changed, and the remaining pages are not requested at all. An idle
        poll costs one request whatever the number of open PRs. A PR that is closed while far down
        the list may stay in the cached list until page 1 changes; the poller re-reads each PR
        (:meth:`pull`) before evaluating it, so a stale entry is never evaluated.
        """
        url = f"/repos/{self.repo_name}/pulls"
        params = {"state": "open", "base": base_ref, "sort": "updated", "direction": "desc",
                  "per_page": _PER_PAGE}
        with self.call(f"listing open pull requests of {self.repo_name}"):
            data, headers, changed = self._get(url, params)
            if not changed and self._open_pulls is not None:
                return self._open_pulls
            self._open_pulls = None  # until the whole listing parses
            items = list(data)
            page = 1
            while 'rel="next"' in headers.get("link", ""):
                page += 1
                more, headers, _ = self._get(url, {**params, "page": page})
                items.extend(more)
            self._open_pulls = parse_pulls(items)
            return self._open_pulls

    def pull(self, number: int) -> PullHead:
        with self.call(f"reading pull request #{number} of {self.repo_name}"):
            data, _, _ = self._get(f"/repos/{self.repo_name}/pulls/{number}")
            return parse_pull(data)

    def branch(self, name: str) -> BranchHead:
        with self.call(f"reading branch {name!r} of {self.repo_name}"):
            data, _, _ = self._get(f"/repos/{self.repo_name}/branches/{quote(name, safe='')}")
            return parse_branch(data)

    def clone_url(self) -> str:
        """Where the repository's commits (and ``refs/pull/N/head``) are fetched; read once."""
        if self._clone_url is None:
            with self.call(f"reading repository {self.repo_name}"):
                data, _, _ = self._get(f"/repos/{self.repo_name}")
            url = data.get("clone_url") if isinstance(data, dict) else None
            if not isinstance(url, str):
                raise GithubDataError(f"GitHub sent repository {self.repo_name} without 'clone_url'")
            self._clone_url = url
        return self._clone_url

    def label_exists(self, name: str) -> bool:
        with self.call(f"reading the label {name!r} of {self.repo_name}"):
            url = f"/repos/{self.repo_name}/labels/{quote(name, safe='')}"
            status, headers, output = self.gh.requester.requestJson("GET", url)
            if status == 404:
                return False
            if status >= 400:
                data = json.loads(output) if output else None
                raise self.gh.requester.createException(status, headers, data)
            return True

    def login(self) -> str:
        """The account the token belongs to (one request per process): whose comments are ours."""
        if self._login is None:
            with self.call("reading the authenticated user"):
                data, _, _ = self._get("/user")
            login = data.get("login") if isinstance(data, dict) else None
            if not isinstance(login, str):
                raise GithubRejected("reading the authenticated user: GitHub sent no login")
            self._login = login
        return self._login

    # -- rate limit --------------------------------------------------------------------------------

    def rate_limit_wait(self) -> float:
        """Seconds to pause before the next burst of requests (0 when the reserve is not reached)."""
        now = self.clock()
        blocked = max(self._blocked_until - now, 0.0)
        remaining, _limit = self.gh.requester.rate_limiting
        if remaining < 0 or remaining > self.cfg.rate_limit_reserve:
            return blocked
        return max(blocked, self.gh.requester.rate_limiting_resettime - now + 1.0, 0.0)
