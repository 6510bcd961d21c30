"""The local (unsandboxed) backend: same limits on time and output, scrubbed environment, no network
namespace when unshare allows one, and the compiler's whole process group killed at the limit."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from evalbot.build.builder import build_tree
from evalbot.build.local_backend import LocalBackend, unshare_prefix
from evalbot.config import Config
from tests.build_support import INCLUDE_BOMB, KERNELS, WARNING_FLOOD, make_config, require_nvcc, tree_with

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
