"""``evalbot example-repo PATH``: a contributor's kernels repository with a history to evaluate.

``main`` is one commit, ``baseline``: a ``kernels.toml`` overriding one slot, :data:`SLOT`, with a
verbatim copy of the runtime's baseline kernel for it, and a README. Three branches, each one commit
on top of ``main``: ``faster`` (a genuinely faster kernel for the slot), ``wrong`` (that kernel with a
term dropped: numerically wrong by a wide margin) and ``broken`` (that kernel with a misspelt
identifier: a compile error).

The baseline files are read from the installed runtime (``reference_runtime/cuda/kernels``), the
variants and the README from this package (``evalbot/example_kernels``). Commits are made by real
git with a fixed author, committer and dates, and without the user's git configuration, so the
commit SHAs are the same on every machine for a given evalbot (and runtime) version.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from evalbot.errors import EvalbotError
from reference_runtime.runtime.abi import HEADER_NAME, cuda_dir

if TYPE_CHECKING:
    from collections.abc import Iterable

    from evalbot.config import Config
    from reference_runtime.runtime.kernels import SlotKernel

SLOT = "gemv_q4_k"
SOURCE = f"src/{SLOT}.cu"
BRANCHES = ("main", "faster", "wrong", "broken")
AUTHOR_NAME = "evalbot example"
AUTHOR_EMAIL = "example@evalbot.invalid"
GIT_TIMEOUT_S = 60.0

# The runtime's kernels include the slot header from their parent directory; a contributor's build
# stages it on the include path instead (evalbot.build.staging), so the example's copy of common.h
# includes it by name. This is the only line that differs from the runtime's file.
RUNTIME_HEADER_INCLUDE = f'#include "../{HEADER_NAME}"'
EXAMPLE_HEADER_INCLUDE = f'#include "{HEADER_NAME}"'

_MANIFEST = """\
# The slots this repository overrides (evalbot docs/build.md, "The manifest").
version = 1
include = ["include"]  # directories every slot may #include from

# y[n_rows] = W[n_rows, n_cols] . x with W in Q4_K: every Q4_K projection of the basket models.
[slots.gemv_q4_k]
source = "src/gemv_q4_k.cu"

[[slots.gemv_q4_k.launch]]
kernel = "gemv_q4_k"
{geometry}
block = [128]
pdl = true  # the kernel starts with EVALBOT_GRID_ENTER(): it may overlap the previous kernel
"""
_BASELINE_GEOMETRY = 'grid = ["ceil_div(n_rows, 8)"]  # 8 rows of 16 threads per block'
_FASTER_GEOMETRY = ("# Rows per block: 8 // (Q4_K blocks per row), at least 1, so a row gets 16 to 128 threads.\n"
                    'grid = ["ceil_div(n_rows, max(1, 8 // max(1, n_cols // 256)))"]')

# The bugs, as (text of the faster kernel, its replacement); each text occurs exactly once.
_WRONG_EDIT = ("return (d * sc0) * ql - (dmin * m0) * sl + (d * sc1) * qh - (dmin * m1) * sh;",
               "return (d * sc0) * ql - (dmin * m0) * sl + (d * sc1) * qh;")
_BROKEN_EDIT = ("const int threads = GEMV_THREADS / rows_per_block;",
                "const int threads = GEMV_THREADS / rows_per_blok;")


@dataclass(frozen=True)
class ExampleCommit:
    branch: str
    message: str
    date: str  # ISO 8601, author and committer date
    files: Mapping[str, str]  # the whole tree: path -> text

    @property
    def subject(self) -> str:
        return self.message.splitlines()[0]


def _package_text(name: str) -> str:
    return resources.files("evalbot").joinpath("example_kernels", name).read_text(encoding="utf-8")


def _edit(text: str, edit: tuple[str, str], what: str) -> str:
    old, new = edit
    if text.count(old) != 1:
        raise EvalbotError(f"example repo: the {what} edit does not apply to the faster kernel (package is damaged)")
    return text.replace(old, new)


def baseline_files() -> dict[str, str]:
    """The runtime's baseline source for :data:`SLOT` and the shared header it includes."""
    kernels = cuda_dir() / "kernels"
    common = (kernels / "common.h").read_text(encoding="utf-8")
    if common.count(RUNTIME_HEADER_INCLUDE) != 1:
        raise EvalbotError(f"{kernels / 'common.h'}: expected one line {RUNTIME_HEADER_INCLUDE!r}")
    return {SOURCE: (kernels / "gemv.cu").read_text(encoding="utf-8"),
            "include/common.h": common.replace(RUNTIME_HEADER_INCLUDE, EXAMPLE_HEADER_INCLUDE)}


def history() -> list[ExampleCommit]:
    """The commits :func:`write_example_repo` makes, ``main`` first."""
    # Package data ships *.txt, not *.md: the README travels as README.md.txt.
    base = {"README.md": _package_text("README.md.txt"),
            "kernels.toml": _MANIFEST.format(geometry=_BASELINE_GEOMETRY),
            **baseline_files()}
    faster_src = _package_text(f"{SLOT}_faster.cu")
    faster_manifest = _MANIFEST.format(geometry=_FASTER_GEOMETRY)

    def variant(source: str) -> dict[str, str]:
        return {**base, "kernels.toml": faster_manifest, SOURCE: source}

    return [
        ExampleCommit("main", f"baseline: {SLOT} overridden with a verbatim copy of the runtime's kernel\n\n"
                      "The A/A case: src/gemv_q4_k.cu is the runtime's gemv.cu, include/common.h its common.h\n"
                      "(including the slot header by name). Same kernels, same launch geometry.\n",
                      "2025-01-01T12:00:00+00:00", base),
        ExampleCommit("faster", f"faster: {SLOT} gives a row up to 128 threads and loads block headers in one go\n\n"
                      "A row gets as many threads as it has 16-element parts (16 to 128), so a 2048-column\n"
                      "row is one block with every load in flight at once instead of 8 serial steps on a\n"
                      "quarter of the SMs; each Q4_K block header is one 16-byte load.\n",
                      "2025-01-01T13:00:00+00:00", variant(faster_src)),
        ExampleCommit("wrong", f"wrong: {SLOT} drops the high sub-block's minimum (numerically wrong)\n\n"
                      "The faster kernel without the '- dmin * m1 * sum(x)' term of each part: every row is\n"
                      "off by far more than any tolerance. The correctness gates must REJECT it.\n",
                      "2025-01-01T14:00:00+00:00", variant(_edit(faster_src, _WRONG_EDIT, "wrong"))),
        ExampleCommit("broken", f"broken: {SLOT} does not compile (a misspelt identifier)\n\n"
                      "The faster kernel with rows_per_block misspelt once: the build must REJECT it,\n"
                      "naming the slot and the compiler's first error line.\n",
                      "2025-01-01T15:00:00+00:00", variant(_edit(faster_src, _BROKEN_EDIT, "broken"))),
    ]


def write_example_repo(path: Path) -> dict[str, str]:
    """Create the repository at ``path`` (missing or an empty directory); return branch -> commit SHA.
    The working tree is left at ``main``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EvalbotError(f"{path}: exists and is not a directory; give a missing or empty directory")
    if path.is_dir() and any(path.iterdir()):
        raise EvalbotError(f"{path}: not empty; example-repo writes a new repository into a missing or empty directory")
    if shutil.which("git") is None:
        raise EvalbotError("example-repo needs git, and git is not on PATH")
    commits = history()
    path.mkdir(parents=True, exist_ok=True)
    git = _Git(path)
    git.run("init", "--quiet", "--template=", "--initial-branch=main")
    shas: dict[str, str] = {}
    for commit in commits:
        if commit.branch != "main":
            git.run("checkout", "--quiet", "-b", commit.branch, "main")
        for rel in git.run("ls-files", "-z").split("\0"):
            if rel and rel not in commit.files:
                git.run("rm", "--quiet", "--", rel)
        for rel, text in commit.files.items():
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8", newline="\n")
        git.run("add", "--", *sorted(commit.files))
        git.run("commit", "--quiet", "--no-verify", "-m", commit.message, date=commit.date)
        shas[commit.branch] = git.run("rev-parse", "HEAD").strip()
    git.run("checkout", "--quiet", "main")
    return shas


def branch_kernels(repo: Path, branches: Iterable[str], arch: str, config: Config, work: Path
                   ) -> dict[str, SlotKernel]:
    """Each branch of the example repository at ``repo`` fetched, exported and built the way a
    validator builds a PR commit (``config``'s backend and cache), as the runtime's kernel for
    :data:`SLOT`. Exports go under ``work``. For the GPU test and benchmarks/example_repo_bench.py."""
    from evalbot.build.builder import build_tree
    from evalbot.build.slot_kernels import slot_kernels
    from evalbot.fetch import Mirror
    from evalbot.manifest import load_manifest

    mirror = Mirror(config.cache_dir, str(repo), timeout_s=config.build.fetch_timeout_s)
    kernels: dict[str, SlotKernel] = {}
    for branch in branches:
        tree = mirror.export(mirror.fetch(branch), work / branch)
        report = build_tree(tree, config, arch)
        if not report.ok:
            raise EvalbotError(f"example repo: branch {branch} did not build: {report.reasons[0]}")
        kernels[branch] = slot_kernels(load_manifest(tree), report, origin=branch)[SLOT]
    return kernels


class _Git:
    """git in one repository, deaf to the user's configuration (no signing, hooks, templates, autocrlf)."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
        self.env = {k: os.environ[k] for k in keep if k in os.environ}
        self.env.update({
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "HOME": str(repo),
            "GIT_AUTHOR_NAME": AUTHOR_NAME, "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
            "GIT_COMMITTER_NAME": AUTHOR_NAME, "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
        })

    def run(self, *args: str, date: str | None = None) -> str:
        env = self.env if date is None else {**self.env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        argv = ["git", "-c", "core.autocrlf=false", "-c", "core.hooksPath=" + os.devnull, "-c", "commit.gpgsign=false",
                "-C", str(self.repo), *args]
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise EvalbotError(f"example-repo: git {args[0]} took longer than {GIT_TIMEOUT_S:.0f} s") from None
        if done.returncode != 0:
            detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise EvalbotError(f"example-repo: git {args[0]} failed in {self.repo}: {detail[-1] if detail else ''}")
        return done.stdout
