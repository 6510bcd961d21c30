"""CPU CI: every CUDA source of the runtime compiles with nvcc for the targets the bot builds for,
and every kernel the baseline table launches is an entry point of its cubin."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from evalbot.build.cubin import entry_kernels
from reference_runtime.runtime.abi import cuda_dir
from reference_runtime.runtime.compile import CompileError, compile_cubin
from reference_runtime.runtime.kernels import INTERNAL_LAUNCHES, _baseline_launches, kernel_source

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")

SOURCES = sorted((cuda_dir() / "kernels").glob("*.cu")) + sorted(
    (Path(__file__).parent / "data" / "runtime_kernels").glob("*.cu"))
ARCHS = ("sm_90", "sm_120")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_source_compiles(source: Path, arch: str, tmp_path: Path) -> None:
    cubin = compile_cubin(source, arch, tmp_path)
    assert entry_kernels(cubin.read_bytes())


def test_baseline_kernel_names_exist_in_their_cubins(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for slot, (src, launches, _scratch) in _baseline_launches().items():
        names = entry_kernels(compile_cubin(kernel_source(src), "sm_90", cache).read_bytes())
        for launch in launches:
            assert launch.kernel in names, (slot, launch.kernel)
    runtime = entry_kernels(compile_cubin(kernel_source("runtime"), "sm_90", cache).read_bytes())
    assert {spec.kernel for spec in INTERNAL_LAUNCHES.values()} <= runtime


def test_compile_cache_reuses_and_errors_name_the_source(tmp_path: Path) -> None:
    src = kernel_source("glu")
    first = compile_cubin(src, "sm_90", tmp_path)
    mtime = first.stat().st_mtime_ns
    assert compile_cubin(src, "sm_90", tmp_path) == first and first.stat().st_mtime_ns == mtime
    bad = tmp_path / "bad.cu"
    bad.write_text('extern "C" __global__ void k() { undeclared(); }\n')
    with pytest.raises(CompileError, match=r"bad\.cu"):
        compile_cubin(bad, "sm_90", tmp_path)


def test_every_baseline_kernel_has_its_slots_parameter_layout(tmp_path: Path) -> None:
    """The build's signature check (cubin parameter records vs the ABI header) accepts every
    baseline kernel, so it is reading both sides the way nvcc lays them out."""
    from evalbot.build.builder import abi_layout
    from evalbot.build.cubin import kernel_params

    cache = tmp_path / "cache"
    for slot, (src, launches, _scratch) in _baseline_launches().items():
        params = kernel_params(compile_cubin(kernel_source(src), "sm_90", cache).read_bytes())
        for launch in launches:
            assert params[launch.kernel] == abi_layout(slot), (slot, launch.kernel)


def _entries(ptx: str) -> dict[str, str]:
    """PTX text per ``.entry``: from its name to the next entry."""
    starts = [(m.group(1), m.start()) for m in re.finditer(r"\.entry\s+(\w+)\s*\(", ptx)]
    return {name: ptx[at : starts[i + 1][1] if i + 1 < len(starts) else len(ptx)]
            for i, (name, at) in enumerate(starts)}


def test_every_pdl_baseline_kernel_waits_before_touching_global_memory(tmp_path: Path) -> None:
    """A launch declared pdl may start while its predecessor still runs: the wait must come before
    the kernel's first global load or store (the ABI header's rule), in every baseline kernel."""
    table = [(src, spec) for src, specs, _scratch in _baseline_launches().values() for spec in specs]
    table += [("runtime", spec) for spec in INTERNAL_LAUNCHES.values()]
    entries: dict[str, dict[str, str]] = {}
    for src in {src for src, _ in table}:
        out = tmp_path / f"{src}.ptx"
        subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-O3", f"-I{cuda_dir()}", "-o", str(out),
                        str(kernel_source(src))], check=True, capture_output=True)
        entries[src] = _entries(out.read_text())
    for src, spec in table:
        assert spec.pdl, spec.kernel
        body = entries[src][spec.kernel]
        wait = body.find("griddepcontrol.wait")
        first_access = re.search(r"\b(ld|st|atom|red)\.global", body)
        assert wait >= 0 and first_access is not None and wait < first_access.start(), spec.kernel
