"""Shared set-up of the build tests: skip reasons, the test image, configs, hostile trees."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from evalbot.build.backend import Backend, RunResult
from evalbot.config import Config, load_config

T = TypeVar("T")

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

# The test tree's manifest with only its first slot: one compile per build.
ONE_SLOT_MANIFEST = (KERNELS / "kernels.toml").read_text().split("[slots.gemv_q8_0]")[0]


class PlantingBackend:
    """A real backend whose compiles are replaced by a shell ``script`` (``{out}``: the output path as
    the command sees it): what a compiler made to run the contributor's code could do."""

    def __init__(self, inner: Backend, script: str) -> None:
        self.inner, self.script = inner, script
        self.name, self.sandboxed = inner.name, inner.sandboxed

    def out_path(self, out: Path) -> str:
        return self.inner.out_path(out)

    def toolchain(self) -> str:
        return self.inner.toolchain()

    def run(self, argv: Sequence[str], src: Path, out: Path) -> RunResult:
        if "--dryrun" in argv:  # the builder's probe of the arch, not a compile
            return self.inner.run(argv, src, out)
        output = argv[list(argv).index("-o") + 1]
        return self.inner.run(["sh", "-c", self.script.format(out=output)], src, out)


def finishes(work: Callable[[], T], within_s: float) -> T:
    """``work()``'s result (or exception); fails the test if it has not ended within ``within_s`` (a hang)."""
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(within_s)
    assert outcome, f"still running after {within_s} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def tree_bytes(root: Path) -> tuple[int, int]:
    """(bytes on disk, entries) under ``root``, links not followed."""
    used = entries = 0
    for current, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            entries += 1
            used += os.lstat(os.path.join(current, name)).st_blocks * 512
    return used, entries


class EngineProxy:
    """A unix socket forwarding to the docker engine's until :meth:`cut`: the engine going away mid-build."""

    def __init__(self, path: Path, target: str) -> None:
        self.path, self.target = path, target
        self._server = socket.socket(socket.AF_UNIX)
        self._server.bind(str(path))
        self._server.listen()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._server.accept()
            except OSError:  # cut
                return
            far = socket.socket(socket.AF_UNIX)
            far.connect(self.target)
            self._open += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=_forward, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        self._server.close()
        self.path.unlink()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _forward(a: socket.socket, b: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := a.recv(65536):
            b.sendall(data)
    with contextlib.suppress(OSError):
        b.shutdown(socket.SHUT_WR)
