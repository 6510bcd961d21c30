"""Kernel launches through the driver's ``cuLaunchKernelEx``, which CuPy does not expose: the only
way to ask for programmatic dependent launch (PDL), where a kernel's blocks may be scheduled while
the previous kernel on the stream is still running and wait on the device (``griddepcontrol.wait``)
for its results. Captured into a CUDA graph, such a launch becomes a programmatic edge."""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import numpy as np

from reference_runtime.errors import ReferenceRuntimeError

_PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, cuda.h


class DriverLaunchError(ReferenceRuntimeError):
    pass


class _Attribute(ctypes.Structure):  # CUlaunchAttribute: id, pad to 8, a 64-byte value union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int * 16)]


class _Config(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("shared_bytes", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("attrs", ctypes.POINTER(_Attribute)), ("n_attrs", ctypes.c_uint)]


@functools.cache
def _driver() -> Any:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise DriverLaunchError(f"cannot load the CUDA driver library: {exc}") from None
    lib.cuLaunchKernelEx.argtypes = [ctypes.POINTER(_Config), ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                                     ctypes.c_void_p]
    lib.cuLaunchKernelEx.restype = ctypes.c_int
    return lib


def _error_name(lib: Any, code: int) -> str:
    name = ctypes.c_char_p()
    lib.cuGetErrorName(code, ctypes.byref(name))
    return name.value.decode() if name.value else f"CUresult {code}"


def _padded(dims: tuple[int, ...]) -> Any:
    return (ctypes.c_uint * 3)(*dims, *(1,) * (3 - len(dims)))


class PreparedLaunch:
    """One kernel with fixed geometry and arguments, packed once so that each launch (eager, or
    recorded into a graph by stream capture) is a single driver call."""

    def __init__(self, function_ptr: int, grid: tuple[int, ...], block: tuple[int, ...], shared_bytes: int,
                 args: tuple[Any, ...], pdl: bool) -> None:
        self._values = [np.array(a) for a in args]  # storage the parameter pointers point into
        self._params = (ctypes.c_void_p * max(len(args), 1))(*[v.ctypes.data for v in self._values])
        self._attr = _Attribute(id=_PROGRAMMATIC_STREAM_SERIALIZATION)
        self._attr.value[0] = 1
        self._config = _Config(grid=_padded(grid), block=_padded(block), shared_bytes=shared_bytes,
                               attrs=ctypes.pointer(self._attr), n_attrs=1 if pdl else 0)
        self._function = ctypes.c_void_p(function_ptr)
        self._config_ref = ctypes.byref(self._config)
        self._launch = _driver().cuLaunchKernelEx
        self.pdl = pdl

    def __call__(self, stream_ptr: int) -> None:
        self._config.stream = stream_ptr
        code = self._launch(self._config_ref, self._function, self._params, None)
        if code != 0:
            raise DriverLaunchError(f"cuLaunchKernelEx failed: {_error_name(_driver(), code)}")
