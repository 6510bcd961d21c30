"""``evalbot eval`` arguments and outputs that need no GPU: a bad commit is named before the GPU
is looked for, and ``--build-only --markdown`` writes the build verdict as the PR comment would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from evalbot.evaluator import NO_GPU, gpu_available
from evalbot.example_repo import SLOT, write_example_repo
from tests.build_support import require_nvcc

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kernels") / "repo"
    write_example_repo(path)
    return path


def evalbot(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVALBOT_")}
    env |= {"EVALBOT_PATHS__CACHE_DIR": str(tmp_path / "cache"), "EVALBOT_PATHS__DATA_DIR": str(tmp_path / "data"),
            "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "evalbot", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.slow
@pytest.mark.skipif(gpu_available(), reason="checks the order of errors on a box without a GPU")
def test_a_bad_commit_is_named_before_the_missing_gpu(repo: Path, tmp_path: Path) -> None:
    for args in (["no-such-branch"], ["faster", "--baseline", "no-such-base"]):
        done = evalbot(tmp_path, "eval", *args, "--repo", str(repo))
        assert done.returncode == 2, done.stderr
        assert "is not a commit, branch or tag" in done.stderr and "no-such-" in done.stderr
        assert NO_GPU.split(" (")[0] not in done.stderr
    # A good commit on the same box reaches the GPU check.
    good = evalbot(tmp_path, "eval", "faster", "--repo", str(repo))
    assert good.returncode == 2 and NO_GPU.split(" (")[0] in good.stderr


@pytest.mark.slow
def test_build_only_writes_the_build_verdict_markdown(repo: Path, tmp_path: Path) -> None:
    require_nvcc()
    comment = tmp_path / "comment.md"
    done = evalbot(tmp_path, "eval", "broken", "--repo", str(repo), "--build-only", "--markdown", str(comment),
                   "--config", str(_local_config(tmp_path)))
    assert done.returncode == 1, done.stdout + done.stderr
    text = comment.read_text()
    assert text.startswith("### evalbot: **REJECT**")
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    fences = [t.content for t in tokens if t.type == "fence"]
    assert len(fences) == 1 and "rows_per_blok" in fences[0]  # the compiler's error, inside a fence
    assert f"`{SLOT}`" in text

    ok = tmp_path / "ok.md"
    done = evalbot(tmp_path, "eval", "faster", "--repo", str(repo), "--build-only", "--markdown", str(ok),
                   "--config", str(_local_config(tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert ok.read_text().startswith("### evalbot: **build OK**") and "nothing was gated or measured" in ok.read_text()


def _local_config(tmp_path: Path) -> Path:
    config = tmp_path / "local.toml"
    config.write_text('[build]\nbackend = "local"\n')
    return config
