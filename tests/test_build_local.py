"""The local (unsandboxed) backend: same limits on time and output, scrubbed environment, no network
namespace when unshare allows one, the compiler's whole process group killed at the limit and when the
bot dies, capped output; and the reader of what a build leaves, shared with the docker backend."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalbot.build.backend import MAX_FILE_BYTES, OUTPUT_LIMIT_BYTES
from evalbot.build.builder import OutputError, build_tree, read_output
from evalbot.build.local_backend import LocalBackend, unshare_prefix
from evalbot.config import Config
from tests.build_support import (
    INCLUDE_BOMB,
    KERNELS,
    ONE_SLOT_MANIFEST,
    WARNING_FLOOD,
    PlantingBackend,
    finishes,
    make_config,
    require_nvcc,
    tree_bytes,
    tree_with,
)

SECRET = "ghp_evalbotLocalSecret987654321"


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    require_nvcc()
    monkeypatch.setenv("GITHUB_TOKEN", SECRET)
    return make_config(tmp_path / "cache", backend="local", timeout_s=60.0, log_limit_bytes=16384, jobs=2)


def test_local_build_is_flagged_unsandboxed_and_cached(cfg):
    cold = build_tree(KERNELS, cfg, "sm_120")
    assert cold.ok, cold.reasons
    assert cold.backend == "local" and not cold.sandboxed
    assert cold.toolchain.startswith("local ") and "Cuda compilation tools" in cold.toolchain
    started = time.monotonic()
    warm = build_tree(KERNELS, cfg, "sm_120")
    assert all(s.cached for s in warm.slots)
    assert time.monotonic() - started < 1.0


def test_cache_is_keyed_by_arch_and_flags(cfg, tmp_path):
    build_tree(KERNELS, cfg, "sm_90")
    assert not any(s.cached for s in build_tree(KERNELS, cfg, "sm_120").slots)
    manifest = (KERNELS / "kernels.toml").read_text().replace('flags = ["-use_fast_math"]', 'flags = ["-lineinfo"]')
    changed = build_tree(tree_with(tmp_path, manifest=manifest), cfg, "sm_90")
    assert {s.slot: s.cached for s in changed.slots} == {
        "rmsnorm": True, "gemv_q8_0": False, "gemv_f32": True, "glu_swiglu": True}


def test_compiler_environment_is_scrubbed(cfg, tmp_path):
    backend = LocalBackend(cfg.build)
    out = tmp_path / "out"
    out.mkdir()
    result = backend.run(["env"], tmp_path, out)
    names = {line.split("=", 1)[0] for line in result.log.splitlines()}
    assert names == {"HOME", "TMPDIR", "LANG", "LC_ALL", "PATH"}
    assert SECRET not in result.log and SECRET in os.environ["GITHUB_TOKEN"]


def test_no_network_when_unshare_can_make_a_namespace(cfg, tmp_path):
    if not unshare_prefix():
        pytest.skip("unshare cannot create a network namespace here; the local backend then has network")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    port = server.getsockname()[1]
    result = LocalBackend(cfg.build).run(["bash", "-c", f"echo hi > /dev/tcp/127.0.0.1/{port} && echo CONNECTED"],
                                         tmp_path, tmp_path)
    with pytest.raises(TimeoutError):
        server.accept()
    server.close()
    assert "CONNECTED" not in result.log
    assert result.exit_code != 0


def _processes_in(directory: Path) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(os.readlink(f"/proc/{pid}/cwd")).is_relative_to(directory):
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_never_ending_compile_is_killed_with_all_its_children(cfg, tmp_path):
    import dataclasses

    limited = dataclasses.replace(cfg, build=dataclasses.replace(cfg.build, timeout_s=4.0))
    report = build_tree(tree_with(tmp_path, INCLUDE_BOMB), limited, "sm_90")
    assert report.reasons == ("slot rmsnorm: build killed at the 4 s time limit",)
    assert _processes_in(cfg.cache_dir) == []  # no cc1plus left running in the build directory
    assert build_tree(KERNELS, cfg, "sm_90").ok


def test_output_flood_is_capped(cfg, tmp_path):
    report = build_tree(tree_with(tmp_path, WARNING_FLOOD), cfg, "sm_90")
    assert report.reasons == ("slot rmsnorm: compiler output passed the 16384-byte log limit; build stopped",)
    assert len(report.slots[0].log.encode()) <= 16384 + 200
    assert build_tree(KERNELS, cfg, "sm_90").ok


def test_hand_written_ptx_is_a_valid_source(cfg, tmp_path):
    import subprocess

    root = tree_with(tmp_path)
    from reference_runtime.runtime.abi import cuda_dir

    subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-Iinclude", f"-I{cuda_dir()}", "-o", "src/rmsnorm.ptx",
                    "src/rmsnorm.cu"], cwd=root, check=True)
    (root / "kernels.toml").write_text((root / "kernels.toml").read_text().replace("src/rmsnorm.cu", "src/rmsnorm.ptx"))
    report = build_tree(root, cfg, "sm_90")
    assert report.ok, report.reasons
    assert report.slots[0].slot == "rmsnorm" and report.slots[0].cubin is not None


def test_slots_served_by_one_translation_unit_share_one_compile(cfg, tmp_path):
    root = tree_with(tmp_path)
    glu = root / "src" / "glu.cu"
    glu.write_text(glu.read_text() + """
extern "C" __global__ void glu_geglu(EVALBOT_GLU_ARGS) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_ff) return;
    const float g = gate[i];
    y[i] = 0.5f * g * (1.0f + tanhf(0.7978845608f * (g + 0.044715f * g * g * g))) * up[i];
}
""")
    (root / "kernels.toml").write_text((root / "kernels.toml").read_text() + """
[slots.glu_geglu]
source = "src/glu.cu"

[[slots.glu_geglu.launch]]
kernel = "glu_geglu"
grid = ["ceil_div(n_ff, 256)"]
block = [256]
""")
    messages: list[str] = []
    report = build_tree(root, cfg, "sm_90", progress=messages.append)
    assert report.ok, report.reasons
    cubins = report.cubins()
    assert cubins["glu_swiglu"] == cubins["glu_geglu"]
    assert len(set(cubins.values())) == 4
    assert sum(m.endswith(": compiling") for m in messages) == 4


def test_a_kernel_whose_parameters_differ_from_the_slot_signature_is_rejected(cfg, tmp_path):
    # `eps` missing: the runtime would pass five arguments to a kernel that reads four.
    wrong = ('#include "evalbot_slots.h"\n'
             'extern "C" __global__ void rmsnorm_f32(const float* x, const float* w, float* y, int n_embd) {\n'
             '    y[threadIdx.x] = x[threadIdx.x] * w[threadIdx.x] * n_embd;\n}\n')
    report = build_tree(tree_with(tmp_path, wrong), cfg, "sm_90")
    (reason,) = report.reasons
    assert reason.startswith("slot rmsnorm: kernel 'rmsnorm_f32' takes 4 parameters")
    assert "EVALBOT_RMSNORM_ARGS" in reason
    # the next build of the right kernel works
    assert build_tree(KERNELS, cfg, "sm_90").ok


@pytest.mark.parametrize(("plant", "kind"), [
    (lambda p: os.mkfifo(p), "a FIFO"),
    (lambda p: os.symlink("/etc/passwd", p), "a symbolic link"),
    (lambda p: p.mkdir(), "a directory"),
], ids=["fifo", "symlink", "directory"])
def test_reading_the_output_never_blocks_nor_follows(tmp_path, plant, kind):
    path = tmp_path / "kernel.cubin"
    plant(path)
    with pytest.raises(OutputError) as caught:
        finishes(lambda: read_output(path, 2**20), within_s=10)
    assert str(caught.value) == f"kernel.cubin is {kind}, not a regular file"


def test_reading_the_output_is_bounded(tmp_path):
    path = tmp_path / "kernel.cubin"
    with pytest.raises(OutputError, match=r"^kernel\.cubin was not written$"):
        read_output(path, 16)
    path.write_bytes(b"x" * 17)
    with pytest.raises(OutputError, match=r"^kernel\.cubin is larger than 16 bytes$"):
        read_output(path, 16)
    path.write_bytes(b"x" * 16)
    assert read_output(path, 16) == b"x" * 16


@pytest.mark.parametrize(("script", "kind"), [("mkfifo {out}", "a FIFO"),
                                              ("ln -s /etc/passwd {out}", "a symbolic link")], ids=["fifo", "symlink"])
def test_a_fifo_or_link_planted_by_the_compile_is_a_reject(cfg, tmp_path, script, kind):
    backend = PlantingBackend(LocalBackend(cfg.build), script)
    tree = tree_with(tmp_path, manifest=ONE_SLOT_MANIFEST)
    report = finishes(lambda: build_tree(tree, cfg, "sm_90", backend=backend, use_cache=False), within_s=60)
    assert report.reasons == (f"slot rmsnorm: no usable cubin: kernel.cubin is {kind}, not a regular file",)


def test_the_output_and_its_files_are_capped(cfg, tmp_path):
    backend = LocalBackend(cfg.build)
    out = tmp_path / "out"
    out.mkdir()
    # Per file: RLIMIT_FSIZE (sh counts 512-byte blocks).
    assert backend.run(["sh", "-c", "ulimit -f"], tmp_path, out).log == f"{MAX_FILE_BYTES // 512}\n"
    # In total: 8 MiB files, 40 of them if nothing stops the loop.
    script = f"for i in $(seq 40); do head -c 8388608 /dev/zero > {out}/f$i; sleep 0.1; done; echo ALL-WRITTEN"
    result = backend.run(["sh", "-c", script], tmp_path, out)
    assert result.disk_full == f"its {OUTPUT_LIMIT_BYTES // 2**20} MiB output directory"
    assert result.exit_code is None
    assert "ALL-WRITTEN" not in result.log and not (out / "f40").exists()
    used, _ = tree_bytes(out)
    assert OUTPUT_LIMIT_BYTES < used < 40 * 8 * 2**20
    planting = PlantingBackend(backend, "head -c 200000000 /dev/zero > {out}")
    tree = tree_with(tmp_path, manifest=ONE_SLOT_MANIFEST)
    report = build_tree(tree, cfg, "sm_90", backend=planting, use_cache=False)
    assert report.reasons == (f"slot rmsnorm: build filled its {OUTPUT_LIMIT_BYTES // 2**20} MiB output directory",)


BOT = """
import sys
from pathlib import Path
from evalbot.build import local_backend
from tests.build_support import make_config
if sys.argv[2] == "no-namespaces":
    local_backend.unshare_prefix = lambda: ()
cfg = make_config(Path(sys.argv[1]) / "cache", backend="local", timeout_s=float(sys.argv[3]))
work = Path(sys.argv[1]) / "work"
local_backend.LocalBackend(cfg.build).run(["sh", "-c", "sleep 300 & sleep 300"], work, work)
"""


@pytest.mark.parametrize("mode", ["namespaces", "no-namespaces"])
def test_a_killed_bot_leaves_no_compile_running(cfg, tmp_path, mode):
    """The bot is SIGKILLed mid-build: with a pid namespace the compile dies with it; without one, the
    command's own clock kills its process group shortly after the time limit (here 2 s)."""
    if mode == "namespaces" and "--kill-child" not in unshare_prefix():
        pytest.skip("unshare cannot create a pid namespace here")
    work = tmp_path / "work"
    work.mkdir()
    timeout_s = "60" if mode == "namespaces" else "2"
    bot = subprocess.Popen([sys.executable, "-c", BOT, str(tmp_path), mode, timeout_s], cwd=Path(__file__).parents[1],
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        deadline = time.monotonic() + 20
        while len(_processes_in(work)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_processes_in(work)) >= 2, "the build never started"
        bot.kill()
        bot.wait()
        deadline = time.monotonic() + 15
        while _processes_in(work) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _processes_in(work) == []
    finally:
        bot.kill()
        for pid in _processes_in(work):  # only the test's own sleeps can be there
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
