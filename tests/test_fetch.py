import os
import stat
import subprocess
from pathlib import Path

import pytest

from evalbot.fetch import FetchError, Mirror

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
    with pytest.raises(FetchError, match="tree is larger than 10 files"):
        mirror.export(mirror.fetch(sha), tmp_path / "t")
