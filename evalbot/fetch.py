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
* ``.gitattributes`` that rewrite content on export (``ident``, ``export-subst``, eol conversion,
  ``working-tree-encoding``) or hide files (``export-ignore``): overridden by the mirror's
  ``info/attributes``, so the exported files are the commit's blobs byte for byte;
* transports that run commands (``ext::``) or unexpected remote helpers: ``protocol.allow=never``
  with only :data:`ALLOWED_PROTOCOLS` re-enabled;
* malformed objects (tree entries named ``..`` or ``.git``): ``transfer.fsckObjects``;
* archive members escaping the export directory, device files, setuid bits: :mod:`tarfile`'s
  ``tar`` filter; symlinks leading out of the tree are left for :mod:`evalbot.manifest` to refuse;
* huge trees, tree bombs (a few hundred bytes of trees whose entries all point at one subtree,
  nested: 10^10 paths): the tree is measured before ``git archive`` runs, one read per distinct
  tree object, and refused past :data:`MAX_TREE_FILES` paths, :data:`MAX_TREE_BYTES` bytes, or a
  name / path the file system cannot hold (:class:`CommitRejected`);
* huge fetches: a fetch that adds more than ``max_fetch_bytes`` to the mirror is killed and its
  objects removed (:class:`CommitRejected` when the objects are a contributor's);
* git's own memory and time: every git process runs under ``prlimit --as`` (:data:`GIT_MEMORY_BYTES`)
  with bounded pack windows and caches, and is killed with its process group past ``timeout_s``;
  an export (measure + archive + extract) has one ``timeout_s`` for all of it;
* credentials: git runs with an empty environment and home directory, so no token or key is sent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evalbot.errors import EvalbotError

log = logging.getLogger("evalbot.fetch")

ALLOWED_PROTOCOLS = ("https", "ssh", "git", "file")
MAX_TREE_BYTES = 512 * 2**20  # sum of the sizes of every exported file (a shared blob counts each time)
MAX_TREE_FILES = 50_000  # paths in the export: files, links, directories, gitlinks
MAX_NAME_BYTES = 255  # NAME_MAX: a longer name cannot be extracted
MAX_PATH_BYTES = 4096  # PATH_MAX
MAX_FETCH_BYTES = 2**30  # what one fetch may add to a mirror's objects/
GIT_MEMORY_BYTES = 2 * 2**30  # address space of each git process (RLIMIT_AS)
_WATCH_INTERVAL_S = 0.1

_SHA = re.compile(r"[0-9a-f]{40}")
_PR = re.compile(r"(?:refs/)?pull/(\d+)/(head|merge)")
_PIN = "refs/evalbot/commits/"
_FETCHING = "refs/evalbot/fetching"
# Highest-precedence attributes: nothing in the commit's .gitattributes changes what is exported.
_NEUTRAL_ATTRIBUTES = "* -ident -text !eol -export-subst -export-ignore -filter -working-tree-encoding\n"
# A tree object larger than this has more entries than MAX_TREE_FILES or a name longer than
# MAX_NAME_BYTES (an entry is "<mode> <name>\0" and a 20-byte id).
_MAX_TREE_OBJECT = MAX_TREE_FILES * (MAX_NAME_BYTES + 28)
_OUT_OF_MEMORY = re.compile(r"out of memory|cannot allocate memory|mmap failed", re.I)


class FetchError(EvalbotError):
    pass


class CommitRejected(FetchError):
    """The commit itself cannot be taken: its tree is too large or malformed to export, or fetching it
    brings more than the fetch cap. Deterministic and the author's to fix: when the commit is the one
    under evaluation this is a REJECT with this message as the reason, never a retried failure."""

    contributor_fault = True  # read by evalbot.faults.classify


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
        # Memory: git's defaults scale with the machine (pack windows up to 8 GiB, one delta
        # thread per core, each with its own window); these keep a git process well inside
        # GIT_MEMORY_BYTES whatever it reads.
        "core.packedGitLimit": "256m",
        "core.packedGitWindowSize": "32m",
        "core.deltaBaseCacheLimit": "64m",
        "core.bigFileThreshold": "64m",  # larger blobs are streamed, never held whole
        "pack.windowMemory": "64m",
        "pack.deltaCacheSize": "64m",
        "pack.threads": "1",
        # Every fetch lands as one pack file, written as it arrives: the size watchdog sees it grow.
        "fetch.unpackLimit": "1",
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


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


@dataclass(frozen=True)
class TreeSize:
    """A tree as ``git archive`` would write it: ``paths`` members, ``bytes`` of file content, and
    its longest path in bytes (shared subtrees and blobs count once per place they appear)."""

    paths: int
    bytes: int
    longest: int


class Mirror:
    """The bare mirror of one repository (keyed by its URL) in ``cache_dir``."""

    def __init__(self, cache_dir: Path, url: str, timeout_s: float = 300.0,
                 max_fetch_bytes: int = MAX_FETCH_BYTES) -> None:
        self.url = normalize_url(url)
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.url.rstrip("/").removesuffix(".git"))[-48:].strip("-")
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.path = Path(cache_dir) / "git" / f"{slug}-{digest}.git"
        self.timeout_s = timeout_s
        self.max_fetch_bytes = max_fetch_bytes
        self._home = Path(cache_dir) / "git" / "empty-home"

    # -- public -----------------------------------------------------------------------------------

    def has_commit(self, sha: str) -> bool:
        if not _SHA.fullmatch(sha) or not (self.path / "HEAD").exists():
            return False
        return self._git(["cat-file", "-e", f"{sha}^{{commit}}"], check=False).returncode == 0

    def fetch(self, rev: str, *, from_url: str | None = None, contributor: bool = False) -> str:
        """Fetch ``rev`` (a full SHA, ``pull/N/head``, a branch, tag or ref) and return its commit SHA.

        A full SHA already in the mirror is answered without touching the network. ``from_url``
        fetches from another repository of the same network (a fork). ``contributor``: the objects
        are a contributor's (a PR head), so a fetch over the cap is :class:`CommitRejected`; else
        (the base branch, the frontier) it is an infrastructure :class:`FetchError`.
        """
        rev = rev.strip()
        if not rev or rev.startswith("-") or any(c in rev for c in " \t\n:~^\\*?["):
            raise FetchError(f"{rev!r} is not a commit SHA or ref name")
        source = normalize_url(from_url) if from_url else self.url
        with self._locked():
            if self.has_commit(rev):
                return rev
            ref = rev if _SHA.fullmatch(rev) else self._qualify(rev)
            self._run_fetch(source, f"+{ref}:{_FETCHING}", rev, contributor)
            sha = self._git(["rev-parse", "--verify", f"{_FETCHING}^{{commit}}"], check=False).stdout.strip()
            if not _SHA.fullmatch(sha):
                raise FetchError(f"{source}: {rev} is not a commit")
            self._git(["update-ref", f"{_PIN}{sha}", sha])
            self._git(["update-ref", "-d", _FETCHING])
            return sha

    def fetch_commit(self, sha: str, *, refs: Sequence[str] = (), from_url: str | None = None,
                     contributor: bool = False) -> str:
        """Make sure commit ``sha`` is in the mirror, fetching ``refs`` first, then the SHA itself.

        Servers that refuse fetches by SHA still serve a PR ref whose history contains it. A fetch
        over the cap is not tried another way: the same objects would come again.
        """
        if not _SHA.fullmatch(sha):
            raise FetchError(f"{sha!r} is not a full 40-hex commit SHA")
        if self.has_commit(sha):
            return sha
        tried = []
        for ref in (*refs, sha):
            try:
                self.fetch(ref, from_url=from_url, contributor=contributor)
            except CommitRejected:
                raise
            except FetchError as exc:
                tried.append(str(exc))
                continue
            if self.has_commit(sha):
                with self._locked():
                    self._git(["update-ref", f"{_PIN}{sha}", sha])
                return sha
            tried.append(f"{ref} does not contain {sha}")
        raise FetchError(f"commit {sha} not found in {from_url or self.url}: {'; '.join(tried)}")

    def measure(self, sha: str, *, deadline: float | None = None) -> TreeSize:
        """Measure the tree of commit ``sha`` without expanding it, and refuse it past the caps.

        Each distinct tree object is read once (``git cat-file --batch-command``) and its expanded
        size remembered, so a subtree shared by many entries costs one read, and the walk stops as
        soon as any running total passes a cap: the work is bounded by the caps, not by the tree.
        Raises :class:`CommitRejected` naming the cap.
        """
        deadline = time.monotonic() + self.timeout_s if deadline is None else deadline
        proc = self._spawn(["cat-file", "--batch-command"], stdin=subprocess.PIPE)
        with _Watchdog(proc, deadline) as dog:
            try:
                return _TreeWalk(sha, proc).run()
            except (OSError, ValueError) as exc:
                if dog.reason:
                    raise FetchError(f"measuring the tree of {sha}: {dog.reason} after {self.timeout_s:g} s") from None
                raise FetchError(f"cannot read the tree of {sha} in {self.path}: {exc}") from None
            finally:
                _kill_group(proc)

    def export(self, sha: str, dest: Path) -> Path:
        """Write the tree of commit ``sha`` into the new directory ``dest`` with ``git archive``,
        after :meth:`measure` accepted it; all of it within ``timeout_s``."""
        if not self.has_commit(sha):
            raise FetchError(f"commit {sha} is not in the mirror of {self.url}; fetch it first")
        deadline = time.monotonic() + self.timeout_s
        dest = Path(dest)
        with self._locked(shared=True):
            self._neutralise_attributes()
            self.measure(sha, deadline=deadline)
            dest.mkdir(parents=True, exist_ok=False)
            budget = _TreeBudget()
            proc = self._spawn(["archive", "--format=tar", sha])
            assert proc.stdout is not None and proc.stderr is not None
            with _Watchdog(proc, deadline) as dog:
                try:
                    with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
                        archive.extractall(dest, filter=budget.filter)
                    proc.wait()
                except (tarfile.TarError, OSError) as exc:
                    _kill_group(proc)
                    if dog.reason:
                        raise FetchError(f"exporting {sha}: {dog.reason} after {self.timeout_s:g} s") from None
                    raise FetchError(f"cannot export {sha} from {self.url}: {exc}") from None
            if dog.reason:
                raise FetchError(f"exporting {sha}: {dog.reason} after {self.timeout_s:g} s")
            if proc.returncode != 0:
                raise FetchError(f"git archive {sha} failed: {_git_message(proc.stderr.read())}")
        return dest

    def prune(self, keep: set[str]) -> None:
        """Drop every commit but ``keep`` (and their history) from the mirror, and their objects.

        Called after each evaluation with what later jobs need (the frontier, the base branch);
        everything else is fetched again should it be wanted. Best effort: a failure is logged
        and leaves the mirror as it was (``git gc`` replaces packs atomically).
        """
        if not (self.path / "HEAD").exists():
            return
        try:
            with self._locked():
                listed = self._git(["for-each-ref", "--format=%(objectname) %(refname)"]).stdout.splitlines()
                drop = [ref for sha, _, ref in (line.partition(" ") for line in listed) if sha not in keep]
                if drop:
                    self._git(["update-ref", "--stdin"], stdin="".join(f"delete {ref}\n" for ref in drop))
                for sha in keep:
                    if self.has_commit(sha):
                        self._git(["update-ref", f"{_PIN}{sha}", sha])
                self._git(["gc", "--quiet", "--prune=now"])
        except FetchError as exc:
            log.warning("pruning the mirror %s failed (it stays as it was): %s", self.path, exc)

    # -- internals --------------------------------------------------------------------------------

    @staticmethod
    def _qualify(rev: str) -> str:
        if match := _PR.fullmatch(rev):
            return f"refs/pull/{match[1]}/{match[2]}"
        return rev  # branch / tag names: the remote side resolves them like `git fetch` does

    def _run_fetch(self, source: str, refspec: str, rev: str, contributor: bool) -> None:
        """``git fetch`` with a watchdog on what it adds to ``objects/``: past the cap git is killed
        and everything it added removed, so the mirror is as it was before."""
        objects = self.path / "objects"
        before = _files(objects)
        cap = self.max_fetch_bytes
        # The pack is one file: RLIMIT_FSIZE stops it at the cap exactly; the watchdog polls the total.
        kept = False
        try:
            done = self._git(
                ["fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head", source,
                 refspec],
                check=False, fsize=cap, guard=lambda: _grown(objects, before) >= cap,
            )
            over = _grown(objects, before) >= cap
            kept = not over and done.returncode == 0
        finally:
            if not kept:  # killed, failed or over the cap: no ref keeps what it wrote
                self._git(["update-ref", "-d", _FETCHING], check=False)
                for path in set(_files(objects)) - set(before):
                    path.unlink(missing_ok=True)
        if over:
            what = f"{source}: fetching {rev} brings more than the {_mib(cap)} fetch cap"
            raise (CommitRejected if contributor else FetchError)(what)
        if done.returncode != 0:
            message = _git_message(done.stderr)
            if contributor and _OUT_OF_MEMORY.search(done.stderr):
                raise CommitRejected(f"{source}: fetching {rev} needs more than the {_mib(GIT_MEMORY_BYTES)} git "
                                     f"may use ({message})")
            raise FetchError(f"{source}: cannot fetch {rev}: {message}")

    def _neutralise_attributes(self) -> None:
        path = self.path / "info" / "attributes"
        with contextlib.suppress(OSError):
            if path.read_text() == _NEUTRAL_ATTRIBUTES:
                return
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f"attributes.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(_NEUTRAL_ATTRIBUTES)
        os.replace(tmp, path)

    @contextlib.contextmanager
    def _locked(self, shared: bool = False) -> Iterator[None]:
        """Serialise writers of one mirror (two validator workers may fetch into it at once); an
        export holds it shared, so a prune cannot drop the commit it is exporting."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._home.mkdir(exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            if not (self.path / "HEAD").exists():
                self.path.mkdir(parents=True, exist_ok=True)
                self._git(["init", "--quiet", "--bare"])
            yield

    def _spawn(self, args: list[str], *, stdin: int = subprocess.DEVNULL,
               fsize: int | None = None) -> subprocess.Popen[bytes]:
        limits = [f"--as={GIT_MEMORY_BYTES}", *([f"--fsize={fsize}"] if fsize else [])]
        try:
            return subprocess.Popen(
                ["prlimit", *limits, "--", "git", *_git_config(), "-C", str(self.path), *args],
                stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_git_env(self._home),
                start_new_session=True,
            )
        except FileNotFoundError:
            raise FetchError("fetching needs `prlimit` (util-linux), which bounds git's memory, and `git` on "
                             "PATH") from None

    def _git(self, args: list[str], *, check: bool = True, stdin: str | None = None, fsize: int | None = None,
             guard: Callable[[], bool] | None = None) -> subprocess.CompletedProcess[str]:
        proc = self._spawn(args, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE, fsize=fsize)
        with _Watchdog(proc, time.monotonic() + self.timeout_s, guard) as dog:
            out, err = proc.communicate(None if stdin is None else stdin.encode())
        if dog.reason == "timed out":
            raise FetchError(f"git {args[0]} in {self.path} timed out after {self.timeout_s:g} s")
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out.decode("utf-8", "replace"),
                                           err.decode("utf-8", "replace"))
        if check and done.returncode != 0:
            raise FetchError(f"git {' '.join(args[:2])} in {self.path} failed: {_git_message(done.stderr)}")
        return done


class _Watchdog:
    """Kills ``proc``'s process group at ``deadline``, or as soon as ``guard()`` is true (polled);
    ``reason`` says which. The export's blocking reads end when git dies."""

    def __init__(self, proc: subprocess.Popen[bytes], deadline: float, guard: Callable[[], bool] | None = None) -> None:
        self.proc = proc
        self.deadline = deadline
        self.guard = guard
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(min(_WATCH_INTERVAL_S, max(0.0, self.deadline - time.monotonic()))):
            if time.monotonic() >= self.deadline:
                self.reason = "timed out"
            elif self.guard is not None and self.guard():
                self.reason = "over its cap"
            else:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            return


@dataclass
class _Frame:
    sha: str
    entries: list[tuple[bytes, bytes, str]]  # mode, name, object id
    index: int = 0
    paths: int = 0
    bytes: int = 0
    longest: int = 0


@dataclass
class _TreeWalk:
    """Post-order walk over distinct tree objects through one ``git cat-file --batch-command``."""

    commit: str
    proc: subprocess.Popen[bytes]
    trees: dict[str, TreeSize] = field(default_factory=dict)
    blobs: dict[str, int] = field(default_factory=dict)

    def run(self) -> TreeSize:
        root = self._frame(f"{self.commit}^{{tree}}")
        stack = [root]
        while stack:
            frame = stack[-1]
            while frame.index < len(frame.entries):
                mode, name, oid = frame.entries[frame.index]
                if mode == b"40000":
                    sub = self.trees.get(oid)
                    if sub is None:
                        stack.append(self._frame(oid))
                        break
                    frame.paths += 1 + sub.paths
                    frame.bytes += sub.bytes
                    frame.longest = max(frame.longest, len(name) + 1 + sub.longest)
                else:  # a gitlink (160000) exports as an empty directory
                    frame.paths += 1
                    frame.bytes += 0 if mode == b"160000" else self.blobs[oid]
                    frame.longest = max(frame.longest, len(name))
                frame.index += 1
                self._check(frame)
            else:
                stack.pop()
                self.trees[frame.sha] = TreeSize(frame.paths, frame.bytes, frame.longest)
        return self.trees[root.sha]

    def _check(self, frame: _Frame) -> None:
        # Any subtree's running totals are a lower bound of the whole tree's.
        where = f"commit {self.commit[:12]}"
        if frame.paths > MAX_TREE_FILES:
            raise CommitRejected(f"{where}: its tree has at least {frame.paths:,} paths; at most "
                                 f"{MAX_TREE_FILES:,} are exported")
        if frame.bytes > MAX_TREE_BYTES:
            raise CommitRejected(f"{where}: its files hold at least {_mib(frame.bytes)}; at most "
                                 f"{_mib(MAX_TREE_BYTES)} are exported")
        if frame.longest > MAX_PATH_BYTES:
            raise CommitRejected(f"{where}: a path in its tree is longer than {MAX_PATH_BYTES} bytes")

    def _request(self, lines: Sequence[str]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{line}\n" for line in lines).encode())
        self.proc.stdin.flush()

    def _header(self, asked: str, expect: str) -> tuple[str, int]:
        assert self.proc.stdout is not None
        fields = self.proc.stdout.readline().decode(errors="replace").split()
        if len(fields) != 3:  # "<id> missing", or git died: the mirror's fault, not the commit's
            raise ValueError(f"{asked}: {' '.join(fields) or 'no answer from git cat-file'}")
        if fields[1] != expect:
            raise CommitRejected(f"commit {self.commit[:12]}: its tree names {fields[0][:12]} as a {expect}, "
                                 f"but it is a {fields[1]}")
        return fields[0], int(fields[2])

    def _frame(self, tree: str) -> _Frame:
        assert self.proc.stdout is not None
        self._request([f"info {tree}"])
        sha, size = self._header(tree, "tree")
        if size > _MAX_TREE_OBJECT:  # read nothing of it: it cannot be within the caps
            raise CommitRejected(f"commit {self.commit[:12]}: tree {sha[:12]} is {_mib(size)}, more than "
                                 f"{MAX_TREE_FILES:,} entries of names up to {MAX_NAME_BYTES} bytes can be")
        self._request([f"contents {sha}"])
        self._header(sha, "tree")
        data = self.proc.stdout.read(size + 1)[:size]
        if len(data) != size:
            raise OSError(f"git cat-file stopped after {len(data)} of {size} bytes of tree {sha}")
        entries = []
        pos = 0
        while pos < len(data):
            space, nul = data.index(b" ", pos), data.index(b"\0", pos)
            name = data[space + 1:nul]
            if len(name) > MAX_NAME_BYTES:
                raise CommitRejected(f"commit {self.commit[:12]}: a name in its tree is longer than "
                                     f"{MAX_NAME_BYTES} bytes")
            entries.append((data[pos:space], name, data[nul + 1:nul + 21].hex()))
            pos = nul + 21
        unknown = sorted({oid for mode, _, oid in entries if mode not in (b"40000", b"160000")} - self.blobs.keys())
        # Chunks small enough that neither pipe fills while the other is being written.
        for start in range(0, len(unknown), 256):
            chunk = unknown[start:start + 256]
            self._request([f"info {oid}" for oid in chunk])
            for oid in chunk:
                self.blobs[oid] = self._header(oid, "blob")[1]
        return _Frame(sha, entries)


class _TreeBudget:
    """A tarfile filter that applies the ``tar`` filter and stops an archive larger than measured
    (a second line behind :meth:`Mirror.measure`: the archive is what is written to disk)."""

    def __init__(self) -> None:
        self.files = 0
        self.bytes = 0

    def filter(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        self.files += 1
        self.bytes += member.size
        if self.files > MAX_TREE_FILES or self.bytes > MAX_TREE_BYTES:
            raise tarfile.TarError(f"tree is larger than {MAX_TREE_FILES} files / {MAX_TREE_BYTES} bytes")
        return tarfile.tar_filter(member, dest)


def _files(root: Path) -> dict[Path, int]:
    out: dict[Path, int] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(FileNotFoundError):  # git renames temporary files as it goes
                out[Path(folder, name)] = os.lstat(os.path.join(folder, name)).st_size
    return out


def _grown(root: Path, before: dict[Path, int]) -> int:
    return sum(size for path, size in _files(root).items() if path not in before)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    proc.wait()


def _git_message(text: str | bytes) -> str:
    """git's own diagnosis: its first ``fatal:`` / ``error:`` line, else its last line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    flagged = [line for line in lines if line.startswith(("fatal:", "error:"))]
    line = (flagged or lines or ["no message"])[0 if flagged else -1]
    return line.removeprefix("fatal:").removeprefix("error:").strip()[:300]
