"""What a build backend does: run one compiler command over a read-only source tree, writing only
to an output directory, within time, memory and disk limits; and name its toolchain for the build cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from evalbot.config import BuildConfig
from evalbot.errors import EvalbotError

# Everything a build leaves in its output directory, all files together (a cubin is at most half this).
OUTPUT_LIMIT_BYTES = 128 * 2**20
# Entries (files, directories, links) the output directory may hold.
OUTPUT_MAX_ENTRIES = 1024
# No single file a compile writes (temporaries included) may exceed this.
MAX_FILE_BYTES = 512 * 2**20


def sandbox_env(tmp: str) -> dict[str, str]:
    """The whole environment a build gets: nothing is inherited from the bot (tokens, keys, proxies).

    ``PATH`` is added by the backend: the image's own for docker, the toolkit's directory for local.
    """
    return {"HOME": tmp, "TMPDIR": tmp, "LANG": "C", "LC_ALL": "C"}


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None  # None when the build was killed
    log: str  # stdout and stderr interleaved, at most the configured log limit
    seconds: float
    timed_out: bool = False
    flooded: bool = False  # output passed the log limit and the build was stopped
    oom: bool = False  # killed by the memory limit
    disk_full: str = ""  # what the build filled ("its 128 MiB output directory"), empty if nothing


class Backend(Protocol):
    name: str
    sandboxed: bool

    def out_path(self, out: Path) -> str:
        """Where ``out`` appears to the command (which runs with the source tree as working directory)."""
        ...

    def run(self, argv: Sequence[str], src: Path, out: Path) -> RunResult:
        """Run ``argv`` with ``src`` read-only and ``out`` writable; never raises for the command's failures.

        Afterwards ``out`` holds what the command left in its output directory, at most
        :data:`OUTPUT_LIMIT_BYTES`; none of it is trusted (a FIFO or a link is possible). An
        :class:`EvalbotError` means the backend itself failed (the engine went away), never the command.
        """
        ...

    def toolchain(self) -> str:
        """A string that changes whenever the compiler would (its ``nvcc --version``, plus the image)."""
        ...


def make_backend(cfg: BuildConfig) -> Backend:
    if cfg.jobs < 1:
        raise EvalbotError(f"[build] jobs must be at least 1, got {cfg.jobs}")
    if cfg.backend == "docker":
        from evalbot.build.docker_backend import DockerBackend

        return DockerBackend(cfg)
    from evalbot.build.local_backend import LocalBackend

    return LocalBackend(cfg)
