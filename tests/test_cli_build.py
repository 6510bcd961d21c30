"""``evalbot build`` end to end, through the real console entry (``python -m evalbot``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.build_support import KERNELS, TEST_IMAGE, require_docker, require_nvcc, tree_with

ROOT = Path(__file__).resolve().parent.parent


def evalbot(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "EVALBOT_PATHS__CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200", **env}
    return subprocess.run([sys.executable, "-m", "evalbot", *args], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=300)


def git(cwd: Path, *args: str) -> str:
    ident = {"GIT_AUTHOR_NAME": "c", "GIT_AUTHOR_EMAIL": "c@x", "GIT_COMMITTER_NAME": "c", "GIT_COMMITTER_EMAIL": "c@x"}
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **ident}).stdout.strip()


def test_build_a_directory_locally_prints_the_warning_and_the_table(tmp_path):
    require_nvcc()
    report = tmp_path / "report.json"
    done = evalbot(tmp_path, "build", str(KERNELS), "--backend", "local", "--arch", "sm_120", "--json", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NOT SANDBOXED" in done.stdout
    for slot in ("rmsnorm", "gemv_q8_0", "gemv_f32", "glu_swiglu"):
        assert slot in done.stdout
    assert "OK 4 slots (0 cached)" in done.stdout
    document = json.loads(report.read_text())
    assert document["label"] == "OK" and document["sandboxed"] is False and document["arch"] == "sm_120"
    again = evalbot(tmp_path, "build", str(KERNELS), "--backend", "local", "--arch", "sm_120")
    assert "OK 4 slots (4 cached)" in again.stdout


def test_build_a_commit_and_a_pull_request_ref_from_a_repository(tmp_path):
    require_nvcc()
    work = tmp_path / "kernels-repo"
    shutil.copytree(KERNELS, work)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "baseline")
    sha = git(work, "rev-parse", "HEAD")
    (work / "src" / "glu.cu").write_text("this does not compile\n")
    git(work, "commit", "-q", "-am", "broken")
    git(work, "update-ref", "refs/pull/4/head", "HEAD")
    git(work, "checkout", "-q", sha)  # the work tree no longer matters: commits are exported from the mirror

    good = evalbot(tmp_path, "build", sha, "--repo", str(work), "--backend", "local")
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"{sha} ({sha[:12]})" in good.stdout

    bad = evalbot(tmp_path, "build", "pull/4/head", "--repo", str(work), "--backend", "local")
    assert bad.returncode == 1
    # nvcc compiled ./src/glu.cu (no path may read as an option); the reason names it as the manifest does.
    assert "REJECT slot glu_swiglu: src/glu.cu(1): error:" in bad.stdout


def test_refused_manifest_is_a_reject_line_and_exit_1(tmp_path):
    require_nvcc()
    manifest = (KERNELS / "kernels.toml").read_text().replace('source = "src/glu.cu"', 'source = "../../etc/passwd"')
    tree = tree_with(tmp_path, manifest=manifest)
    done = evalbot(tmp_path, "build", str(tree), "--backend", "local")
    assert done.returncode == 1
    assert "REJECT" in done.stdout and "slot glu_swiglu: source: '../../etc/passwd': '..' is refused" in done.stdout


def test_option_injection_through_the_source_path_is_a_reject_before_any_compile(tmp_path):
    require_nvcc()
    manifest = (KERNELS / "kernels.toml").read_text().replace('source = "src/glu.cu"',
                                                               'source = "--options-file=opts/x.cu"')
    tree = tree_with(tmp_path, manifest=manifest)
    (tree / "opts").mkdir()
    (tree / "opts" / "x.cu").write_text("-Xcompiler=-fplugin=./opts/plugin.so\n")
    (tree / "--options-file=opts").mkdir()
    (tree / "--options-file=opts" / "x.cu").write_text((tree / "src" / "glu.cu").read_text())
    done = evalbot(tmp_path, "build", str(tree), "--backend", "local")
    assert done.returncode == 1, done.stdout + done.stderr
    assert ("REJECT " + f"{tree / 'kernels.toml'}: slot glu_swiglu: source: '--options-file=opts/x.cu': a path part "
            "starting with '-' is refused") in done.stdout.replace("\n", "")
    assert "built" not in done.stdout  # refused with the manifest: no slot was compiled


@pytest.mark.parametrize("bomb", ["slots = " + "[" * 50_000 + "]" * 50_000, "slots" + ".s" * 50_000 + " = 1"],
                         ids=["arrays", "dotted-key"])
def test_a_toml_nesting_bomb_is_a_reject_not_a_traceback(tmp_path, bomb):
    require_nvcc()
    tree = tree_with(tmp_path, manifest="version = 1\n" + bomb + "\n")
    done = evalbot(tmp_path, "build", str(tree), "--backend", "local")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert f"REJECT {tree / 'kernels.toml'}: line 2: " in done.stdout and "; refused" in done.stdout


def test_an_arch_nvcc_cannot_target_is_exit_2_not_a_reject(tmp_path):
    require_nvcc()
    broken = tree_with(tmp_path, "this does not compile\n")  # would be a REJECT, were the arch buildable
    for tree in (KERNELS, broken):
        done = evalbot(tmp_path, "build", str(tree), "--arch", "sm_99", "--backend", "local")
        assert done.returncode == 2, done.stdout + done.stderr
        assert "REJECT" not in done.stdout
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: the local build backend's nvcc cannot build for sm_99: nvcc fatal   : "
                               "Unsupported gpu architecture 'sm_99'; it builds for ")


def test_eval_build_only_with_an_unbuildable_arch_is_exit_2(tmp_path):
    require_nvcc()
    work = tmp_path / "kernels-repo"
    shutil.copytree(KERNELS, work)
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "baseline")
    done = evalbot(tmp_path, "eval", "HEAD", "--repo", str(work), "--build-only", "--arch", "sm_99",
                   EVALBOT_BUILD__BACKEND="local")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "REJECT" not in done.stdout and "Traceback" not in done.stderr
    assert "error: the local build backend's nvcc cannot build for sm_99" in done.stderr


def test_every_evalbot_command_named_in_a_message_exists():
    """Messages of the build and the config name commands to run; each must be one `evalbot --help` lists."""
    import re

    import typer

    from evalbot.cli import app

    group = typer.main.get_group(app)
    named: set[tuple[str, str]] = set()
    for path in [*(ROOT / "evalbot" / "build").glob("*.py"), ROOT / "evalbot" / "config.py",
                 ROOT / "evalbot" / "cli" / "build.py"]:
        named.update(re.findall(r"`evalbot ([a-z][a-z-]*)( [a-z][a-z-]*)?", path.read_text()))
    assert ("build-image", "") in named  # the docker backend's "image is not present"
    for command, sub in named:
        found = group.get_command(None, command)  # type: ignore[arg-type]
        assert found is not None, f"`evalbot {command}` is not a command"
        if sub and hasattr(found, "commands"):
            assert sub.strip() in found.commands, f"`evalbot {command}{sub}` is not a command"


def test_the_example_readme_says_how_to_get_the_default_build_image():
    import re

    import typer

    from evalbot.cli import app
    from evalbot.config import BuildConfig

    readme = (ROOT / "evalbot" / "example_kernels" / "README.md.txt").read_text()
    assert f"docker pull {BuildConfig().image}\n" in readme  # the image the default [build] config runs
    assert "evalbot build-image\n" in readme
    commands = set(re.findall(r"^evalbot ([a-z-]+)", readme, flags=re.MULTILINE))
    assert {"build", "build-image", "eval", "models"} <= commands
    group = typer.main.get_group(app)
    assert all(group.get_command(None, c) is not None for c in commands)  # type: ignore[arg-type]


@pytest.mark.docker
def test_a_missing_build_image_names_the_command_that_makes_one(tmp_path):
    require_docker()
    done = evalbot(tmp_path, "build", str(KERNELS), EVALBOT_BUILD__BACKEND="docker",
                   EVALBOT_BUILD__IMAGE="evalbot-test-absent:0")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "docker image 'evalbot-test-absent:0' is not present" in done.stderr
    assert "`evalbot build-image`" in done.stderr
    assert evalbot(tmp_path, "build-image", "--help").returncode == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["build", "0" * 40, "--repo", "{repo}", "--backend", "local"], "cannot fetch 0000000000"),
        (["build", str(KERNELS), "--arch", "sm90", "--backend", "local"], "GPU arch 'sm90' is not of the form"),
        (["build", "/nonexistent", "--repo", "{repo}", "--backend", "local"],
         "/nonexistent: does not exist; give a directory holding kernels.toml, or a commit"),
        (["build", "./missing/", "--backend", "local"], "./missing/: does not exist"),
        (["build", str(KERNELS / "kernels.toml"), "--backend", "local"], "kernels.toml: is not a directory"),
    ],
)
def test_bad_input_is_one_red_line_and_exit_2(tmp_path, args, needle):
    require_nvcc()
    repo = tmp_path / "empty-repo"
    repo.mkdir()
    git(repo, "init", "-q")
    done = evalbot(tmp_path, *[a.replace("{repo}", str(repo)) for a in args])
    assert done.returncode == 2
    assert needle in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error:")


@pytest.mark.docker
def test_build_image_then_a_sandboxed_build(tmp_path):
    require_docker()
    made = evalbot(tmp_path, "build-image", "--tag", TEST_IMAGE)
    assert made.returncode == 0, made.stderr
    assert f'image = "{TEST_IMAGE}"' in made.stdout and "toolchain_mounts = [" in made.stdout
    mounts = made.stdout.split("toolchain_mounts = [", 1)[1].split("]", 1)[0].replace('"', "").replace(" ", "")
    done = evalbot(tmp_path, "build", str(KERNELS), EVALBOT_BUILD__BACKEND="docker", EVALBOT_BUILD__IMAGE=TEST_IMAGE,
                   EVALBOT_BUILD__TOOLCHAIN_MOUNTS=mounts)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NOT SANDBOXED" not in done.stdout
    assert "sm_90 · docker" in done.stdout and "OK 4 slots" in done.stdout
