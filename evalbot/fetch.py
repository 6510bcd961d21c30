"""Fetch contributors' commits into a bare mirror cache and export their trees, running nothing of theirs.

One bare mirror per repository lives under ``<cache_dir>/git``. Commits are fetched from the
repository itself, from a fork (same object network) or through a PR ref (``pull/N/head``); each
fetched commit is pinned by a ref so a later ``gc`` cannot drop it, and a commit already in the
mirror is never fetched again. Trees are exported with ``git archive`` into a fresh directory.

What candidate repositories could use against us, and what stops it:

* hooks (``reference-transaction`` fires during a fetch): ``core.hooksPath=/dev/null``;
* submodules: never fetched or exported (``git archive`` leaves a gitlink as an empty directory);
* LFS / smudge filters (``git archive`` runs them): no system or global git config is read, so no
  filter driver exists, and ``GIT_LFS_SKIP_SMUDGE=1`` for good measure;
* transports that run commands (``ext::``) or unexpected remote helpers: ``protocol.allow=never``
  with only :data:`ALLOWED_PROTOCOLS` re-enabled;
* malformed objects (tree entries named ``..`` or ``.git``): ``transfer.fsckObjects``;
* archive members escaping the export directory, device files, setuid bits: :mod:`tarfile`'s
  ``tar`` filter; symlinks leading out of the tree are left for :mod:`evalbot.manifest` to refuse;
* huge trees: export stops past :data:`MAX_TREE_BYTES` / :data:`MAX_TREE_FILES`;
* credentials: git runs with an empty environment and home directory, so no token or key is sent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import signal
import subprocess
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from evalbot.errors import EvalbotError

ALLOWED_PROTOCOLS = ("https", "ssh", "git", "file")
MAX_TREE_BYTES = 512 * 2**20
MAX_TREE_FILES = 50_000

_SHA = re.compile(r"[0-9a-f]{40}")
_PR = re.compile(r"(?:refs/)?pull/(\d+)/(head|merge)")
_PIN = "refs/evalbot/commits/"


class FetchError(EvalbotError):
    pass


def _git_config() -> list[str]:
    settings = {
        "core.hooksPath": "/dev/null",
        "core.fsmonitor": "false",
        "protocol.allow": "never",
        **{f"protocol.{proto}.allow": "always" for proto in ALLOWED_PROTOCOLS},
        "transfer.fsckObjects": "true",
        "fetch.recurseSubmodules": "false",
        "submodule.recurse": "false",
        "gc.auto": "0",
        "credential.helper": "",
    }
    return [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]


def _git_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_LFS_SKIP_SMUDGE": "1",
        "GIT_PROTOCOL_FROM_USER": "0",
        "GIT_ASKPASS": "true",
        "SSH_ASKPASS": "true",
    }


def normalize_url(url: str) -> str:
    """Remote URLs pass through; a local path becomes absolute so the mirror key does not depend on cwd."""
    if url.startswith("-"):
        raise FetchError(f"{url!r} looks like an option, not a repository URL")
    if "://" in url or re.match(r"^[\w.-]+@[\w.-]+:", url) or "::" in url:
        return url
    return str(Path(url).expanduser().resolve())


class Mirror:
    """The bare mirror of one repository (keyed by its URL) in ``cache_dir``."""

    def __init__(self, cache_dir: Path, url: str, timeout_s: float = 300.0) -> None:
        self.url = normalize_url(url)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.url.rstrip("/").removesuffix(".git"))[-48:].strip("-")
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.path = Path(cache_dir) / "git" / f"{slug}-{digest}.git"
        self.timeout_s = timeout_s
        self._home = Path(cache_dir) / "git" / "empty-home"

    # -- public -----------------------------------------------------------------------------------

    def has_commit(self, sha: str) -> bool:
        if not _SHA.fullmatch(sha) or not (self.path / "HEAD").exists():
            return False
        return self._git(["cat-file", "-e", f"{sha}^{{commit}}"], check=False).returncode == 0

    def fetch(self, rev: str, *, from_url: str | None = None) -> str:
        """Fetch ``rev`` (a full SHA, ``pull/N/head``, a branch, tag or ref) and return its commit SHA.

        A full SHA already in the mirror is answered without touching the network. ``from_url``
        fetches from another repository of the same network (a fork).
        """
        rev = rev.strip()
        if not rev or rev.startswith("-") or any(c in rev for c in " \t\n:~^\\*?["):
            raise FetchError(f"{rev!r} is not a commit SHA or ref name")
        source = normalize_url(from_url) if from_url else self.url
        with self._locked():
            if self.has_commit(rev):
                return rev
            ref = rev if _SHA.fullmatch(rev) else self._qualify(rev)
            tmp = "refs/evalbot/fetching"
            self._run_fetch(source, f"+{ref}:{tmp}", rev)
            sha = self._git(["rev-parse", "--verify", f"{tmp}^{{commit}}"], check=False).stdout.strip()
            if not _SHA.fullmatch(sha):
                raise FetchError(f"{source}: {rev} is not a commit")
            self._git(["update-ref", f"{_PIN}{sha}", sha])
            self._git(["update-ref", "-d", tmp])
            return sha

    def fetch_commit(self, sha: str, *, refs: Sequence[str] = (), from_url: str | None = None) -> str:
        """Make sure commit ``sha`` is in the mirror, fetching ``refs`` first, then the SHA itself.

        Servers that refuse fetches by SHA still serve a PR ref whose history contains it.
        """
        if not _SHA.fullmatch(sha):
            raise FetchError(f"{sha!r} is not a full 40-hex commit SHA")
        if self.has_commit(sha):
            return sha
        tried = []
        for ref in (*refs, sha):
            try:
                self.fetch(ref, from_url=from_url)
            except FetchError as exc:
                tried.append(str(exc))
                continue
            if self.has_commit(sha):
                with self._locked():
                    self._git(["update-ref", f"{_PIN}{sha}", sha])
                return sha
            tried.append(f"{ref} does not contain {sha}")
        raise FetchError(f"commit {sha} not found in {from_url or self.url}: {'; '.join(tried)}")

    def export(self, sha: str, dest: Path) -> Path:
        """Write the tree of commit ``sha`` into the new directory ``dest`` with ``git archive``."""
        if not self.has_commit(sha):
            raise FetchError(f"commit {sha} is not in the mirror of {self.url}; fetch it first")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=False)
        budget = _TreeBudget()
        proc = subprocess.Popen(
            ["git", *_git_config(), "-C", str(self.path), "archive", "--format=tar", sha],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_git_env(self._home), start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
                archive.extractall(dest, filter=budget.filter)
        except (tarfile.TarError, OSError) as exc:
            _kill_group(proc)
            raise FetchError(f"cannot export {sha} from {self.url}: {exc}") from None
        try:
            proc.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise FetchError(f"git archive {sha} timed out after {self.timeout_s:g} s") from None
        if proc.returncode != 0:
            raise FetchError(f"git archive {sha} failed: {_git_message(proc.stderr.read())}")
        return dest

    # -- internals --------------------------------------------------------------------------------

    @staticmethod
    def _qualify(rev: str) -> str:
        if match := _PR.fullmatch(rev):
            return f"refs/pull/{match[1]}/{match[2]}"
        return rev  # branch / tag names: the remote side resolves them like `git fetch` does

    def _run_fetch(self, source: str, refspec: str, rev: str) -> None:
        done = self._git(
            ["fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head", source, refspec],
            check=False,
        )
        if done.returncode != 0:
            raise FetchError(f"{source}: cannot fetch {rev}: {_git_message(done.stderr)}")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise writers of one mirror (two validator workers may fetch into it at once)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._home.mkdir(exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (self.path / "HEAD").exists():
                self.path.mkdir(parents=True, exist_ok=True)
                self._git(["init", "--quiet", "--bare"])
            yield

    def _git(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.Popen(
            ["git", *_git_config(), "-C", str(self.path), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            env=_git_env(self._home), start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise FetchError(f"git {args[0]} in {self.path} timed out after {self.timeout_s:g} s") from None
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check and done.returncode != 0:
            raise FetchError(f"git {' '.join(args[:2])} in {self.path} failed: {_git_message(err)}")
        return done


class _TreeBudget:
    """A tarfile filter that applies the ``tar`` filter and stops a tree that is too large."""

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0

    def filter(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        self.files += 1
        self.bytes += member.size
        if self.files > MAX_TREE_FILES or self.bytes > MAX_TREE_BYTES:
            raise tarfile.TarError(f"tree is larger than {MAX_TREE_FILES} files / {MAX_TREE_BYTES} bytes")
        return tarfile.tar_filter(member, dest)


def _kill_group(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _git_message(text: str | bytes) -> str:
    """git's own diagnosis: its first ``fatal:`` / ``error:`` line, else its last line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    flagged = [line for line in lines if line.startswith(("fatal:", "error:"))]
    line = (flagged or lines or ["no message"])[0 if flagged else -1]
    return line.removeprefix("fatal:").removeprefix("error:").strip()[:300]
