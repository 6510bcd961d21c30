"""Markers that skip cleanly, with the reason, when the hardware or tool they need is absent."""

from __future__ import annotations

import functools
import importlib.util

import pytest


@functools.cache
def cuda_device_reason() -> str | None:
    """None when a CUDA device is usable through CuPy, else why not."""
    if importlib.util.find_spec("cupy") is None:
        return "no CUDA device: CuPy is not installed (pip install '.[gpu]')"
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device present"
    except Exception as exc:  # driver missing, no device, ...
        return f"no CUDA device: {exc}"
    return None


@functools.cache
def llama_reason() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install '.[llama]')"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "gpu" in item.keywords and (reason := cuda_device_reason()):
            item.add_marker(pytest.mark.skip(reason=reason))
        if "llama" in item.keywords and (reason := llama_reason()):
            item.add_marker(pytest.mark.skip(reason=reason))
