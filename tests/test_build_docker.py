"""The docker backend for real: a locally imported image, the host's toolkit mounted read-only.

Every hostile build ends in a REJECT whose reason names the slot and what happened, and the build
after it works.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
import pytest

from evalbot.build.backend import OUTPUT_LIMIT_BYTES, OUTPUT_MAX_ENTRIES
from evalbot.build.builder import build_tree
from evalbot.build.cubin import entry_kernels
from evalbot.build.docker_backend import (
    DEADLINE_LABEL,
    LABEL,
    OWNER_LABEL,
    SANDBOX,
    DockerBackend,
    machine,
    owner,
    reap,
    start_time,
)
from evalbot.build.hostimage import build_host_image
from evalbot.build.local_backend import LocalBackend
from evalbot.config import Config
from evalbot.errors import EvalbotError
from tests.build_support import (
    INCLUDE_BOMB,
    KERNELS,
    ONE_SLOT_MANIFEST,
    TEST_IMAGE,
    WARNING_FLOOD,
    EngineProxy,
    PlantingBackend,
    finishes,
    make_config,
    require_docker,
    tree_bytes,
    tree_with,
)

pytestmark = pytest.mark.docker

SECRET = "ghp_evalbotTestSecret0123456789"


@pytest.fixture(scope="session")
def image() -> tuple[str, list[str]]:
    require_docker()
    built = build_host_image(TEST_IMAGE)
    return built.tag, list(built.toolchain_mounts)


@pytest.fixture
def cfg(tmp_path: Path, image: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> Config:
    # The bot's own environment carries secrets; none of them may reach a build.
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    monkeypatch.setenv("EVALBOT_SIGNING_KEY", SECRET)
    tag, mounts = image
    return make_config(tmp_path / "cache", backend="docker", image=tag, toolchain_mounts=mounts, timeout_s=60.0,
                       memory_mb=2048, pids=256, log_limit_bytes=16384, jobs=2)


def with_build(cfg: Config, **changes: object) -> Config:
    import dataclasses

    return dataclasses.replace(cfg, build=dataclasses.replace(cfg.build, **changes))


def assert_next_build_works(cfg: Config, tmp_path: Path) -> None:
    report = build_tree(KERNELS, cfg, "sm_90")
    assert report.ok, report.reasons
    assert {s.slot for s in report.slots} == {"rmsnorm", "gemv_q8_0", "gemv_f32", "glu_swiglu"}


def no_build_containers_left() -> bool:
    """None of this process's build containers is left (other processes may be building on the same engine)."""
    return not containers_of(owner())


def containers_of(owner_label: str) -> list:
    """The owner's containers, inspected; one removed between the listing and its inspection is gone, not an error."""
    found = []
    for container in docker.from_env().containers.list(all=True, sparse=True,
                                                       filters={"label": f"{OWNER_LABEL}={owner_label}"}):
        with contextlib.suppress(docker.errors.NotFound):
            container.reload()
            found.append(container)
    return found


@pytest.mark.parametrize("arch", ["sm_90", "sm_120"])
def test_builds_every_slot_then_rebuilds_from_cache_in_under_a_second(cfg, arch):
    backend = DockerBackend(cfg.build)  # one per validator process: the toolchain is probed once
    cold = build_tree(KERNELS, cfg, arch, backend=backend)
    assert cold.ok, cold.reasons
    assert cold.sandboxed and cold.backend == "docker"
    assert f"docker {docker.from_env().images.get(cfg.build.image).id}" in cold.toolchain
    assert "Cuda compilation tools" in cold.toolchain
    for slot in cold.slots:
        assert not slot.cached
        assert slot.cubin is not None
        assert set(slot.kernels) <= entry_kernels(slot.cubin.read_bytes())
    started = time.monotonic()
    warm = build_tree(KERNELS, cfg, arch, backend=backend)
    elapsed = time.monotonic() - started
    assert warm.ok and all(s.cached for s in warm.slots)
    assert warm.cubins() == cold.cubins()
    assert elapsed < 1.0, f"cached rebuild took {elapsed:.2f} s"
    assert no_build_containers_left()


def test_a_changed_include_file_rebuilds_only_what_sees_it(cfg, tmp_path):
    root = tree_with(tmp_path)
    first = build_tree(root, cfg, "sm_90")
    (root / "include" / "common.cuh").write_text((root / "include" / "common.cuh").read_text() + "\n// edit\n")
    (root / "README.md").write_text("not visible to the compiler\n")
    second = build_tree(root, cfg, "sm_90")
    assert first.ok and second.ok
    assert not any(s.cached for s in second.slots)  # every slot may include common.cuh
    third = build_tree(root, cfg, "sm_90")
    assert all(s.cached for s in third.slots)


def test_compile_error_rejects_with_slot_and_first_error_line(cfg, tmp_path):
    source = 'extern "C" __global__ void rmsnorm_f32(float* x) {\n    x[0] = undefined_thing;\n}\n'
    report = build_tree(tree_with(tmp_path, source), cfg, "sm_90")
    assert report.label == "REJECT"
    assert report.reasons == ('slot rmsnorm: src/rmsnorm.cu(2): error: identifier "undefined_thing" is undefined',)
    failed = next(s for s in report.slots if s.slot == "rmsnorm")
    assert "1 error detected" in failed.log
    assert [s.ok for s in report.slots if s.slot != "rmsnorm"] == [True, True, True]


def test_missing_entry_kernel_rejects_naming_it(cfg, tmp_path):
    source = 'extern "C" __global__ void rms_norm(float* x) { x[0] = 1.0f; }\n'
    report = build_tree(tree_with(tmp_path, source), cfg, "sm_90")
    assert report.reasons[0].startswith(
        "slot rmsnorm: kernel 'rmsnorm_f32' not found in the cubin (entry kernels: rms_norm)")


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/shadow"])
def test_include_of_host_files_sees_the_image_not_the_host(cfg, tmp_path, path):
    source = f'#include "{path}"\nextern "C" __global__ void rmsnorm_f32(float* x) {{ x[0] = 1.0f; }}\n'
    report = build_tree(tree_with(tmp_path, source), cfg, "sm_90")
    assert report.label == "REJECT"
    log = report.slots[0].log
    assert report.reasons[0].startswith("slot rmsnorm: ")
    if path == "/etc/passwd":
        # The image's passwd is what the compiler sees (and echoes in its errors) ...
        assert report.reasons[0] == "slot rmsnorm: /etc/passwd(1): error: this declaration has no storage class or " \
                                    "type specifier"
        assert "root:x:0:0:root:/root:/bin/sh" in log
    else:
        assert "No such file or directory" in report.reasons[0]
    # ... and no line of the host's own file appears.
    image_lines = {"root:x:0:0:root:/root:/bin/sh", "builder:x:65534:65534:builder:/tmp:/bin/sh"}
    host_only = set(Path("/etc/passwd").read_text().splitlines()) - image_lines - {""}
    assert host_only
    assert not any(line in log for line in host_only)
    assert SECRET not in log
    assert_next_build_works(cfg, tmp_path)


def test_secrets_in_the_bot_environment_never_reach_the_build(cfg, tmp_path):
    host_secret = tmp_path / "host-secret.cuh"
    host_secret.write_text(f"{SECRET} appears here\n")
    kernel = 'extern "C" __global__ void rmsnorm_f32(float* x) { x[0] = 1.0f; }\n'
    tree = tree_with(tmp_path, f'#include "{host_secret}"\n{kernel}')

    # Control: the unsandboxed local backend can read the host file, and its error echoes the secret.
    local = build_tree(tree, with_build(cfg, backend="local"), "sm_90", backend=LocalBackend(cfg.build))
    assert SECRET in local.slots[0].log

    report = build_tree(tree, cfg, "sm_90")
    missing = f"{host_secret}: No such file or directory"
    assert report.reasons[0] == f"slot rmsnorm: src/rmsnorm.cu:1:10: fatal error: {missing}"
    assert SECRET not in report.slots[0].log
    assert SECRET not in str(report.to_dict())

    # The compiler's own environment, included as source, holds nothing of the bot's.
    environ = build_tree(tree_with(tmp_path, f'#include "/proc/self/environ"\n#include "/proc/1/environ"\n{kernel}'),
                         cfg, "sm_90")
    assert SECRET not in str(environ.to_dict())

    # What the compiler's processes see as their environment: the fixed sandbox set, nothing else.
    backend = DockerBackend(cfg.build)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "src"), Path(tmp, "out")
        src.mkdir()
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        seen = backend.run(["sh", "-c", "env; tr '\\0' '\\n' < /proc/1/environ"], src, out)
    assert seen.exit_code == 0
    names = {line.split("=", 1)[0] for line in seen.log.splitlines() if "=" in line}
    assert names <= {"HOME", "TMPDIR", "LANG", "LC_ALL", "PATH", "HOSTNAME", "PWD", "SHLVL", "_"}
    assert "HOME=/tmp" in seen.log
    assert SECRET not in seen.log
    assert_next_build_works(cfg, tmp_path)


class _Listener:
    """A TCP server on every host address that records whoever connects."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.peers: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            self.peers.append(addr[0])
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_the_build_has_no_network(cfg, tmp_path):
    """Proof by attempt: a command run through the backend's own build hook tries to reach a socket
    listening on the host; the same command in an ordinary (bridged) container reaches it."""
    client = docker.from_env()
    ipam = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    host = ipam.get("Gateway") or str(ipaddress.ip_network(ipam["Subnet"])[1])
    listener = _Listener()
    try:
        attempt = f"echo hello > /dev/tcp/{host}/{listener.port} && echo CONNECTED"
        control = client.containers.run(cfg.build.image, ["bash", "-c", attempt], remove=True, user="65534:65534",
                                        volumes={m: {"bind": m, "mode": "ro"} for m in cfg.build.toolchain_mounts})
        assert b"CONNECTED" in control
        deadline = time.monotonic() + 5
        while not listener.peers and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener.peers, "control container did not reach the host listener"
        before = len(listener.peers)

        backend = DockerBackend(cfg.build)
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp, "src"), Path(tmp, "out")
            src.mkdir()
            out.mkdir()
            out.chmod(0o777)
            result = backend.run(["bash", "-c", f"{attempt}; echo INTERFACES $(ls /sys/class/net)"], src, out)
        time.sleep(0.5)
        assert "CONNECTED" not in result.log
        assert "Network is unreachable" in result.log
        assert "INTERFACES lo\n" in result.log
        assert len(listener.peers) == before
    finally:
        listener.close()

    # The manifest offers no way to run anything else: host-compiler pass-through flags are refused.
    manifest = (KERNELS / "kernels.toml").read_text().replace(
        'flags = ["-use_fast_math"]', f'flags = ["-Xcompiler=-fplugin=/tmp/x.so", "-DHOST={host}"]')
    report = build_tree(tree_with(tmp_path, manifest=manifest), cfg, "sm_90")
    assert report.label == "REJECT"
    assert "slot gemv_q8_0: flags[0]: flag '-Xcompiler=-fplugin=/tmp/x.so' is not allowed" in report.reasons[0]
    assert_next_build_works(cfg, tmp_path)


def test_the_container_is_locked_down(cfg, tmp_path):
    backend = DockerBackend(cfg.build)
    script = ("id -u; grep CapEff /proc/self/status; ulimit -f; touch /job/src/x; touch /x; touch /job/out/ok && "
              "echo OUT-WRITABLE; cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max "
              "/sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; "
              "df -k /job/out | tail -n 1; true")
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "src"), Path(tmp, "out")
        src.mkdir()
        out.mkdir()
        out.chmod(0o777)
        result = backend.run(["bash", "-c", script], src, out)
        assert (out / "ok").exists()
    # docker interleaves the container's stdout and stderr in no fixed order: look lines up, not by position
    lines = result.log.splitlines()
    assert "65534" in lines
    assert "CapEff:\t0000000000000000" in lines
    assert str(512 * 1024) in lines  # ulimit -f counts KiB: the 512 MiB file-size cap
    assert "touch: cannot touch '/job/src/x': Read-only file system" in result.log
    assert "touch: cannot touch '/x': Read-only file system" in result.log
    assert "OUT-WRITABLE" in result.log
    assert "256" in lines  # pids limit
    assert str(2048 * 2**20) in lines  # memory limit
    assert any(line.split()[1:2] == [str(OUTPUT_LIMIT_BYTES // 1024)] for line in lines)  # df: 1K-blocks of /job/out


def test_never_ending_compile_is_killed_at_the_time_limit(cfg, tmp_path):
    limited = with_build(cfg, timeout_s=6.0)
    started = time.monotonic()
    report = build_tree(tree_with(tmp_path, INCLUDE_BOMB), limited, "sm_90")
    elapsed = time.monotonic() - started
    assert report.reasons == ("slot rmsnorm: build killed at the 6 s time limit",)
    assert elapsed < 6.0 + 15
    assert no_build_containers_left()
    assert_next_build_works(cfg, tmp_path)


def test_memory_hungry_compile_is_killed_at_the_memory_limit(cfg, tmp_path):
    report = build_tree(tree_with(tmp_path, INCLUDE_BOMB), with_build(cfg, memory_mb=256), "sm_90")
    assert report.reasons == ("slot rmsnorm: build killed at the 256 MB memory limit",)
    assert_next_build_works(cfg, tmp_path)


def test_output_flood_is_capped_and_stopped(cfg, tmp_path):
    report = build_tree(tree_with(tmp_path, WARNING_FLOOD), cfg, "sm_90")
    assert report.reasons == ("slot rmsnorm: compiler output passed the 16384-byte log limit; build stopped",)
    log = report.slots[0].log
    assert "#warning flood 0" in log
    assert "flood 19999" not in log
    assert len(log.encode()) <= 16384 + 200
    assert no_build_containers_left()
    assert_next_build_works(cfg, tmp_path)


def test_path_traversal_in_the_manifest_is_refused_before_any_container(cfg, tmp_path):
    manifest = (KERNELS / "kernels.toml").read_text().replace('source = "src/glu.cu"', 'source = "../../etc/passwd"')
    tree = tree_with(tmp_path, manifest=manifest)
    report = build_tree(tree, cfg, "sm_90")
    assert report.reasons == (f"{tree / 'kernels.toml'}: slot glu_swiglu: source: '../../etc/passwd': '..' is "
                              "refused; paths must stay inside the tree",)
    assert report.slots == ()
    assert_next_build_works(cfg, tmp_path)


def test_unknown_image_is_a_clear_error(cfg):
    from evalbot.errors import EvalbotError

    with pytest.raises(EvalbotError, match="docker image 'evalbot-no-such-image:0' is not present"):
        DockerBackend(with_build(cfg, image="evalbot-no-such-image:0").build)


def test_root_user_is_refused(cfg):
    from evalbot.errors import EvalbotError

    with pytest.raises(EvalbotError, match=r"\[build\] user must be a non-root numeric uid:gid"):
        DockerBackend(with_build(cfg, user="0:0").build)


def test_the_image_entrypoint_never_runs(cfg, tmp_path):
    """nvidia/cuda images wrap every command in an entrypoint script; builds bypass it."""
    import dataclasses
    import shutil

    from evalbot.build.hostimage import root_filesystem

    client = docker.from_env()
    data, _ = root_filesystem(65534, 65534, Path(shutil.which("nvcc") or "nvcc"))
    client.api.import_image_from_data(data, repository="evalbot-test-entrypoint", tag="1",
                                      changes=['ENTRYPOINT ["/usr/bin/echo", "ENTRYPOINT-RAN"]'])
    try:
        backend = DockerBackend(dataclasses.replace(cfg.build, image="evalbot-test-entrypoint:1"))
        out = tmp_path / "out"
        out.mkdir()
        out.chmod(0o777)
        result = backend.run(["/usr/bin/echo", "direct"], tmp_path, out)
        assert result.log == "direct\n"
    finally:
        client.images.remove("evalbot-test-entrypoint:1", force=True)


def scratch(tmp_path: Path) -> tuple[Path, Path]:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    return src, out


@pytest.mark.parametrize(("script", "kind"), [
    ("mkfifo {out}", "a FIFO"), ("ln -s /etc/shadow {out}", "a symbolic link"), ("mkdir {out}", "a directory"),
], ids=["fifo", "symlink", "directory"])
def test_a_fifo_link_or_directory_planted_at_the_output_path_is_a_reject(cfg, tmp_path, script, kind):
    backend = PlantingBackend(DockerBackend(cfg.build), script)
    tree = tree_with(tmp_path, manifest=ONE_SLOT_MANIFEST)
    report = finishes(lambda: build_tree(tree, cfg, "sm_90", backend=backend, use_cache=False), within_s=120)
    assert report.reasons == (f"slot rmsnorm: no usable cubin: kernel.cubin is {kind}, not a regular file",)


def test_the_output_directory_is_capped_in_total_not_only_per_file(cfg, tmp_path):
    backend = DockerBackend(cfg.build)
    src, out = scratch(tmp_path)
    # Two files, each well under the 512 MiB per-file cap, together past the output directory's size.
    script = "for f in a b; do head -c 104857600 /dev/zero > /job/out/$f || echo FAILED $f; done"
    result = backend.run(["sh", "-c", script], src, out)
    assert "No space left on device" in result.log and "FAILED b" in result.log
    assert result.disk_full == f"its {OUTPUT_LIMIT_BYTES // 2**20} MiB output directory"
    used, _ = tree_bytes(out)
    assert used <= OUTPUT_LIMIT_BYTES
    # Entries are capped too: an endless stream of empty files stops at the mount's inode count.
    files = "i=0; while true > /job/out/f$i; do i=$((i+1)); done 2>/dev/null; echo MADE $i"
    (tmp_path / "out2").mkdir()
    many = backend.run(["sh", "-c", files], src, tmp_path / "out2")
    assert f"MADE {OUTPUT_MAX_ENTRIES - 1}\n" in many.log
    assert many.disk_full
    # Through the builder, filling the output is the contributor's REJECT, whatever the compiler's status.
    planting = PlantingBackend(backend, "head -c 200000000 /dev/zero > {out}; true")
    tree = tree_with(tmp_path, manifest=ONE_SLOT_MANIFEST)
    report = build_tree(tree, cfg, "sm_90", backend=planting, use_cache=False)
    assert report.reasons == (f"slot rmsnorm: build filled its {OUTPUT_LIMIT_BYTES // 2**20} MiB output directory",)
    assert no_build_containers_left()


BOT = """
import sys
from pathlib import Path
from evalbot.build import docker_backend
from tests.build_support import make_config
docker_backend.COPY_GRACE_S = 1.0  # the container's own clock: 3 s + 1 s
cfg = make_config(Path(sys.argv[1]) / "cache", backend="docker", image=sys.argv[2], toolchain_mounts=sys.argv[3:],
                  timeout_s=3.0)
work = Path(sys.argv[1])
docker_backend.DockerBackend(cfg.build).run(["sleep", "600"], work, work)
"""


@pytest.mark.slow
def test_a_container_outlives_no_killed_bot(cfg, tmp_path):
    """The bot is SIGKILLed mid-build (a compile of 600 s under a 3 s limit): the container's own clock
    ends it and the engine removes it, with no bot left to do either."""
    root = Path(__file__).parents[1]
    bot = subprocess.Popen([sys.executable, "-c", BOT, str(tmp_path), cfg.build.image, *cfg.build.toolchain_mounts],
                           cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and start_time(bot.pid) is not None:
            owned = containers_of(f"{machine()}/{bot.pid}/{start_time(bot.pid)}")
            if owned and owned[0].status == "running":
                break
            time.sleep(0.1)
        else:
            pytest.fail("the bot never started its build container")
        (container,) = owned
        assert container.labels[LABEL] == SANDBOX
        bot.kill()
        bot.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                container.reload()
            except docker.errors.NotFound:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"container {container.short_id} is still there 30 s after its bot died")
    finally:
        bot.kill()
        bot.wait()


def test_start_up_reaps_leftovers_of_dead_bots_and_past_deadlines(cfg, image):
    client = docker.from_env()
    mortal = subprocess.Popen(["sleep", "30"])
    dead = f"{machine()}/{mortal.pid}/{start_time(mortal.pid)}"
    mortal.kill()
    mortal.wait()
    future, past = f"{time.time() + 3600:.0f}", f"{time.time() - 1:.0f}"
    cases = {
        "dead owner here": ({OWNER_LABEL: dead, DEADLINE_LABEL: future}, True),
        "live owner here": ({OWNER_LABEL: owner(), DEADLINE_LABEL: future}, False),
        "owner elsewhere": ({OWNER_LABEL: "other-boot/1/1/1", DEADLINE_LABEL: future}, False),
        "owner elsewhere, past its deadline": ({OWNER_LABEL: "other-boot/1/1/1", DEADLINE_LABEL: past}, True),
        "no owner (an older evalbot)": ({}, True),
    }
    mounts = {m: {"bind": m, "mode": "ro"} for m in cfg.build.toolchain_mounts}
    made = {}
    try:
        for what, (labels, _) in cases.items():
            made[what] = client.containers.create(cfg.build.image, ["sleep", "600"], entrypoint=[], volumes=mounts,
                                                  labels={LABEL: SANDBOX, **labels})
        # Not a build: a container of the build image inherits the image's label with another value.
        made["a container of the image"] = client.containers.create(cfg.build.image, ["sleep", "600"], entrypoint=[],
                                                                    volumes=mounts)
        assert made["a container of the image"].labels[LABEL] != SANDBOX
        made["live owner here"].start()
        DockerBackend(cfg.build)  # reaps on start-up
        left = {c.id for c in client.containers.list(all=True, sparse=True)}
        gone = {what for what, c in made.items() if c.id not in left}
        assert gone == {what for what, (_, reaped) in cases.items() if reaped}
        assert reap(client) == []  # nothing more to remove
    finally:
        for container in made.values():
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def test_the_engine_failing_mid_build_is_an_error_not_a_reject(cfg, tmp_path):
    """A contributor's fault is a REJECT; the engine going away is the bot's error, retried later."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        pytest.skip(f"the engine is not on a unix socket here ({host})")
    with pytest.raises(EvalbotError, match="docker engine not reachable"):
        DockerBackend(cfg.build, client=docker.DockerClient(base_url=f"unix://{tmp_path}/none.sock", version="1.41"))
    proxy = EngineProxy(tmp_path / "engine.sock", host.removeprefix("unix://"))
    backend = DockerBackend(cfg.build, client=docker.DockerClient(base_url=f"unix://{proxy.path}", timeout=60))
    src, out = scratch(tmp_path)
    outcome: list[BaseException] = []

    def build() -> None:
        try:
            backend.run(["sleep", "600"], src, out)
        except BaseException as exc:  # handed to the test's thread
            outcome.append(exc)

    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    owned: list = []
    try:
        deadline = time.monotonic() + 60
        while not owned and time.monotonic() < deadline:
            owned = [c for c in containers_of(owner()) if c.status == "running"]
            time.sleep(0.1)
        assert owned, "the build container never started"
        proxy.cut()
        worker.join(60)
        assert not worker.is_alive()
        (error,) = outcome
        assert isinstance(error, EvalbotError) and str(error).startswith("docker engine failed during a build")
        with pytest.raises(EvalbotError, match="docker engine failed during a build"):
            build_tree(tree_with(tmp_path, manifest=ONE_SLOT_MANIFEST), cfg, "sm_90", backend=backend, use_cache=False)
    finally:
        for container in owned:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)  # v: its output volume too
