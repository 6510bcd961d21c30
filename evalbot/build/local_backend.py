"""The unsandboxed build backend: nvcc as a plain subprocess on this machine. NOT A SANDBOX.

For contributors building their own code and for machines without docker. It still gives the
compile an empty environment (so tokens in the bot's environment are not visible to it), a private
temporary directory, the wall-time, output and disk limits, and, where ``unshare`` can make them, no
network namespace and a pid namespace of its own; but the compiler can read whatever this user can
read, and sources are not write-protected.

The compile outlives no one: with a pid namespace it is killed the moment the bot dies (the
namespace's first process is tied to the bot by a parent-death signal, and every process in the
namespace dies with it); without one, ``timeout`` inside the command still kills its whole process
group shortly after the time limit. Files are capped at :data:`~evalbot.build.backend.MAX_FILE_BYTES`
each (``RLIMIT_FSIZE``); the output and temporary directories' totals are watched while it runs, so
a build can overshoot them by what it writes between two looks (every :data:`WATCH_S`).
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

from evalbot.build.backend import MAX_FILE_BYTES, OUTPUT_LIMIT_BYTES, OUTPUT_MAX_ENTRIES, RunResult, sandbox_env
from evalbot.build.capture import LogCapture
from evalbot.config import BuildConfig
from evalbot.errors import EvalbotError

WARNING = "NOT SANDBOXED: the local backend runs the compiler as this user, with this user's file access"
# How often the output and temporary directories are measured.
WATCH_S = 0.05
# The command's own clock runs this much longer than the bot's, so that the bot's limit is the one
# reported; it only matters when the bot is gone.
INNER_GRACE_S = 2.0
# Entries the temporary directory may hold (nvcc writes a handful).
TMP_MAX_ENTRIES = 10_000


@functools.cache
def unshare_prefix() -> tuple[str, ...]:
    """The command prefix that gives a child an empty network namespace here, with a pid namespace that
    dies with it where possible (``--kill-child``), or () if none works."""
    tool = shutil.which("unshare")
    if tool is None:
        return ()
    isolated = ("-n", "-p", "-f", "--kill-child")
    # as root; else inside a user namespace; else without a pid namespace
    for prefix in ((tool, *isolated), (tool, "-r", *isolated), (tool, "-n"), (tool, "-r", "-n")):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0:
                return prefix
    return ()


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise EvalbotError(f"{name} not found on PATH (the local backend needs coreutils and util-linux)")
    return found


class LocalBackend:
    name = "local"
    sandboxed = False

    def __init__(self, cfg: BuildConfig) -> None:
        nvcc = shutil.which("nvcc")
        if nvcc is None:
            raise EvalbotError("nvcc not found on PATH (install the CUDA toolkit or use the docker backend)")
        self.nvcc = str(Path(nvcc).resolve())
        self.cfg = cfg
        self._timeout = _tool("timeout")
        self._prlimit = _tool("prlimit")
        self._setpriv = _tool("setpriv") if "--kill-child" in unshare_prefix() else None
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

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as it is started: in its namespaces, with its file-size cap and its own clock."""
        # The parent-death signal fires when the thread that started the command ends; each build
        # waits for its command in the thread that started it.
        tied = (self._setpriv, "--pdeathsig", "KILL") if self._setpriv else ()
        limits = (self._prlimit, f"--fsize={MAX_FILE_BYTES}", "--core=0", "--")
        clock = (self._timeout, "-s", "KILL", f"{self.cfg.timeout_s + INNER_GRACE_S:g}")
        program = self.nvcc if argv[0] == "nvcc" else argv[0]
        return [*tied, *unshare_prefix(), *limits, *clock, program, *argv[1:]]

    def run(self, argv: Sequence[str], src: Path, out: Path) -> RunResult:
        started = time.monotonic()
        capture = LogCapture(self.cfg.log_limit_bytes)
        with tempfile.TemporaryDirectory(prefix="evalbot-build-") as tmp:
            env = {**sandbox_env(tmp), "PATH": f"{Path(self.nvcc).parent}:/usr/local/bin:/usr/bin:/bin"}
            watched = [(out, OUTPUT_LIMIT_BYTES, OUTPUT_MAX_ENTRIES, "output"),
                       (Path(tmp), self.cfg.memory_mb * 2**20, TMP_MAX_ENTRIES, "temporary")]
            proc = subprocess.Popen(
                self.command(argv), cwd=src, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )
            assert proc.stdout is not None
            reader = threading.Thread(target=_pump, args=(proc, capture), daemon=True)
            reader.start()
            timed_out, disk_full = False, ""
            deadline = started + self.cfg.timeout_s
            while True:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=WATCH_S)
                disk_full = _filled(watched)
                if proc.returncode is not None or disk_full:
                    break
                if time.monotonic() >= deadline:
                    timed_out = True
                    break
            # Also after a normal exit: nothing the compile started may still be writing.
            _kill_group(proc)
            reader.join(timeout=10)
            proc.stdout.close()
        killed = timed_out or capture.overflowed or bool(disk_full)
        return RunResult(
            exit_code=None if killed else proc.returncode,
            log=capture.text(),
            seconds=time.monotonic() - started,
            timed_out=timed_out,
            flooded=capture.overflowed,
            disk_full=disk_full,
        )


def _filled(watched: Sequence[tuple[Path, int, int, str]]) -> str:
    """What the build has filled of its directories (``"its 128 MiB output directory"``), or ``""``."""
    for root, limit, max_entries, what in watched:
        used, entries = 0, 0
        for current, dirs, files in os.walk(root):
            for name in [*dirs, *files]:
                entries += 1
                with contextlib.suppress(OSError):
                    used += os.lstat(os.path.join(current, name)).st_blocks * 512
            if used > limit or entries > max_entries:
                return f"its {limit // 2**20} MiB {what} directory"
    return ""


def _pump(proc: subprocess.Popen[bytes], capture: LogCapture) -> None:
    assert proc.stdout is not None
    while chunk := proc.stdout.read1(65536):
        if not capture.feed(chunk):
            _kill_group(proc)
            return


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the compiler and everything it started (cicc, ptxas, gcc) — our own process group, and
    with it (``--kill-child``) the pid namespace they run in."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
