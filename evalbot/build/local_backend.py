"""The unsandboxed build backend: nvcc as a plain subprocess on this machine. NOT A SANDBOX.

For contributors building their own code and for machines without docker. It still gives the
compile an empty environment (so tokens in the bot's environment are not visible to it), a private
temporary directory, the wall-time and output limits, and no network namespace when ``unshare`` can
make one; but the compiler can read whatever this user can read, and sources are not write-protected.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from evalbot.build.backend import RunResult, sandbox_env
from evalbot.build.capture import LogCapture
from evalbot.config import BuildConfig
from evalbot.errors import EvalbotError

WARNING = "NOT SANDBOXED: the local backend runs the compiler as this user, with this user's file access"


@functools.cache
def unshare_prefix() -> tuple[str, ...]:
    """The command prefix that gives a child an empty network namespace here, or () if none works."""
    tool = shutil.which("unshare")
    if tool is None:
        return ()
    for prefix in ((tool, "-n"), (tool, "-r", "-n")):  # as root; else inside a user namespace
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
    return ()


class LocalBackend:
    name = "local"
    sandboxed = False

    def __init__(self, cfg: BuildConfig) -> None:
        nvcc = shutil.which("nvcc")
        if nvcc is None:
            raise EvalbotError("nvcc not found on PATH (install the CUDA toolkit or use the docker backend)")
        self.nvcc = str(Path(nvcc).resolve())
        self.cfg = cfg
        self._toolchain: str | None = None

    def out_path(self, out: Path) -> str:
        return str(out)

    def toolchain(self) -> str:
        if self._toolchain is None:
            with tempfile.TemporaryDirectory(prefix="evalbot-probe-") as tmp:
                probe = self.run(["nvcc", "--version"], Path(tmp), Path(tmp))
            if probe.exit_code != 0:
                raise EvalbotError(f"{self.nvcc} --version failed: {probe.log.strip()[-300:]}")
            self._toolchain = f"local {self.nvcc}\n{probe.log.strip()}"
        return self._toolchain

    def run(self, argv: Sequence[str], src: Path, out: Path) -> RunResult:
        argv = [self.nvcc if argv[0] == "nvcc" else argv[0], *argv[1:]]
        started = time.monotonic()
        capture = LogCapture(self.cfg.log_limit_bytes)
        with tempfile.TemporaryDirectory(prefix="evalbot-build-") as tmp:
            env = {**sandbox_env(tmp), "PATH": f"{Path(self.nvcc).parent}:/usr/local/bin:/usr/bin:/bin"}
            proc = subprocess.Popen(
                [*unshare_prefix(), *argv], cwd=src, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )
            assert proc.stdout is not None
            reader = threading.Thread(target=_pump, args=(proc, capture), daemon=True)
            reader.start()
            timed_out = False
            try:
                proc.wait(timeout=self.cfg.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
            reader.join(timeout=10)
            proc.stdout.close()
        killed = timed_out or capture.overflowed
        return RunResult(
            exit_code=None if killed else proc.returncode,
            log=capture.text(),
            seconds=time.monotonic() - started,
            timed_out=timed_out,
            flooded=capture.overflowed,
        )


def _pump(proc: subprocess.Popen[bytes], capture: LogCapture) -> None:
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(65536):
        if not capture.feed(chunk):
            _kill_group(proc)
            return


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the compiler and everything it started (cicc, ptxas, gcc) — our own process group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
