"""Running the gates on the GPU: guarded buffers, the runtime's launch path, faults contained."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.kernel_gates.case_gen import Case, _check_seed, cases
from harness.kernel_gates.compare import Outcome, score, summarize
from harness.kernel_gates.inputs import Run, runs
from harness.kernel_gates.shapes import _CANARY, _GUARD_BYTES, FUZZ, FixedShape, GateFault, KernelGateError, gate_limit
from harness.measurements import GateResult
from reference_runtime.runtime.abi import slot_abis
from reference_runtime.runtime.kernels import SlotKernel
from reference_runtime.runtime.worker import KernelFault, KernelHang, WorkerError, run_contained


# -- running on the GPU ---------------------------------------------------------------------------
def _execute(slot: str, kernel: SlotKernel, case: Case, run: Run, n_sm: int
             ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Launch one run; (final contents of every buffer by parameter name, ABI violations seen)."""
    import cupy

    from reference_runtime.runtime.launch import run_slot

    abi = slot_abis()[slot]
    host: dict[str, np.ndarray] = {}
    device: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for prm in abi.params:
        if prm.name == "scratch":
            continue
        v = run.args[prm.name]
        if not prm.is_pointer:
            values[prm.name] = v
        elif v is None or prm.name in run.alias:
            values[prm.name] = None
        else:
            h = np.ascontiguousarray(v).reshape(-1)
            raw = cupy.full(2 * _GUARD_BYTES + h.nbytes, _CANARY, dtype=cupy.uint8)
            body = raw[_GUARD_BYTES : _GUARD_BYTES + h.nbytes]
            body[...] = cupy.asarray(h.view(np.uint8))
            host[prm.name], device[prm.name] = h, raw
            values[prm.name] = body.view(h.dtype)
    for name, target in run.alias.items():
        values[name] = values[target]
    run_slot(slot, kernel, {**case.env, "n_sm": n_sm}, values)
    cupy.cuda.Device().synchronize()
    got: dict[str, np.ndarray] = {}
    violations: list[str] = []
    aliased = set(run.alias.values())
    const = {prm.name for prm in abi.params if prm.ctype.startswith("const")}
    for name, raw in device.items():
        h = host[name]
        final = raw.get()
        if (final[:_GUARD_BYTES] != _CANARY).any() or (final[_GUARD_BYTES + h.nbytes :] != _CANARY).any():
            violations.append(f"wrote outside {name} (its guard bands changed)")
        got[name] = final[_GUARD_BYTES : _GUARD_BYTES + h.nbytes].view(h.dtype)
        if name in const and name not in aliased and got[name].tobytes() != h.tobytes():
            violations.append(f"modified the const input {name}")
    return got, violations


def check_slot(slot: str, kernel: SlotKernel, slot_cases: Sequence[Case], tolerances: Mapping[str, float],
               n_sm: int | None = None, repeats: int = 1) -> GateResult:
    """Run ``kernel`` as ``slot`` on every case (in this process, on the current CUDA device) and
    grade it. Each run is launched ``repeats`` times on the same inputs: the worst launch counts, and
    outputs that differ between launches are named in the gate's detail. A launch that cannot be
    made (no such entry, bad geometry) fails the gate; any other
    error while the kernel runs is raised as :class:`GateFault` (the CUDA context may be dead)."""
    from reference_runtime.runtime.launch import LaunchError

    limit = gate_limit(slot, tolerances)
    if n_sm is None:
        from reference_runtime.runtime.decode import device_sm_count

        n_sm = device_sm_count()
    outcomes: list[Outcome] = []
    for case in slot_cases:
        if case.slot != slot:
            raise KernelGateError(f"a {case.slot} case given to the {slot} gate")
        for run in runs(case):
            graded: list[tuple[float, str]] = []
            first: dict[str, np.ndarray] | None = None
            varies: set[str] = set()
            for _ in range(repeats):
                try:
                    got, violations = _execute(slot, kernel, case, run, n_sm)
                except LaunchError as exc:
                    outcomes.append(Outcome(case, run.label, math.inf, f"launch failed: {exc}"))
                    return summarize(slot, limit, outcomes)
                except Exception as exc:
                    where = ("a fuzzed shape " if case.fuzzed else "") + case.describe(run.label)
                    raise GateFault(f"{slot}: {type(exc).__name__}: {exc} (while running {where})") from None
                graded.append((math.inf, "; ".join(violations)) if violations else score(slot, run, got))
                if first is None:
                    first = got
                else:
                    varies |= {name for name in run.expect if got[name].tobytes() != first[name].tobytes()}
            error, note = max(graded, key=lambda g: g[0])
            outcomes.append(Outcome(case, run.label, error, note, tuple(sorted(varies))))
    return summarize(slot, limit, outcomes, repeats)


def _gate_job(overrides: Mapping[str, SlotKernel], fixed: Mapping[str, Sequence[FixedShape]], seed: int,
              tolerances: Mapping[str, float], fuzz_cases: int, repeats: int) -> tuple[GateResult, ...]:
    """The worker's side of :func:`run_kernel_gates`."""
    from reference_runtime.runtime.decode import device_sm_count

    n_sm = device_sm_count()
    return tuple(check_slot(slot, overrides[slot], cases(slot, fixed.get(slot, ()), seed, fuzz_cases), tolerances,
                            n_sm, repeats) for slot in sorted(overrides))


_TYPE_PREFIX = re.compile(r"^(\w+): ")


def _fault_gate(slot: str, exc: WorkerError, limit: float, timeout_s: float) -> GateResult:
    if isinstance(exc, KernelHang):
        detail = f"hung > {timeout_s:g} s: the gate worker was killed"
    else:
        detail = str(exc).splitlines()[0].removeprefix(f"{GateFault.__name__}: ")
    return GateResult(f"kernel:{slot}", FUZZ, False, math.inf, limit, detail)


def _internal(exc: WorkerError) -> bool:
    """Did the worker fail in this module's own code (not while a candidate kernel ran)?"""
    if not isinstance(exc, KernelFault):
        return False
    m = _TYPE_PREFIX.match(str(exc))
    return m is not None and m.group(1) != GateFault.__name__


def run_kernel_gates(overrides: Mapping[str, SlotKernel], fixed: Mapping[str, Sequence[FixedShape]], seed: int,
                     tolerances: Mapping[str, float], fuzz_cases: int, *, timeout_s: float = 300.0,
                     repeats: int = 1) -> tuple[GateResult, ...]:
    """One gate per overridden slot, sorted by slot, computed in a spawned GPU worker.

    All slots share one worker. If it faults or hangs, each slot is re-run in a worker of its own,
    so the culprit is named and the others still get their verdicts: a fault is a failed gate whose
    detail is the CUDA error ("... an illegal memory access was encountered (while running ...)"),
    a hang one that says "hung > N s". A failure of this module itself raises
    :class:`KernelGateError` (an evaluation error, not a verdict)."""
    _check_seed(seed)
    slots = sorted(overrides)
    limits = {slot: gate_limit(slot, tolerances) for slot in slots}
    if not slots:
        return ()
    tol = {k: float(v) for k, v in tolerances.items()}

    def job(chosen: list[str]) -> tuple[GateResult, ...]:
        subset = {s: overrides[s] for s in chosen}
        shapes = {s: list(fixed.get(s, ())) for s in chosen}
        try:
            return run_contained(_gate_job, subset, shapes, seed, tol, fuzz_cases, repeats, timeout_s=timeout_s)
        except WorkerError as exc:
            if _internal(exc):
                raise KernelGateError(f"the kernel gates failed: {exc}") from None
            if len(chosen) > 1:
                raise
            return (_fault_gate(chosen[0], exc, limits[chosen[0]], timeout_s),)

    try:
        return job(slots)
    except WorkerError:
        pass
    return tuple(g for slot in slots for g in job([slot]))
