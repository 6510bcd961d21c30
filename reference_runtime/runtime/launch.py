"""Launching one slot's kernel(s) with arguments given by name: the runtime's step and the slot
tests use the same packing, so a test exercises exactly the launches a graph captures."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import cupy
import numpy as np

from reference_runtime.errors import ReferenceRuntimeError
from reference_runtime.runtime.abi import slot_abis
from reference_runtime.runtime.driver_launch import PreparedLaunch
from reference_runtime.runtime.kernels import Env, LaunchSpec, SlotKernel
from reference_runtime.runtime.plan import INTERNAL

_MODULES: dict[str, Any] = {}


class LaunchError(ReferenceRuntimeError):
    pass


def param_dtypes(name: str) -> list[str]:
    """'ptr' or a NumPy scalar dtype per parameter of a slot or runtime-internal kernel."""
    if name in INTERNAL:
        return [d for _, d in INTERNAL[name]]
    return ["ptr" if p.is_pointer else p.scalar_dtype for p in slot_abis()[name].params]


def pack(name: str, values: list[Any]) -> tuple[Any, ...]:
    """Kernel arguments as NumPy scalars: pointers (ints, or None for NULL) as uint64."""
    dtypes = param_dtypes(name)
    if len(values) != len(dtypes):
        raise LaunchError(f"{name} takes {len(dtypes)} arguments, got {len(values)}")
    return tuple(np.uint64(0 if v is None else v) if d == "ptr" else np.dtype(d).type(v)
                 for v, d in zip(values, dtypes, strict=True))


def function(cubin: str, kernel: str) -> Any:
    """The entry ``kernel`` of ``cubin`` (modules are loaded once per process)."""
    module = _MODULES.get(cubin)
    if module is None:
        module = _MODULES[cubin] = cupy.RawModule(path=cubin)
    try:
        return module.get_function(kernel)
    except cupy.cuda.driver.CUDADriverError as exc:
        raise LaunchError(f"{cubin}: no kernel {kernel!r} ({exc})") from None


def dims(value: Any) -> tuple[int, ...]:
    out = (value,) if isinstance(value, int) else tuple(int(v) for v in value)
    if not 1 <= len(out) <= 3 or min(out) < 1:
        raise LaunchError(f"launch dimensions {out} are not 1 to 3 positive integers")
    return out


def geometry(spec: LaunchSpec, env: Env) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    return dims(spec.grid(env)), dims(spec.block(env)), int(spec.shared_bytes(env))  # type: ignore[arg-type]


@functools.cache
def _device_has_pdl(device: int) -> bool:
    return int(cupy.cuda.Device(device).compute_capability) >= 90  # griddepcontrol: sm_90 and later


def prepare(fn: Any, grid: tuple[int, ...], block: tuple[int, ...], shared: int, args: tuple[Any, ...],
            pdl: bool) -> PreparedLaunch:
    """``fn`` (from :func:`function`) ready to launch on any stream: ``prepared(stream.ptr)``. ``pdl``
    is dropped on GPUs older than sm_90, where the kernels' waits compile to nothing."""
    if shared > 48 * 1024:
        fn.max_dynamic_shared_size_bytes = shared
    pdl = pdl and _device_has_pdl(cupy.cuda.Device().id)
    return PreparedLaunch(fn.kernel.ptr, grid, block, shared, args, pdl)


def capture_repeated(launches: Sequence[PreparedLaunch], reps: int, stream: cupy.cuda.Stream) -> Any:
    """One CUDA graph of ``reps`` back-to-back launches cycling through ``launches``, replayed once
    (module load and first-launch costs stay out of what is timed)."""
    with stream:
        for each in launches:
            each(stream.ptr)
        stream.begin_capture()
        try:
            for i in range(reps):
                launches[i % len(launches)](stream.ptr)
        finally:
            graph = stream.end_capture()
    graph.launch(stream)
    stream.synchronize()
    return graph


def replay_us(graph: Any, stream: cupy.cuda.Stream, reps: int) -> float:
    """Microseconds per launch of one replay of a :func:`capture_repeated` graph, by CUDA events."""
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record(stream)
    graph.launch(stream)
    stop.record(stream)
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) * 1e3 / reps


def run_slot(slot: str, kernel: SlotKernel, env: Env, args: Mapping[str, Any]) -> None:
    """Launch ``kernel`` for ``slot`` on the current stream. ``args`` by parameter name: CuPy arrays
    for pointers (``None`` for NULL), numbers for scalars. Scratch is allocated and poisoned here."""
    abi = slot_abis()[slot]
    if set(args) != {p.name for p in abi.params} - {"scratch"}:
        raise LaunchError(f"{slot} takes {[p.name for p in abi.params]}, got {sorted(args)}")
    scratch = cupy.full(max(int(kernel.scratch_bytes(env)), 256), 0xFF, dtype=cupy.uint8)  # type: ignore[arg-type]
    values = []
    for p in abi.params:
        v = scratch if p.name == "scratch" else args[p.name]
        values.append(int(v.data.ptr) if isinstance(v, cupy.ndarray) else v)
    packed = pack(slot, values)
    stream = cupy.cuda.get_current_stream().ptr
    for spec in kernel.launches:
        prepare(function(str(kernel.cubin), spec.kernel), *geometry(spec, env), packed, spec.pdl)(stream)
