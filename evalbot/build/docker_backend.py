"""The sandboxed build backend: each compile runs in a fresh, throw-away docker container.

The container has no network (``network_mode=none``), a read-only root file system, the staged
sources mounted read-only, one writable output directory, a small ``/tmp`` tmpfs, no capabilities,
``no-new-privileges``, a non-root user, CPU / memory / pids / file-size limits, no core dumps, and
only the fixed environment of :func:`evalbot.build.backend.sandbox_env` plus the image's own ``ENV``
(nothing of the bot's).
Output is streamed through a bounded capture (the daemon keeps no log: ``log_config=none``), and
the container is killed at the wall-time limit or as soon as its output passes the log limit.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests
from docker.types import LogConfig, Ulimit

from evalbot.build.backend import RunResult, sandbox_env
from evalbot.build.capture import LogCapture
from evalbot.config import BuildConfig
from evalbot.errors import EvalbotError

SRC = "/job/src"
OUT = "/job/out"
# No single file a compile writes (temporaries included) may exceed this.
MAX_FILE_BYTES = 512 * 2**20
LABEL = "evalbot.build"


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
        except docker.errors.DockerException as exc:
            raise EvalbotError(f"docker engine not reachable ({exc}); start dockerd or use [build] backend = "
                               "\"local\"") from None
        try:
            self.image_id: str = self.client.images.get(cfg.image).id
        except docker.errors.ImageNotFound:
            raise EvalbotError(f"docker image {cfg.image!r} is not present: `docker pull {cfg.image}`, or "
                               "`evalbot build-image` to make one from this machine's CUDA toolkit (then set the "
                               "[build] image and toolchain_mounts it prints)") from None
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
        started = time.monotonic()
        container = self._create(list(argv), src, out)
        capture = LogCapture(self.cfg.log_limit_bytes)
        try:
            stream = container.attach(stdout=True, stderr=True, stream=True, logs=False)
            reader = threading.Thread(target=_pump, args=(stream, capture, container), daemon=True)
            reader.start()
            container.start()
            timed_out = False
            try:
                status = container.wait(timeout=self.cfg.timeout_s)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                timed_out = True
                _kill(container)
                status = container.wait(timeout=60)
            reader.join(timeout=10)
            container.reload()
            oom = bool(container.attrs["State"].get("OOMKilled"))
            killed = timed_out or capture.overflowed or oom
            return RunResult(
                exit_code=None if killed else int(status["StatusCode"]),
                log=capture.text(),
                seconds=time.monotonic() - started,
                timed_out=timed_out,
                flooded=capture.overflowed,
                oom=oom,
            )
        finally:
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)

    def _create(self, argv: list[str], src: Path, out: Path) -> Any:
        cfg = self.cfg
        volumes = {str(src): {"bind": SRC, "mode": "ro"}, str(out): {"bind": OUT, "mode": "rw"}}
        volumes.update({m: {"bind": m, "mode": "ro"} for m in cfg.toolchain_mounts})
        memory = f"{cfg.memory_mb}m"
        try:
            return self.client.containers.create(
                self.cfg.image,
                command=argv,
                entrypoint=[],
                user=cfg.user,
                working_dir=SRC,
                environment=sandbox_env("/tmp"),  # PATH stays the image's own
                hostname="build",
                network_mode="none",
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,size={cfg.memory_mb}m"},
                volumes=volumes,
                mem_limit=memory,
                memswap_limit=memory,
                nano_cpus=int(cfg.cpus * 1e9),
                pids_limit=cfg.pids,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                ulimits=[Ulimit(name="fsize", soft=MAX_FILE_BYTES, hard=MAX_FILE_BYTES),
                         Ulimit(name="core", soft=0, hard=0)],
                log_config=LogConfig(type="none"),
                labels={LABEL: "1"},
                detach=True,
                stdin_open=False,
                tty=False,
            )
        except docker.errors.DockerException as exc:
            raise EvalbotError(f"cannot create a build container from {cfg.image!r}: {exc}") from None


def _pump(stream: Any, capture: LogCapture, container: Any) -> None:
    """Copy the container's output into ``capture``; kill the container once it floods."""
    with contextlib.suppress(Exception):  # the stream ends abruptly when the container is killed
        for chunk in stream:
            if not capture.feed(chunk):
                _kill(container)
                return


def _kill(container: Any) -> None:
    with contextlib.suppress(docker.errors.DockerException):
        container.kill()


@contextlib.contextmanager
def _scratch_dirs() -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory(prefix="evalbot-probe-") as tmp:
        src, out = Path(tmp, "src"), Path(tmp, "out")
        src.mkdir()
        out.mkdir()
        out.chmod(0o777)
        yield src, out
