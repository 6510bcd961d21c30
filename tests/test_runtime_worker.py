"""The watchdog worker on the CPU: results come back, exceptions come back as KernelFault, a dead
worker is a KernelFault, and work past its deadline is killed as a KernelHang in bounded time."""

from __future__ import annotations

import os
import signal
import time

import pytest

from reference_runtime.runtime.worker import DeviceOutOfMemory, KernelFault, KernelHang, run_contained


def _square(x: int) -> int:
    return x * x


def _raise() -> None:
    raise RuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")


class OutOfMemoryError(MemoryError):  # the name CuPy's memory pool raises
    pass


def _exhaust_pool() -> None:
    raise OutOfMemoryError("Out of memory allocating 19,327,352,832 bytes (allocated so far: 0 bytes).")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def _sleep_forever() -> None:
    while True:
        time.sleep(1)


def test_result_comes_back() -> None:
    assert run_contained(_square, 12, timeout_s=60) == 144


def test_exception_text_comes_back_as_fault() -> None:
    with pytest.raises(KernelFault, match="illegal memory access"):
        run_contained(_raise, timeout_s=60)


def test_dead_worker_is_a_fault() -> None:
    with pytest.raises(KernelFault, match="died"):
        run_contained(_die, timeout_s=60)


def test_hang_is_killed_at_the_deadline() -> None:
    start = time.monotonic()
    with pytest.raises(KernelHang, match="killed"):
        run_contained(_sleep_forever, timeout_s=3)
    assert time.monotonic() - start < 30


def test_running_out_of_gpu_memory_is_not_the_kernels_fault() -> None:
    with pytest.raises(DeviceOutOfMemory, match="Out of memory allocating") as caught:
        run_contained(_exhaust_pool, timeout_s=60)
    assert not isinstance(caught.value, KernelFault)
