import io
import os
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from watch_support import BOT, world

from evalbot.config import Config, PathsConfig
from evalbot.evaluator import WatchEvaluator
from evalbot.faults import Fault, classify
from evalbot.fetch import CommitRejected, FetchError, Mirror, TreeSize
from evalbot.github.standin import git as sgit
from evalbot.pipeline import Job
from evalbot.queue.store import State

IDENT = {"GIT_AUTHOR_NAME": "c", "GIT_AUTHOR_EMAIL": "c@example.org",
         "GIT_COMMITTER_NAME": "c", "GIT_COMMITTER_EMAIL": "c@example.org"}


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **IDENT, **(env or {})}).stdout.strip()


def commit_files(work: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    return git(work, "rev-parse", "HEAD")


@pytest.fixture
def upstream(tmp_path: Path) -> tuple[Path, Path, str]:
    """A bare 'GitHub' repository with one commit, and the work tree it was pushed from."""
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    sha = commit_files(work, {"kernels.toml": "version = 1\n", "src/a.cu": "// a\n"}, "base")
    bare = tmp_path / "upstream.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    git(bare, "config", "uploadpack.allowAnySHA1InWant", "true")
    return bare, work, sha


def test_fetch_by_sha_and_export_tree(tmp_path, upstream):
    bare, _, sha = upstream
    mirror = Mirror(tmp_path / "cache", str(bare))
    assert mirror.fetch(sha) == sha
    tree = mirror.export(sha, tmp_path / "tree")
    assert (tree / "kernels.toml").read_text() == "version = 1\n"
    assert (tree / "src" / "a.cu").read_text() == "// a\n"
    assert mirror.path.parent == tmp_path / "cache" / "git"
    assert git(mirror.path, "rev-parse", "--is-bare-repository") == "true"


def test_cached_commit_needs_no_network(tmp_path, upstream):
    bare, _, sha = upstream
    mirror = Mirror(tmp_path / "cache", str(bare))
    mirror.fetch(sha)
    bare.rename(tmp_path / "gone.git")  # the remote disappears
    assert Mirror(tmp_path / "cache", str(bare)).fetch(sha) == sha
    assert Mirror(tmp_path / "cache", str(bare)).export(sha, tmp_path / "t").joinpath("src/a.cu").is_file()


def test_fetched_commits_are_pinned_against_gc(tmp_path, upstream):
    bare, work, _ = upstream
    sha = commit_files(work, {"src/b.cu": "// b\n"}, "second")
    git(work, "push", "-q", str(bare), "HEAD:refs/heads/topic")
    mirror = Mirror(tmp_path / "cache", str(bare))
    mirror.fetch(sha)
    git(mirror.path, "gc", "-q", "--prune=now")
    assert mirror.has_commit(sha)
    assert git(mirror.path, "for-each-ref", "--format=%(refname)") == f"refs/evalbot/commits/{sha}"


def test_branch_and_pull_request_refs_from_a_fork(tmp_path, upstream):
    bare, _, base = upstream
    fork = tmp_path / "fork.git"
    git(tmp_path, "clone", "-q", "--bare", str(bare), str(fork))
    fork_work = tmp_path / "fork-work"
    git(tmp_path, "clone", "-q", str(fork), str(fork_work))
    pr_sha = commit_files(fork_work, {"src/a.cu": "// faster\n"}, "faster a")
    git(fork_work, "push", "-q", "origin", "HEAD:refs/heads/feature")
    # GitHub publishes a fork's PR head in the base repository as refs/pull/N/head.
    git(fork_work, "push", "-q", str(bare), "HEAD:refs/pull/7/head")

    mirror = Mirror(tmp_path / "cache", str(bare))
    assert mirror.fetch("pull/7/head") == pr_sha
    assert mirror.fetch("refs/pull/7/head") == pr_sha
    assert mirror.fetch("main") == base

    # The same commit straight from the fork (the head repo of a PR), into the upstream's mirror.
    other = Mirror(tmp_path / "cache2", str(bare))
    assert other.fetch("feature", from_url=str(fork)) == pr_sha
    assert other.export(pr_sha, tmp_path / "t").joinpath("src/a.cu").read_text() == "// faster\n"


def test_fetch_commit_falls_back_to_the_ref_when_sha_fetch_is_refused(tmp_path, upstream):
    bare, work, _ = upstream
    git(bare, "config", "uploadpack.allowAnySHA1InWant", "false")
    git(bare, "config", "protocol.version", "0")
    first = commit_files(work, {"src/c.cu": "// c\n"}, "c")
    head = commit_files(work, {"src/d.cu": "// d\n"}, "d")
    git(work, "push", "-q", str(bare), "HEAD:refs/pull/3/head")
    mirror = Mirror(tmp_path / "cache", str(bare))
    # `first` is only reachable through the PR ref's history.
    assert mirror.fetch_commit(first, refs=["refs/pull/3/head"]) == first
    assert mirror.has_commit(head)


@pytest.mark.parametrize(
    ("rev", "needle"),
    [
        ("0" * 40, "cannot fetch 0000000000000000000000000000000000000000"),
        ("pull/99/head", "couldn't find remote ref refs/pull/99/head"),
        ("no-such-branch", "couldn't find remote ref no-such-branch"),
    ],
)
def test_missing_commit_or_ref_is_a_clear_error(tmp_path, upstream, rev, needle):
    bare, _, _ = upstream
    with pytest.raises(FetchError) as info:
        Mirror(tmp_path / "cache", str(bare)).fetch(rev)
    assert needle in str(info.value)
    assert str(bare) in str(info.value)


def test_fetch_commit_names_the_sha_and_every_attempt(tmp_path, upstream):
    bare, _, _ = upstream
    with pytest.raises(FetchError, match=r"commit 1{40} not found in .*upstream.git: .*refs/pull/5/head"):
        Mirror(tmp_path / "cache", str(bare)).fetch_commit("1" * 40, refs=["refs/pull/5/head"])


def test_unreachable_repository_is_a_clear_error(tmp_path):
    with pytest.raises(FetchError, match="does not appear to be a git repository"):
        Mirror(tmp_path / "cache", str(tmp_path / "nowhere")).fetch("main")


@pytest.mark.parametrize("rev", ["--upload-pack=touch /tmp/x", "a b", "main:refs/heads/x", ""])
def test_option_like_or_malformed_revs_are_refused(tmp_path, upstream, rev):
    with pytest.raises(FetchError, match="is not a commit SHA or ref name"):
        Mirror(tmp_path / "cache", str(upstream[0])).fetch(rev)


@pytest.mark.parametrize("url", ["--upload-pack=touch /tmp/x", "-oProxyCommand=x@host:repo"])
def test_option_like_urls_are_refused(tmp_path, url):
    with pytest.raises(FetchError, match="looks like an option"):
        Mirror(tmp_path / "cache", "/tmp/ok").fetch("main", from_url=url)
    with pytest.raises(FetchError, match="looks like an option"):
        Mirror(tmp_path / "cache", url)


def test_command_running_transports_are_refused(tmp_path):
    marker = tmp_path / "ext-ran"
    with pytest.raises(FetchError, match="transport 'ext' not allowed"):
        Mirror(tmp_path / "cache", f"ext::sh -c touch% {marker}").fetch("main")
    assert not marker.exists()


def test_mirror_hooks_never_run(tmp_path, upstream):
    bare, work, _ = upstream
    mirror = Mirror(tmp_path / "cache", str(bare))
    base = mirror.fetch("main")
    marker = tmp_path / "hook-ran"
    hook = mirror.path / "hooks" / "reference-transaction"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    git(mirror.path, "update-ref", "refs/control", base)  # control: plain git does run it
    assert marker.exists()
    marker.unlink()
    sha = commit_files(work, {"src/e.cu": "// e\n"}, "e")
    git(work, "push", "-q", str(bare), "HEAD:refs/heads/main")
    assert mirror.fetch("main") == sha  # updates refs: the hook would fire here
    assert not marker.exists()


def test_lfs_smudge_filters_of_the_bot_user_do_not_run_on_export(tmp_path, upstream, monkeypatch):
    bare, work, _ = upstream
    sha = commit_files(work, {".gitattributes": "*.bin filter=lfs\n", "w.bin": "version lfs-pointer\n"}, "lfs")
    git(work, "push", "-q", str(bare), "HEAD:refs/heads/main")
    marker = tmp_path / "smudged"
    config = tmp_path / "bot-gitconfig"
    smudge = tmp_path / "smudge.sh"
    smudge.write_text(f"#!/bin/sh\ntouch {marker}\nexec cat\n")
    smudge.chmod(0o755)
    config.write_text(f"[filter \"lfs\"]\n\tsmudge = {smudge}\n\trequired = true\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    # Control: with that config, git archive would run the filter.
    subprocess.run(f"git -C {work} archive HEAD >/dev/null", shell=True, check=True, env=os.environ)
    assert marker.exists()
    marker.unlink()
    mirror = Mirror(tmp_path / "cache", str(bare))
    tree = mirror.export(mirror.fetch(sha), tmp_path / "tree")
    assert (tree / "w.bin").read_text() == "version lfs-pointer\n"
    assert not marker.exists()


def test_submodules_are_not_fetched_or_exported(tmp_path, upstream):
    bare, work, _ = upstream
    sub_sha = git(work, "rev-parse", "HEAD")
    git(work, "update-index", "--add", "--cacheinfo", f"160000,{sub_sha},vendor/sub")
    (work / ".gitmodules").write_text(f'[submodule "sub"]\n\tpath = vendor/sub\n\turl = {bare}\n')
    git(work, "add", ".gitmodules")
    git(work, "commit", "-q", "-m", "submodule")
    sha = git(work, "rev-parse", "HEAD")
    mirror = Mirror(tmp_path / "cache", str(work))
    tree = mirror.export(mirror.fetch(sha), tmp_path / "tree")
    assert (tree / "vendor" / "sub").is_dir()
    assert list((tree / "vendor" / "sub").iterdir()) == []
    assert not (mirror.path / "modules").exists()


def test_malformed_tree_entries_are_rejected_by_fsck(tmp_path, upstream):
    bare, _, base = upstream
    evil_blob = subprocess.run(["git", "-C", str(bare), "hash-object", "-w", "--stdin"], input="x\n",
                               capture_output=True, text=True, check=True).stdout.strip()
    tree_bytes = b"100644 ..\0" + bytes.fromhex(evil_blob)
    evil_tree = subprocess.run(["git", "-C", str(bare), "hash-object", "-t", "tree", "-w", "--literally", "--stdin"],
                               input=tree_bytes, capture_output=True, check=True).stdout.decode().strip()
    evil = git(bare, "commit-tree", evil_tree, "-p", base, "-m", "evil")
    git(bare, "update-ref", "refs/heads/evil", evil)
    with pytest.raises(FetchError, match="cannot fetch evil"):
        Mirror(tmp_path / "cache", str(bare)).fetch("evil")


def test_symlinks_are_exported_as_links_for_the_manifest_to_judge(tmp_path, upstream):
    bare, work, _ = upstream
    (work / "src" / "out.cu").symlink_to("/etc/passwd")
    sha = commit_files(work, {}, "symlink")
    git(work, "push", "-q", str(bare), "HEAD:refs/heads/main")
    mirror = Mirror(tmp_path / "cache", str(bare))
    tree = mirror.export(mirror.fetch(sha), tmp_path / "tree")
    assert os.readlink(tree / "src" / "out.cu") == "/etc/passwd"


def test_export_refuses_an_unknown_commit_and_an_existing_dest(tmp_path, upstream):
    bare, _, sha = upstream
    mirror = Mirror(tmp_path / "cache", str(bare))
    with pytest.raises(FetchError, match="is not in the mirror"):
        mirror.export(sha, tmp_path / "t")
    mirror.fetch(sha)
    (tmp_path / "t").mkdir()
    with pytest.raises(FileExistsError):
        mirror.export(sha, tmp_path / "t")


def test_oversized_tree_is_refused(tmp_path, upstream, monkeypatch):
    bare, work, _ = upstream
    sha = commit_files(work, {f"f{i}.txt": "x" for i in range(20)}, "many")
    git(work, "push", "-q", str(bare), "HEAD:refs/heads/main")
    monkeypatch.setattr("evalbot.fetch.MAX_TREE_FILES", 10)
    mirror = Mirror(tmp_path / "cache", str(bare))
    # 20 files, kernels.toml, src/ and src/a.cu: counted as git archive would write them.
    with pytest.raises(CommitRejected, match=r"its tree has at least 11 paths; at most 10 are exported"):
        mirror.export(mirror.fetch(sha), tmp_path / "t")
    assert not (tmp_path / "t").exists()  # refused before git archive ran
    monkeypatch.setattr("evalbot.fetch.MAX_TREE_FILES", 23)
    assert mirror.measure(sha) == TreeSize(paths=23, bytes=20 + 12 + 5, longest=len("kernels.toml"))
    assert len(list(mirror.export(sha, tmp_path / "t").rglob("*"))) == 23


# -- bounds: tree bombs, big trees, big fetches, pruning -------------------------------------------


def _pushed(bare: Path, sha: str, branch: str) -> str:
    git(bare, "update-ref", f"refs/heads/{branch}", sha)
    return sha


def test_tree_bomb_is_refused_before_archive_runs(tmp_path, upstream, monkeypatch):
    bare, _, base = upstream
    # 10 levels of 10 entries naming the level below: 10^10 files from 11 objects of < 400 bytes.
    bomb = _pushed(bare, sgit.tree_bomb(bare, levels=10, width=10, parent=base), "bomb")
    mirror = Mirror(tmp_path / "cache", str(bare))
    assert mirror.fetch("bomb") == bomb
    with pytest.raises(CommitRejected, match=r"commit [0-9a-f]{12}: its tree has at least [\d,]+ paths; at most "
                                             r"50,000 are exported") as info:
        mirror.export(bomb, tmp_path / "tree")
    assert isinstance(info.value, FetchError) and info.value.contributor_fault is True
    assert not (tmp_path / "tree").exists()
    # With the caps out of the way the walk still finishes: one read per distinct tree, so it counts
    # all 11,111,111,110 paths (files and directories) without expanding one of them.
    monkeypatch.setattr("evalbot.fetch.MAX_TREE_FILES", 10**12)
    monkeypatch.setattr("evalbot.fetch.MAX_TREE_BYTES", 10**12)
    size = mirror.measure(bomb)
    assert size == TreeSize(paths=sum(10**k for k in range(1, 11)), bytes=2 * 10**10, longest=10 * 3 - 1)


def test_byte_bomb_of_one_shared_blob_is_refused(tmp_path, upstream):
    bare, _, base = upstream
    # 1 MiB of zeros fetches as a few KiB, but the export would write it 1,000 times (1000 MiB).
    bomb = _pushed(bare, sgit.tree_bomb(bare, levels=3, width=10, blob="\0" * 2**20, parent=base), "bomb")
    mirror = Mirror(tmp_path / "cache", str(bare))
    mirror.fetch("bomb")
    with pytest.raises(CommitRejected, match=r"its files hold at least [\d,]+ MiB; at most 512 MiB are exported"):
        mirror.export(bomb, tmp_path / "tree")
    assert not (tmp_path / "tree").exists()


def test_names_and_paths_the_file_system_cannot_hold_are_refused(tmp_path, upstream):
    bare, _, base = upstream
    blob = sgit.git(bare, "hash-object", "-w", "--stdin", stdin="x\n")
    long_name = sgit.git(bare, "mktree", stdin=f"100644 blob {blob}\t{'n' * 256}\n")
    deep = sgit.git(bare, "mktree", stdin=f"100644 blob {blob}\tf\n")
    for _ in range(20):  # 20 directories of 250-byte names: a 5,000-byte path
        deep = sgit.git(bare, "mktree", stdin=f"040000 tree {deep}\t{'d' * 250}\n")
    mirror = Mirror(tmp_path / "cache", str(bare))
    for tree, needle in ((long_name, "a name in its tree is longer than 255 bytes"),
                         (deep, "a path in its tree is longer than 4096 bytes")):
        sha = _pushed(bare, git(bare, "commit-tree", tree, "-p", base, "-m", "long"), "long")
        mirror.fetch("long")
        with pytest.raises(CommitRejected, match=needle):
            mirror.export(sha, tmp_path / "tree")


def test_gitattributes_cannot_rewrite_or_hide_exported_files(tmp_path, upstream):
    bare, work, _ = upstream
    files = {".gitattributes": "* ident eol=crlf\nhidden.cu export-ignore\nsubst.cu export-subst\n",
             "id.cu": "$Id$\nline\n", "hidden.cu": "// here\n", "subst.cu": "$Format:%H%n%B$\n"}
    sha = commit_files(work, files, "attributes")
    git(work, "push", "-q", str(bare), "HEAD:refs/heads/main")
    # Control: plain git archive rewrites id.cu and subst.cu and drops hidden.cu.
    plain = subprocess.run(["git", "-C", str(bare), "archive", sha], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(plain)) as archive:
        assert "hidden.cu" not in archive.getnames()
        id_file = archive.extractfile("id.cu")
        assert id_file is not None and id_file.read().startswith(b"$Id: ")
    mirror = Mirror(tmp_path / "cache", str(bare))
    tree = mirror.export(mirror.fetch(sha), tmp_path / "tree")
    assert {name: (tree / name).read_bytes().decode() for name in files} == files
    assert mirror.measure(sha).bytes == sum(len(text) for text in files.values()) + len("version = 1\n// a\n")


def _random_blob_commit(work: Path, bare: Path, size: int, branch: str) -> str:
    (work / "big.bin").write_bytes(os.urandom(size))  # incompressible: the pack is as large
    sha = commit_files(work, {}, "big")
    git(work, "push", "-q", str(bare), f"HEAD:refs/heads/{branch}")
    return sha


def _object_files(mirror: Mirror) -> set[str]:
    return {str(p.relative_to(mirror.path)) for p in (mirror.path / "objects").rglob("*") if p.is_file()}


@pytest.mark.parametrize(("contributor", "error"), [(True, CommitRejected), (False, FetchError)])
def test_a_fetch_over_the_cap_is_undone_and_blamed_on_whose_objects_they_are(tmp_path, upstream, contributor, error):
    bare, work, base = upstream
    big = _random_blob_commit(work, bare, 2 * 2**20, "big")
    git(bare, "update-ref", "refs/pull/9/head", big)
    git(work, "checkout", "-q", "-b", "small", base)
    small = commit_files(work, {"src/small.cu": "// small\n"}, "small")
    git(work, "push", "-q", str(bare), "HEAD:refs/heads/small")
    mirror = Mirror(tmp_path / "cache", str(bare), max_fetch_bytes=2**20)
    mirror.fetch(base)
    objects = _object_files(mirror)
    with pytest.raises(error, match=r"fetching refs/pull/9/head brings more than the 1 MiB fetch cap") as info:
        mirror.fetch_commit(big, refs=["refs/pull/9/head"], contributor=contributor)
    assert isinstance(info.value, CommitRejected) is contributor  # a base-side fetch is the validator's problem
    assert not mirror.has_commit(big)
    assert _object_files(mirror) == objects  # nothing of the killed fetch is left behind
    assert git(mirror.path, "for-each-ref", "--format=%(refname)") == f"refs/evalbot/commits/{base}"
    # The mirror is still usable: the next (small) fetch and export work, and fsck is clean.
    assert mirror.fetch("small") == small
    assert mirror.export(small, tmp_path / "t").joinpath("src/small.cu").read_text() == "// small\n"
    git(mirror.path, "fsck", "--strict", "--no-dangling")


def test_prune_drops_what_no_job_needs_and_keeps_the_history_of_what_it_keeps(tmp_path, upstream):
    bare, work, base = upstream
    kept = commit_files(work, {"src/kept.cu": "// kept\n"}, "kept")
    git(work, "push", "-q", str(bare), "HEAD:refs/heads/main")
    git(work, "checkout", "-q", "-b", "pr", base)
    gone = commit_files(work, {"src/gone.cu": "// only in the PR\n"}, "pr")
    git(work, "push", "-q", str(bare), "HEAD:refs/pull/4/head")
    mirror = Mirror(tmp_path / "cache", str(bare))
    mirror.fetch("main")
    mirror.fetch("pull/4/head")
    gone_blob = git(work, "rev-parse", f"{gone}:src/gone.cu")
    assert git(mirror.path, "cat-file", "-t", gone_blob) == "blob"

    mirror.prune({kept})
    assert not mirror.has_commit(gone)
    missing = subprocess.run(["git", "-C", str(mirror.path), "cat-file", "-e", gone_blob], capture_output=True)
    assert missing.returncode != 0  # the object itself is gone, not only its ref
    assert mirror.has_commit(kept) and mirror.has_commit(base)  # kept, with its history
    assert git(mirror.path, "for-each-ref", "--format=%(refname)") == f"refs/evalbot/commits/{kept}"
    assert mirror.export(base, tmp_path / "t").joinpath("src/a.cu").read_text() == "// a\n"
    # A pruned commit is simply fetched again.
    assert mirror.fetch_commit(gone, refs=["refs/pull/4/head"]) == gone


# -- a contributor's fault is a REJECT: the evaluator and the poller ------------------------------


def _job(bare: Path, sha: str, base: str, baseline: str | None) -> Job:
    return Job(repo="acme/kernels", sha=sha, clone_url=str(bare), fetch_ref="refs/pull/1/head", author="mallory",
               base_ref="main", base_sha=base, baseline_sha=baseline, pr_number=1)


def test_the_evaluator_blames_a_candidate_bomb_on_the_pr_and_a_frontier_bomb_on_the_validator(tmp_path, upstream):
    bare, _, base = upstream
    bomb = sgit.tree_bomb(bare, levels=10, width=10, parent=base)
    git(bare, "update-ref", "refs/pull/1/head", bomb)
    evaluator = WatchEvaluator(Config(paths=PathsConfig(data_dir=str(tmp_path / "data"),
                                                        cache_dir=str(tmp_path / "cache"))))
    with pytest.raises(CommitRejected) as info:
        evaluator.evaluate(_job(bare, bomb, base, base), threading.Event())
    assert classify(info.value) is Fault.CONTRIBUTOR
    git(bare, "update-ref", "refs/pull/1/head", base)
    with pytest.raises(FetchError, match=r"the frontier [0-9a-f]{12}: commit [0-9a-f]{12}: its tree has") as info:
        evaluator.evaluate(_job(bare, base, base, bomb), threading.Event())
    assert not isinstance(info.value, CommitRejected) and classify(info.value) is Fault.TRANSIENT


def test_a_tree_bomb_pr_gets_a_reject_verdict_published_once_and_is_not_retried(tmp_path):
    with world(tmp_path, max_attempts=3) as w:
        path = Path(w.repo.path)
        bomb = sgit.tree_bomb(path, levels=10, width=10, parent=w.standin.head(w.repo, "main"))
        sgit.set_ref(path, "refs/heads/bomb", bomb)
        pull = w.standin.open_pull(w.repo, w.repo, "bomb", "Faster attention", author="mallory")
        watcher = w.watcher()
        watcher.evaluator = WatchEvaluator(w.cfg)  # the real one: fetch, measure, refuse
        watcher.poll_once()
        watcher.poll_once()  # nothing to retry: a verdict, not a failure
        (entry,) = [e for e in watcher.queue.all() if e.sha == bomb]
        assert entry.state is State.DONE and entry.attempts == 1 and entry.verdict is not None
        assert entry.verdict["label"] == "REJECT"
        assert "its tree has at least" in entry.verdict["reasons"][0]
        assert pull.labels == ["eval:REJECT"]
        (comment,) = w.standin.bot_comments(pull, BOT)
        assert "at most 50,000 are exported" in comment.body
        assert entry.recorded_at is not None and entry.published_at is not None  # in the ledger, on the PR


def test_git_never_runs_without_its_memory_limit(tmp_path, upstream, monkeypatch):
    bare, _, sha = upstream
    only_git = tmp_path / "bin"
    only_git.mkdir()
    (only_git / "git").symlink_to(subprocess.run(["which", "git"], capture_output=True, text=True,
                                                 check=True).stdout.strip())
    monkeypatch.setenv("PATH", str(only_git))
    with pytest.raises(FetchError, match=r"fetching needs `prlimit` \(util-linux\)"):
        Mirror(tmp_path / "cache", str(bare)).fetch(sha)


def test_every_git_process_runs_under_the_address_space_limit(tmp_path, upstream):
    mirror = Mirror(tmp_path / "cache", str(upstream[0]))
    mirror.fetch(upstream[2])
    # A shell alias runs as git's child: it inherits the limits git was started with.
    limits = mirror._git(["-c", "alias.limits=!cat /proc/self/limits", "limits"]).stdout
    (line,) = [line for line in limits.splitlines() if line.startswith("Max address space")]
    assert line.split()[3:5] == [str(2 * 2**30), str(2 * 2**30)]
