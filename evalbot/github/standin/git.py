"""Real git repositories behind the GitHub stand-in: bare repos written with git plumbing.

Commits are made with ``hash-object`` / ``mktree`` / ``commit-tree`` straight into bare repositories,
so no work tree is needed, and clients fetch them over ``file://`` exactly as they would fetch from
GitHub over https. Every repo allows fetching any object by SHA, as GitHub does for commits of a
repository network (a force-pushed-away commit stays fetchable by its SHA).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git(repo: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {done.stderr.strip()}")
    return done.stdout.strip()


def init_bare(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--quiet", "--bare", "--initial-branch=main")
    git(path, "config", "uploadpack.allowAnySHA1InWant", "true")
    return path


def fork_bare(source: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    git(path.parent, "clone", "--quiet", "--bare", str(source), str(path))
    git(path, "config", "uploadpack.allowAnySHA1InWant", "true")
    return path


def commit(
    repo: Path,
    files: dict[str, str],
    message: str,
    author: str,
    parent: str | None,
    timestamp: int,
) -> str:
    """Write a commit whose tree is exactly ``files`` (flat names) and return its SHA."""
    entries = []
    for name, content in sorted(files.items()):
        blob = git(repo, "hash-object", "-w", "--stdin", stdin=content)
        entries.append(f"100644 blob {blob}\t{name}")
    tree = git(repo, "mktree", stdin="\n".join(entries) + "\n")
    when = f"{timestamp} +0000"
    ident = {
        "GIT_AUTHOR_NAME": author,
        "GIT_AUTHOR_EMAIL": f"{author}@users.noreply.github.com",
        "GIT_AUTHOR_DATE": when,
        "GIT_COMMITTER_NAME": author,
        "GIT_COMMITTER_EMAIL": f"{author}@users.noreply.github.com",
        "GIT_COMMITTER_DATE": when,
    }
    parents = ["-p", parent] if parent else []
    return git(repo, "commit-tree", tree, *parents, "-m", message, env=ident)


def set_ref(repo: Path, ref: str, sha: str) -> None:
    git(repo, "update-ref", ref, sha)


def resolve(repo: Path, ref: str) -> str | None:
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except RuntimeError:
        return None


def copy_ref(src: Path, src_ref: str, dst: Path, dst_ref: str) -> None:
    """Fetch ``src_ref`` of ``src`` into ``dst`` as ``dst_ref`` (forced), as GitHub mirrors PR heads."""
    git(dst, "fetch", "--quiet", "--no-tags", str(src), f"+{src_ref}:{dst_ref}")


def parent_of(repo: Path, sha: str) -> str | None:
    line = git(repo, "rev-list", "--parents", "-n", "1", sha).split()
    return line[1] if len(line) > 1 else None


def tree_bomb(repo: Path, levels: int, width: int, blob: str = "x\n", parent: str | None = None) -> str:
    """Write a commit of a few hundred bytes whose tree expands to ``width ** levels`` files: each
    level is one tree of ``width`` entries that all name the level below (``git mktree``)."""
    node = git(repo, "hash-object", "-w", "--stdin", stdin=blob)
    kind, mode = "blob", "100644"
    for _ in range(levels):
        node = git(repo, "mktree", stdin="".join(f"{mode} {kind} {node}\td{i}\n" for i in range(width)))
        kind, mode = "tree", "040000"
    ident = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
             for what, value in (("NAME", "bomber"), ("EMAIL", "bomber@example.org"), ("DATE", "1700000000 +0000"))}
    return git(repo, "commit-tree", node, *(["-p", parent] if parent else []), "-m", "bomb", env=ident)
