"""`evalbot example-repo`: the history (branches, messages, one commit per branch on top of main),
SHAs that do not depend on the machine or the user's git set-up, the baseline copied verbatim from
the runtime, and every branch built by the real build path: main, faster and wrong build, broken is a
REJECT naming the slot and the first compiler error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalbot import safe_expr
from evalbot.build.builder import build_tree
from evalbot.errors import EvalbotError
from evalbot.example_repo import (
    AUTHOR_EMAIL,
    EXAMPLE_HEADER_INCLUDE,
    RUNTIME_HEADER_INCLUDE,
    SLOT,
    SOURCE,
    history,
    write_example_repo,
)
from evalbot.fetch import Mirror
from evalbot.manifest import load_manifest
from reference_runtime.runtime.abi import cuda_dir
from tests.build_support import make_config, require_nvcc

BRANCHES = ["broken", "faster", "main", "wrong"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def evalbot(tmp_path: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVALBOT_PATHS__CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "evalbot", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("example") / "kernels"
    write_example_repo(path)
    return path


def test_history(repo: Path) -> None:
    assert git(repo, "for-each-ref", "--format=%(refname)").split() == [f"refs/heads/{b}" for b in BRANCHES]
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main" and git(repo, "status", "--porcelain") == ""
    main = git(repo, "rev-parse", "main")
    assert git(repo, "rev-list", "main").split() == [main]  # one commit, no parent
    subjects = {c.branch: c.subject for c in history()}
    assert subjects["main"].startswith("baseline: ")
    for branch in ("faster", "wrong", "broken"):
        assert git(repo, "rev-list", f"main..{branch}").split() == [git(repo, "rev-parse", branch)]
        assert git(repo, "rev-parse", f"{branch}^") == main
        assert git(repo, "merge-base", "main", branch) == main
        assert subjects[branch].startswith(f"{branch}: ")
        assert git(repo, "log", "-1", "--format=%s", branch) == subjects[branch]
        assert git(repo, "diff", "--name-only", "main", branch).split() == ["kernels.toml", SOURCE]
    assert git(repo, "log", "-1", "--format=%s", "main") == subjects["main"]
    assert git(repo, "log", "-1", "--format=%an <%ae> %aI | %cn <%ce> %cI", "main") == (
        f"evalbot example <{AUTHOR_EMAIL}> 2025-01-01T12:00:00+00:00 | "
        f"evalbot example <{AUTHOR_EMAIL}> 2025-01-01T12:00:00+00:00")
    # The bugs are one-line changes of the faster kernel.
    for branch in ("wrong", "broken"):
        diff = git(repo, "diff", "-U0", "faster", branch)
        assert sum(line.startswith("-    ") for line in diff.splitlines()) == 1, diff
    assert git(repo, "tag") == ""


def test_shas_do_not_depend_on_the_machine_or_the_users_git(repo: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = someone else\n\temail = x@y\n[commit]\n\tgpgsign = true\n"
                                     "[init]\n\tdefaultBranch = trunk\n[core]\n\tautocrlf = true\n")
    for name, value in {"HOME": str(home), "TZ": "Asia/Tokyo", "GIT_AUTHOR_NAME": "leak", "GIT_COMMITTER_DATE":
                        "2001-01-01T00:00:00+00:00", "GIT_DIR": str(tmp_path / "elsewhere")}.items():
        monkeypatch.setenv(name, value)
    again = write_example_repo(tmp_path / "again")
    monkeypatch.delenv("GIT_DIR")
    first = {b: git(repo, "rev-parse", b) for b in BRANCHES}
    assert again == first


def test_main_is_the_runtime_baseline_verbatim(repo: Path) -> None:
    kernels = cuda_dir() / "kernels"
    assert git(repo, "show", f"main:{SOURCE}") == (kernels / "gemv.cu").read_text().strip()
    common = (kernels / "common.h").read_text()
    assert git(repo, "show", "main:include/common.h") == common.replace(
        RUNTIME_HEADER_INCLUDE, EXAMPLE_HEADER_INCLUDE).strip()
    for branch in ("faster", "wrong", "broken"):  # the branches change only the slot and its geometry
        assert git(repo, "show", f"{branch}:include/common.h") == git(repo, "show", "main:include/common.h")
    assert "evalbot example-repo" in git(repo, "show", "main:README.md")


def test_refuses_a_non_empty_path(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine\n")
    with pytest.raises(EvalbotError, match="not empty"):
        write_example_repo(tmp_path / "taken")
    (tmp_path / "file").write_text("x")
    with pytest.raises(EvalbotError, match="is not a directory"):
        write_example_repo(tmp_path / "file")
    done = evalbot(tmp_path, tmp_path, "example-repo", str(tmp_path / "taken"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine\n" and len(list((tmp_path / "taken").iterdir())) == 1


def test_faster_grid_matches_the_kernels_rows_per_block(repo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "faster"
    tree.mkdir()
    subprocess.run(f"git -C {repo} archive faster | tar -x -C {tree}", shell=True, check=True)
    (launch,) = load_manifest(tree).slots[SLOT].launches
    assert [e.evaluate({}) for e in launch.block] == [128, 1, 1]
    for n_cols in range(256, 8192 + 1, 256):
        rows_per_block = max(1, 8 // max(1, n_cols // 256))  # the kernel's own formula
        assert rows_per_block in (1, 2, 4, 8) and (n_cols // 16 <= 128 // rows_per_block or rows_per_block == 1)
        for n_rows in (1, 7, 255, 256, 2048):
            grid = launch.grid[0].evaluate({"n_rows": n_rows, "n_cols": n_cols, "n_sm": 132})
            assert grid == -(-n_rows // rows_per_block)
    assert isinstance(launch.grid[0], safe_expr.Expr)


def test_every_branch_builds_as_expected(repo: Path, tmp_path: Path) -> None:
    """Fetched and exported like a PR commit, built by the local backend for sm_90."""
    require_nvcc()
    cfg = make_config(tmp_path / "cache", backend="local", timeout_s=300.0, jobs=1)
    mirror = Mirror(cfg.cache_dir, str(repo))
    for branch in ("main", "faster", "wrong", "broken"):
        tree = mirror.export(mirror.fetch(branch), tmp_path / branch)
        report = build_tree(tree, cfg, "sm_90")
        assert [s.slot for s in report.slots] == [SLOT]
        if branch != "broken":
            assert report.ok, (branch, report.reasons)
            continue
        assert not report.ok and report.label == "REJECT"
        (reason,) = report.reasons
        assert reason.startswith(f"slot {SLOT}: {SOURCE}(") and 'error: identifier "rows_per_blok" is undefined' \
            in reason, reason


def test_the_readme_commands(tmp_path: Path) -> None:
    """`evalbot example-repo` and then `evalbot build <branch>` inside it, as its README says."""
    require_nvcc()
    path = tmp_path / "kernels"
    done = evalbot(tmp_path, tmp_path, "example-repo", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    for commit in history():
        assert f"{commit.branch:<7} {git(path, 'rev-parse', commit.branch)[:12]}  {commit.subject}" in done.stdout
    broken = evalbot(tmp_path, path, "build", "broken", "--backend", "local")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"REJECT slot {SLOT}: {SOURCE}(" in broken.stdout and "rows_per_blok" in broken.stdout


def test_bench_launch_table_matches_the_basket_plans(tmp_path_factory: pytest.TempPathFactory) -> None:
    """benchmarks/example_repo_bench.py's per-step figures use gemv_q4_k's launches per basket model."""
    import ast

    from reference_runtime import basket
    from reference_runtime.gguf_model import GGUFModel
    from reference_runtime.runtime.plan import build_plan
    from tests.runtime_support import basket_dir

    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "example_repo_bench.py"
    (table,) = [node.value for node in ast.parse(bench.read_text()).body
                if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "BASKET_LAUNCHES"]
    models = basket_dir(tmp_path_factory)
    plans: dict[str, dict[tuple[int, int], int]] = {}
    for key in basket.SPECS:
        with GGUFModel.open(basket.model_path(models, key)) as model:
            plan = build_plan(model, n_ctx=64)
        assert SLOT in plan.slots_used()  # the example's slot serves both basket models
        counts: dict[tuple[int, int], int] = {}
        for op in plan.ops:
            if op.name == SLOT:
                shape = (op.env["n_rows"], op.env["n_cols"])
                counts[shape] = counts.get(shape, 0) + 1
        plans[key] = counts
    assert ast.literal_eval(table) == plans
