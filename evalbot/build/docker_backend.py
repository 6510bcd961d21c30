"""The sandboxed build backend: each compile runs in a fresh, throw-away docker container.

The container has no network (``network_mode=none``), a read-only root file system, the staged
sources mounted read-only, no capabilities, ``no-new-privileges``, a non-root user, CPU / memory /
pids / file-size limits, no core dumps, and only the fixed environment of
:func:`evalbot.build.backend.sandbox_env` plus the image's own ``ENV`` (nothing of the bot's).

Nothing of the host is writable from inside: the output directory is an anonymous volume on a tmpfs
(the engine's ``local`` driver) of :data:`~evalbot.build.backend.OUTPUT_LIMIT_BYTES` and
:data:`~evalbot.build.backend.OUTPUT_MAX_ENTRIES` inodes, charged to the container's memory limit and
removed with it. Its top-level entries are copied out through the engine's archive API once the
compile ends, reading no more than the mount can hold. (A tmpfs mount inside the container would do
the same, but the archive API of docker 20.10 does not see into those.)

The container's first process is ``sleep`` for the time limit plus a grace period, and the compile
runs beside it (``exec``): when that clock runs out every process in the container dies and the
engine removes it (``auto_remove``), whether or not the bot is still alive to do so. Each container
is labelled with its owning process and a deadline; :func:`reap` (run whenever a backend is made)
removes those whose owner on this machine is gone or whose deadline has passed.
Output is streamed through a bounded capture (the daemon keeps no log: ``log_config=none``), and
the build is killed at the wall-time limit or as soon as its output passes the log limit.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors
import requests
from docker.types import DriverConfig, LogConfig, Mount, Ulimit
from docker.utils.socket import frames_iter

from evalbot.build.backend import MAX_FILE_BYTES, OUTPUT_LIMIT_BYTES, OUTPUT_MAX_ENTRIES, RunResult, sandbox_env
from evalbot.build.capture import LogCapture
from evalbot.config import BuildConfig
from evalbot.errors import EvalbotError

SRC = "/job/src"
OUT = "/job/out"
# Every build container carries LABEL=SANDBOX (images made by `evalbot build-image` carry LABEL with
# another value, which containers other than builds inherit), its owner and its deadline.
LABEL = "evalbot.build"
SANDBOX = "1"
OWNER_LABEL = "evalbot.build.owner"
DEADLINE_LABEL = "evalbot.build.deadline"
# How long the container's own clock runs past the compile's time limit: time to check for an
# out-of-memory kill and copy the output out after a compile that ended just before its limit.
COPY_GRACE_S = 20.0
# A container still there this long after its clock ran out was never started or never removed.
REAP_MARGIN_S = 60.0
# The archive of the output directory: its bytes plus at most ~4 KiB of headers per entry.
_ARCHIVE_LIMIT = OUTPUT_LIMIT_BYTES + OUTPUT_MAX_ENTRIES * 4096 + 2**16
_PAGE = 4096
_EngineErrors = (docker.errors.DockerException, requests.exceptions.RequestException)


class DockerBackend:
    name = "docker"
    sandboxed = True

    def __init__(self, cfg: BuildConfig, client: docker.DockerClient | None = None) -> None:
        if not re.fullmatch(r"\d+:\d+", cfg.user) or cfg.user.split(":")[0] == "0":
            raise EvalbotError(f"[build] user must be a non-root numeric uid:gid, got {cfg.user!r}")
        for mount in cfg.toolchain_mounts:
            if not Path(mount).is_absolute() or not Path(mount).exists():
                raise EvalbotError(f"[build] toolchain_mounts: {mount!r} is not an existing absolute path")
        self.cfg = cfg
        try:
            self.client = client or docker.from_env(timeout=60)
            self.client.ping()
        except _EngineErrors as exc:
            raise EvalbotError(f"docker engine not reachable ({exc}); start dockerd or use [build] backend = "
                               "\"local\"") from None
        try:
            self.image_id: str = self.client.images.get(cfg.image).id
        except docker.errors.ImageNotFound:
            raise EvalbotError(f"docker image {cfg.image!r} is not present: `docker pull {cfg.image}`, or "
                               "`evalbot build-image` to make one from this machine's CUDA toolkit (then set the "
                               "[build] image and toolchain_mounts it prints)") from None
        except _EngineErrors as exc:
            raise EvalbotError(f"docker engine failed while looking up image {cfg.image!r}: {exc}") from None
        try:
            reap(self.client)
        except _EngineErrors as exc:
            raise EvalbotError(f"docker engine failed while removing leftover build containers: {exc}") from None
        self._toolchain: str | None = None

    def out_path(self, out: Path) -> str:
        return OUT

    def toolchain(self) -> str:
        """The image id, the host mounts and the sandbox's own ``nvcc --version`` (probed once)."""
        if self._toolchain is None:
            with _scratch_dirs() as (src, out):
                probe = self.run(["nvcc", "--version"], src, out)
            if probe.exit_code != 0:
                raise EvalbotError(f"nvcc does not run in image {self.cfg.image!r}: "
                                   f"{probe.log.strip()[-300:] or 'no output'}")
            mounts = ",".join(self.cfg.toolchain_mounts) or "-"
            self._toolchain = f"docker {self.image_id} mounts={mounts}\n{probe.log.strip()}"
        return self._toolchain

    def run(self, argv: Sequence[str], src: Path, out: Path) -> RunResult:
        try:
            return self._run(list(argv), src, out)
        except _EngineErrors as exc:
            raise EvalbotError(f"docker engine failed during a build ({exc.__class__.__name__}: {exc})") from None

    def _run(self, argv: list[str], src: Path, out: Path) -> RunResult:
        cfg = self.cfg
        container = self._create(src)
        capture = LogCapture(cfg.log_limit_bytes)
        try:
            try:
                container.start()
            except docker.errors.APIError as exc:
                raise EvalbotError(f"cannot start a build container from {cfg.image!r} (its PATH must hold "
                                   f"`sleep` and `cat`): {exc}") from None
            api = self.client.api
            exec_id = api.exec_create(container.id, argv, stdout=True, stderr=True, workdir=SRC)["Id"]
            started = time.monotonic()
            sock = api.exec_start(exec_id, socket=True)
            # The client's read timeout would end the stream of a compile that is silent for a minute.
            getattr(sock, "_sock", sock).settimeout(None)
            reader = threading.Thread(target=_pump, args=(sock, capture, container), daemon=True)
            reader.start()
            exit_code, timed_out = _await_exec(api, exec_id, capture, started + cfg.timeout_s)
            seconds = time.monotonic() - started
            if exit_code is None:
                _kill(container)
            reader.join(timeout=10)
            oom = exit_code is not None and _oom_kills(container) > 0
            disk_full = _copy_out(container, out) if exit_code is not None and not oom else ""
            killed = timed_out or capture.overflowed or oom
            return RunResult(
                exit_code=None if killed else exit_code,
                log=capture.text(),
                seconds=seconds,
                timed_out=timed_out,
                flooded=capture.overflowed,
                oom=oom,
                disk_full=disk_full,
            )
        finally:
            with contextlib.suppress(*_EngineErrors):
                _discard(container)

    def _create(self, src: Path) -> Any:
        cfg = self.cfg
        uid, gid = cfg.user.split(":")
        volumes = {str(src): {"bind": SRC, "mode": "ro"}}
        volumes.update({m: {"bind": m, "mode": "ro"} for m in cfg.toolchain_mounts})
        memory = f"{cfg.memory_mb}m"
        lifetime = math.ceil(cfg.timeout_s + COPY_GRACE_S)
        # Docker gives the mount the mode of the image's directory under it; uid/gid make it the builder's.
        output = Mount(OUT, None, type="volume", driver_config=DriverConfig("local", {
            "type": "tmpfs", "device": "tmpfs",
            "o": f"size={OUTPUT_LIMIT_BYTES // 2**20}m,nr_inodes={OUTPUT_MAX_ENTRIES},uid={uid},gid={gid},"
                 "nosuid,nodev,noexec"}))
        try:
            return self.client.containers.create(
                self.cfg.image,
                command=["sleep", str(lifetime)],
                entrypoint=[],
                user=cfg.user,
                working_dir=SRC,
                environment=sandbox_env("/tmp"),  # PATH stays the image's own
                hostname="build",
                network_mode="none",
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={cfg.memory_mb}m"},
                volumes=volumes,
                mounts=[output],
                mem_limit=memory,
                memswap_limit=memory,
                nano_cpus=int(cfg.cpus * 1e9),
                pids_limit=cfg.pids,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                ulimits=[Ulimit(name="fsize", soft=MAX_FILE_BYTES, hard=MAX_FILE_BYTES),
                         Ulimit(name="core", soft=0, hard=0)],
                log_config=LogConfig(type="none"),
                labels={LABEL: SANDBOX, OWNER_LABEL: owner(),
                        DEADLINE_LABEL: f"{time.time() + lifetime + REAP_MARGIN_S:.0f}"},
                auto_remove=True,
                detach=True,
                stdin_open=False,
                tty=False,
            )
        except docker.errors.DockerException as exc:
            raise EvalbotError(f"cannot create a build container from {cfg.image!r}: {exc}") from None


def _await_exec(api: Any, exec_id: str, capture: LogCapture, deadline: float) -> tuple[int | None, bool]:
    """(exit status, False) once the compile ends; (None, True) at the deadline; (None, False) once it floods."""
    pause = 0.02
    while not capture.overflowed:
        try:
            state = api.exec_inspect(exec_id)
        except docker.errors.NotFound:
            if capture.overflowed:  # the reader killed the container between the check and here
                break
            raise
        if not state["Running"] and state["ExitCode"] is not None:
            return int(state["ExitCode"]), False
        if time.monotonic() >= deadline:
            return None, True
        time.sleep(pause)
        pause = min(2 * pause, 0.25)
    return None, False


def _pump(sock: Any, capture: LogCapture, container: Any) -> None:
    """Copy the compile's output into ``capture``; kill the container once it floods."""
    with contextlib.suppress(Exception):  # the stream ends abruptly when the container is killed
        for _stream, chunk in frames_iter(sock, tty=False):
            if not capture.feed(chunk):
                _kill(container)
                return


def _oom_kills(container: Any) -> int:
    """Processes the kernel killed for memory in the container's cgroup (v1 or v2).

    The engine flags only a first process killed for memory, and here that is ``sleep``, not the compile.
    """
    _, output = container.exec_run(["cat", "/sys/fs/cgroup/memory/memory.oom_control",
                                    "/sys/fs/cgroup/memory.events"])
    return sum(int(n) for n in re.findall(rb"^oom_kill (\d+)$", output, re.MULTILINE))


class _OverLimit(Exception):
    pass


class _Bounded(io.RawIOBase):
    """The archive stream as a file that refuses to deliver more than ``limit`` bytes."""

    def __init__(self, chunks: Iterable[bytes], limit: int) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        self._left -= n
        if self._left < 0:
            raise _OverLimit
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _copy_out(container: Any, out: Path) -> str:
    """Copy the top-level entries of the container's output directory into ``out`` as what they are
    (a FIFO stays a FIFO and a link a link, for the reader to refuse). Returns what the build filled
    (``""`` if nothing): the mount is full, so whatever failed to be written there failed for that."""
    full = f"its {OUTPUT_LIMIT_BYTES // 2**20} MiB output directory"
    chunks, _ = container.get_archive(OUT)
    used = entries = 0
    try:
        with tarfile.open(fileobj=_Bounded(chunks, _ARCHIVE_LIMIT), mode="r|") as archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts
                if len(parts) < 2:  # the directory itself
                    continue
                entries += 1
                used += -(-member.size // _PAGE) * _PAGE if member.isreg() else 0
                if used > OUTPUT_LIMIT_BYTES - 16 * _PAGE:
                    return full
                if len(parts) == 2 and parts[1] not in (".", ".."):
                    _place(archive, member, out / parts[1])
    except _OverLimit:
        return full
    except tarfile.TarError as exc:
        raise EvalbotError(f"docker engine sent an unreadable archive of a build's output: {exc}") from None
    return full if entries >= OUTPUT_MAX_ENTRIES - 1 else ""


def _place(archive: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> None:
    """Create ``member`` at ``path`` (a fresh name in a directory of ours); hard links and devices are not
    copied, so the reader finds nothing there."""
    if member.isreg():
        source = archive.extractfile(member)
        assert source is not None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as target:
            shutil.copyfileobj(source, target)
    elif member.isdir():
        path.mkdir()
    elif member.isfifo():
        os.mkfifo(path)
    elif member.issym():
        os.symlink(member.linkname, path)


def _kill(container: Any) -> None:
    with contextlib.suppress(*_EngineErrors):
        container.kill()


def _discard(container: Any) -> None:
    """Remove the container and whatever still runs in it; wait out a removal the engine already began."""
    try:
        container.remove(force=True, v=True)  # v: its output volume too
    except docker.errors.NotFound:
        return
    except docker.errors.APIError:  # 409: auto_remove is removing it after a kill
        with contextlib.suppress(*_EngineErrors):
            container.wait(condition="removed", timeout=30)


def reap(client: docker.DockerClient) -> list[str]:
    """Remove the build containers nobody else will: those whose owning process on this machine is
    gone (a bot killed mid-build), and any, from any machine, past its deadline. Returns their ids."""
    removed = []
    now = time.time()
    for container in client.containers.list(all=True, sparse=True, filters={"label": f"{LABEL}={SANDBOX}"}):
        if _orphaned(container.attrs.get("Labels") or {}, now):
            _discard(container)
            removed.append(container.id)
    return removed


def _orphaned(labels: Mapping[str, str], now: float) -> bool:
    try:
        deadline = float(labels[DEADLINE_LABEL])
        where, pid, started = labels[OWNER_LABEL].rsplit("/", 2)
        pid_number = int(pid)
    except (KeyError, ValueError):
        return True  # made by an evalbot that labelled no owner: nothing will ever remove it
    return now > deadline or (where == machine() and start_time(pid_number) != started)


@functools.cache
def machine() -> str:
    """This boot of this machine and this pid namespace: where a label's process id means something."""
    return f"{Path('/proc/sys/kernel/random/boot_id').read_text().strip()}/{os.stat('/proc/self/ns/pid').st_ino}"


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (with the pid, it names one process), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner() -> str:
    """The label value naming this process as the owner of the containers it creates."""
    pid = os.getpid()
    return f"{machine()}/{pid}/{start_time(pid)}"


@contextlib.contextmanager
def _scratch_dirs() -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory(prefix="evalbot-probe-") as tmp:
        src, out = Path(tmp, "src"), Path(tmp, "out")
        src.mkdir()
        out.mkdir()
        yield src, out
