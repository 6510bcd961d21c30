"""A build image made offline from this machine's own CUDA toolkit and compiler.

Validators normally run an ``nvidia/cuda`` devel image. Where no registry is reachable (CI, air-gapped
boxes) this builds the smallest image that works instead: ``docker import`` of a root file system
holding only ``/etc/passwd``, ``/etc/group``, an empty ``/tmp`` and the mount points, with the host's
``/usr`` (compiler, CUDA toolkit, libraries) mounted read-only at run time through
``[build] toolchain_mounts``. Nothing of the host outside those mounts is visible in the container.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import docker

from evalbot.build import docker_backend
from evalbot.errors import EvalbotError

DEFAULT_TAG = "evalbot-host-toolchain:1"
_USR_LINKS = ("bin", "lib", "lib64", "sbin")


@dataclass(frozen=True)
class HostImage:
    tag: str
    image_id: str
    toolchain_mounts: tuple[str, ...]


def _dir(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    return info


def _file(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def root_filesystem(uid: int, gid: int, nvcc: Path) -> tuple[bytes, tuple[str, ...]]:
    """The image's tarball and the host paths to mount read-only for it to run ``nvcc``."""
    mounts = ["/usr"]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in ("etc", "usr", "job", "job/src", "job/out", "proc", "dev", "sys"):
            archive.addfile(_dir(name))
        # Docker copies the image's /tmp mode onto the tmpfs mounted there: it must be world-writable.
        archive.addfile(_dir("tmp", 0o1777))
        for name in _USR_LINKS:
            host = Path("/") / name
            if host.is_symlink():  # merged-/usr systems: /bin -> usr/bin and so on
                link = tarfile.TarInfo(name)
                link.type = tarfile.SYMTYPE
                link.linkname = str(host.readlink())
                archive.addfile(link)
            elif host.is_dir():
                archive.addfile(_dir(name))
                mounts.append(str(host))
        _file(archive, "etc/passwd", f"root:x:0:0:root:/root:/bin/sh\nbuilder:x:{uid}:{gid}:builder:/tmp:/bin/sh\n")
        _file(archive, "etc/group", f"root:x:0:\nbuilder:x:{gid}:\n")
    toolkit = nvcc.resolve().parent.parent
    if not toolkit.is_relative_to("/usr"):
        mounts.append(str(toolkit))
    return buffer.getvalue(), tuple(mounts)


def build_host_image(tag: str = DEFAULT_TAG, user: str = "65534:65534",
                     client: docker.DockerClient | None = None) -> HostImage:
    """Import the image into the local docker engine and return its tag, id and the mounts it needs."""
    found = shutil.which("nvcc")
    if found is None:
        raise EvalbotError("nvcc not found on PATH: the host image needs this machine's CUDA toolkit")
    nvcc = Path(found)
    uid, gid = (int(part) for part in user.split(":"))
    data, mounts = root_filesystem(uid, gid, nvcc)
    path = f"{nvcc.parent}:/usr/local/cuda/bin:/usr/local/bin:/usr/bin:/bin"
    repository, _, version = tag.partition(":")
    try:
        client = client or docker.from_env(timeout=120)
        client.api.import_image_from_data(data, repository=repository, tag=version or "latest",
                                          changes=[f"ENV PATH={path}", f"LABEL {docker_backend.LABEL}=host-image"])
        image = client.images.get(tag)
    except docker.errors.DockerException as exc:
        raise EvalbotError(f"cannot import the host toolchain image {tag!r}: {exc}") from None
    return HostImage(tag, image.id, mounts)
