"""Shared set-up of the build tests: skip reasons, the test image, configs, hostile trees."""

from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path

import pytest

from evalbot.config import Config, load_config

KERNELS = Path(__file__).parent / "data" / "kernels"
TEST_IMAGE = "evalbot-test-toolchain:1"


@functools.cache
def nvcc_reason() -> str | None:
    return None if shutil.which("nvcc") else "no CUDA toolkit on this machine (nvcc is not on PATH)"


@functools.cache
def docker_reason() -> str | None:
    import docker

    try:
        docker.from_env(timeout=10).ping()
    except Exception as exc:  # any failure to reach the engine means: no engine answers
        return f"no docker engine answers ({exc.__class__.__name__}: {exc})"
    return None


def require_nvcc() -> None:
    if reason := nvcc_reason():
        pytest.skip(reason)


def require_docker() -> None:
    require_nvcc()
    if reason := docker_reason():
        pytest.skip(reason)


def make_config(cache_dir: Path, **build: object) -> Config:
    cfg = load_config(None, environ={})
    return dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, cache_dir=str(cache_dir)),
                               build=dataclasses.replace(cfg.build, **build))


def tree_with(tmp_path: Path, rmsnorm_source: str | None = None, manifest: str | None = None) -> Path:
    """A copy of the test kernels with the rmsnorm source and/or the manifest replaced."""
    root = tmp_path / "tree"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(KERNELS, root)
    if rmsnorm_source is not None:
        (root / "src" / "rmsnorm.cu").write_text(rmsnorm_source)
    if manifest is not None:
        (root / "kernels.toml").write_text(manifest)
    return root


# A translation unit that includes itself twice per level, 40 levels deep: 2^40 includes, each cheap,
# so the preprocessor runs (and grows) until something stops it.
INCLUDE_BOMB = """\
#if __INCLUDE_LEVEL__ < 40
#include "rmsnorm.cu"
#include "rmsnorm.cu"
#endif
#if __INCLUDE_LEVEL__ == 0
extern "C" __global__ void rmsnorm_f32(float* x) { x[0] = 1.0f; }
#endif
"""

WARNING_FLOOD = "".join(f"#warning flood {i}\n" for i in range(20000)) + \
    'extern "C" __global__ void rmsnorm_f32(float* x) { x[0] = 1.0f; }\n'
