"""Fault containment: run GPU work in a child process under a watchdog.

A candidate kernel can fault (illegal address: the CUDA context is dead afterwards) or never
finish (the host blocks in a synchronize forever). Either must come back to the caller as an
error while the caller's own process stays healthy, so GPU work runs in a *spawned* child (a fork
would inherit CUDA state) and the parent waits on a pipe with a deadline: a reply is the result or
the child's exception text; silence past the deadline kills the child; a pipe that closes without
a reply means the child died. Running out of GPU memory is told apart: it is the machine's limit,
not the kernel's fault.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from reference_runtime.errors import DeviceTooSmall, ReferenceRuntimeError

T = TypeVar("T")


class WorkerError(ReferenceRuntimeError):
    """The contained work did not return a result."""


class KernelFault(WorkerError):
    """The work raised (a CUDA error such as an illegal address) or the worker died."""


class KernelHang(WorkerError):
    """The work outlived its deadline; the worker was killed."""


class DeviceOutOfMemory(WorkerError):
    """The work ran out of GPU memory: the machine is too small for it, not the kernel at fault
    (slots cannot allocate; their scratch is bounded by the manifest's cap)."""


def _out_of_memory(exc: BaseException) -> bool:
    # CuPy's pool raises OutOfMemoryError; the runtime API and driver report their own codes.
    text = str(exc)
    return (isinstance(exc, DeviceTooSmall) or type(exc).__name__ == "OutOfMemoryError"
            or "cudaErrorMemoryAllocation" in text
            or "CUDA_ERROR_OUT_OF_MEMORY" in text)


def _child(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # everything, CUDA errors included, goes back as text
        status = "oom" if _out_of_memory(exc) else "error"
        conn.send((status, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    else:
        conn.send(("ok", result, ""))
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: after a fault the CUDA context is dead, and freeing modules and
    # memory on it only prints errors (or blocks).
    os._exit(0)


def run_contained(fn: Callable[..., T], *args: Any, timeout_s: float, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a fresh process; its result, or :class:`KernelFault` /
    :class:`KernelHang`. ``fn`` and its arguments must pickle."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, fn, args, kwargs), daemon=True)
    proc.start()
    sender.close()
    try:
        if not receiver.poll(timeout_s):
            proc.kill()
            proc.join()
            raise KernelHang(f"no result within {timeout_s:g} s; the worker (pid {proc.pid}) was killed")
        try:
            status, payload, trace = receiver.recv()
        except EOFError:
            proc.join()
            raise KernelFault(f"the worker died without a result (exit code {proc.exitcode})") from None
    finally:
        receiver.close()
    proc.join(timeout=30)
    if proc.is_alive():  # a reply came, but the process hangs in teardown (a stuck context)
        proc.kill()
        proc.join()
    if status == "ok":
        return payload  # type: ignore[no-any-return]
    if status == "oom":
        raise DeviceOutOfMemory(str(payload))
    raise KernelFault(f"{payload}\n--- worker traceback ---\n{trace}")
