"""The ctypes mirror of cuda.h's launch structs must match the real header byte for byte: a wrong
offset would launch with garbage geometry or silently drop the PDL attribute."""

import ctypes
import shutil
import subprocess

import pytest

from reference_runtime.runtime.driver_launch import _PROGRAMMATIC_STREAM_SERIALIZATION, _Attribute, _Config

_PROBE = """
#include <cuda.h>
#include <cstddef>
#include <cstdio>
int main() {
    std::printf("%zu %zu %zu\\n", sizeof(CUlaunchAttribute), offsetof(CUlaunchAttribute, value),
                sizeof(CUlaunchAttributeValue));
    std::printf("%zu %zu %zu %zu %zu %zu %zu\\n", sizeof(CUlaunchConfig), offsetof(CUlaunchConfig, blockDimX),
                offsetof(CUlaunchConfig, sharedMemBytes), offsetof(CUlaunchConfig, hStream),
                offsetof(CUlaunchConfig, attrs), offsetof(CUlaunchConfig, numAttrs),
                offsetof(CUlaunchConfig, gridDimX));
    std::printf("%d\\n", (int)CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
}
"""


@pytest.fixture(scope="module")
def header_layout(tmp_path_factory: pytest.TempPathFactory) -> list[list[int]]:
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc (and its cuda.h) is not installed")
    work = tmp_path_factory.mktemp("layout")
    (work / "probe.cpp").write_text(_PROBE)
    # nvcc puts its own include directory (cuda.h) on the host compiler's path.
    subprocess.run(["nvcc", "-o", str(work / "probe"), str(work / "probe.cpp")], check=True, capture_output=True)
    out = subprocess.run([str(work / "probe")], check=True, capture_output=True, text=True).stdout
    return [[int(v) for v in line.split()] for line in out.splitlines()]


def test_launch_attribute_matches_cuda_h(header_layout):
    size, value_offset, value_size = header_layout[0]
    assert (ctypes.sizeof(_Attribute), _Attribute.value.offset) == (size, value_offset)
    assert _Attribute.value.size == value_size
    assert header_layout[2] == [_PROGRAMMATIC_STREAM_SERIALIZATION]


def test_launch_config_matches_cuda_h(header_layout):
    size, block, shared, stream, attrs, n_attrs, grid = header_layout[1]
    assert ctypes.sizeof(_Config) == size
    assert (_Config.grid.offset, _Config.block.offset, _Config.shared_bytes.offset) == (grid, block, shared)
    assert (_Config.stream.offset, _Config.attrs.offset, _Config.n_attrs.offset) == (stream, attrs, n_attrs)

