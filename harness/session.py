"""One evaluation's GPU work, as a single picklable job for the fault-containing worker process.

For every basket model: teacher-force the frozen corpus through the candidate's decode graph and
gate it against the cached fp64 reference; then, while every gate so far has passed, benchmark the
candidate against the frontier (both runtimes sharing the uploaded weights) at each context length
and then at the long-context guards, spot-checking the timed steps' logits. The result is plain
data: gates, speed cells and what identifies the run. Labels, files and GitHub are the caller's business.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cupy
import numpy as np

from harness.benchmark import ContextRun, interleaved, repeat_audit
from harness.divergence import Divergence, RowStats, block_stats, summarize
from harness.gates import GateLimits, end_to_end, kv_integrity, spot_check
from harness.gates import repeat_audit as repeat_audit_gate
from harness.measurements import GateResult, SpeedCell
from harness.stats import SamplingRule
from reference_runtime import corpus
from reference_runtime.gguf_model import GGUFModel
from reference_runtime.reference import REFERENCE_VERSION
from reference_runtime.reference_cache import reference_logprobs
from reference_runtime.runtime.decode import DecodeRuntime
from reference_runtime.runtime.device import DeviceModel
from reference_runtime.runtime.kernels import SlotKernel
from reference_runtime.runtime.plan import build_plan, require_fits
from reference_runtime.runtime.traffic import step_traffic

SLACK = 512  # KV positions past the longest context: the timed steps


@dataclass(frozen=True)
class SessionSpec:
    models: Mapping[str, Path]  # basket key -> GGUF file
    candidate: Mapping[str, SlotKernel]  # overrides of the baseline, per slot
    frontier: Mapping[str, SlotKernel]
    reference_dir: Path
    limits: GateLimits
    rule: SamplingRule  # per context; its budget_s is per (model, context)
    contexts: tuple[int, ...] = (128, 4096, 16384)
    peak_bytes_per_s: float = 0.0
    benchmark: bool = True
    seed: int = 0  # the validator's private seed: trial inputs, checked pairs, the audited context
    audit_margin: float = 0.05  # audit:repeat fails beyond this (policy [speed] repeat_audit_margin)
    audit_pairs: int = 16
    guard_contexts: tuple[int, ...] = ()  # long-context regression guards, not scored
    guard_rule: SamplingRule | None = None  # their rule (a shorter budget); None: ``rule``


@dataclass(frozen=True)
class ModelRun:
    key: str
    sha256: str
    corpus_sha256: str
    reference_version: int
    divergence: Divergence
    contexts: tuple[ContextRun, ...] = ()
    teacher_forced_s: float = 0.0
    stages_s: Mapping[str, float] = field(default_factory=dict)  # where the model's wall time went


@dataclass(frozen=True)
class SessionResult:
    gates: tuple[GateResult, ...]
    cells: tuple[SpeedCell, ...]
    models: tuple[ModelRun, ...]
    gpu: str
    driver: str
    seconds: float
    peak_bytes_per_s: float
    notes: tuple[str, ...] = field(default=())


def driver_version() -> str:
    """The kernel driver's version (e.g. 580.159.04) when the system exposes it, with the CUDA version
    the driver supports."""
    v = cupy.cuda.runtime.driverGetVersion()
    cuda = f"CUDA {v // 1000}.{v % 1000 // 10}"
    try:
        line = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return cuda
    found = re.search(r"Kernel Module(?: for [\w.]+)?\s+([\d.]+)", line)
    return f"{found.group(1)} ({cuda})" if found else cuda


def gpu_identity() -> tuple[str, str]:
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return name, driver_version()


def measure_peak_bandwidth(nbytes: int = 1 << 30, reps: int = 20) -> float:
    """Device-to-device copy, bytes read plus written per second: the roofline's denominator."""
    src, dst = cupy.ones(nbytes, cupy.uint8), cupy.empty(nbytes, cupy.uint8)
    for _ in range(3):
        dst[...] = src
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(reps):
        cupy.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, nbytes, cupy.cuda.runtime.memcpyDeviceToDevice, 0)
    stop.record()
    stop.synchronize()
    seconds = cupy.cuda.get_elapsed_time(start, stop) * 1e-3
    del src, dst
    cupy.get_default_memory_pool().free_all_blocks()
    return 2 * nbytes * reps / seconds


def speed_cell(model: str, run: ContextRun, frontier: DecodeRuntime, peak_bytes_per_s: float,
               guard: bool = False) -> SpeedCell:
    """One (model, context) of the benchmark as the policy scores it: median step times and the
    roofline time of the bytes the middle timed step must move."""
    mid = int(np.mean(run.starts or (run.context,))) + run.steps_per_trial // 2
    return SpeedCell(model=model, context=run.context, comparison=run.comparison,
                     t_frontier_s=float(np.median(run.frontier_s)), t_candidate_s=float(np.median(run.candidate_s)),
                     t_roofline_s=step_traffic(frontier.plan, mid).total / peak_bytes_per_s, guard=guard)


class _Stopwatch:
    """Adds the time since the last lap to a named stage (a stage may recur: one lap per context)."""

    def __init__(self, stages: dict[str, float]) -> None:
        self.stages, self.last = stages, time.monotonic()

    def lap(self, stage: str) -> None:
        now = time.monotonic()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self.last
        self.last = now


def run_session(spec: SessionSpec) -> SessionResult:
    started = time.monotonic()
    gpu, driver = gpu_identity()
    peak = spec.peak_bytes_per_s or measure_peak_bandwidth()
    gates: list[GateResult] = []
    cells: list[SpeedCell] = []
    runs: list[ModelRun] = []
    notes: list[str] = []
    for key, path in spec.models.items():
        stages: dict[str, float] = {}
        clock = _Stopwatch(stages)
        with GGUFModel.open(path) as model:
            model.sha256(spec.reference_dir / "digests")
            clock.lap("hash")
            text = corpus.for_model(model)
            ref = reference_logprobs(model, text, spec.reference_dir, xp=cupy)
            clock.lap("reference_cached" if ref.hit else "reference")
            n_ctx = max(len(text.tokens), max((*spec.contexts, *spec.guard_contexts)) + SLACK if spec.benchmark else 0)
            cupy.get_default_memory_pool().free_all_blocks()  # the reference's arrays
            free, total = cupy.cuda.runtime.memGetInfo()
            tensor_bytes = sum(int(model.raw(name).nbytes) for name in model.tensors)
            require_fits(build_plan(model, n_ctx), tensor_bytes, key, free, total)
            weights = DeviceModel(model)
            clock.lap("upload")
            frontier = DecodeRuntime(weights, n_ctx, spec.frontier)
            candidate = DecodeRuntime(weights, n_ctx, spec.candidate, share_from=frontier)
            clock.lap("runtimes")
            t0 = time.monotonic()
            targets = np.append(text.tokens[1:], text.tokens[0])
            # Each history block is compared on the device as it fills: no [n, n_vocab] float64 copy
            # on the host (normalizing Gemma's 2,396 × 262,144 logits there took ~20 s).
            stats = [block_stats(cupy.asarray(ref.logprobs[i : i + len(block)]), block, targets[i : i + len(block)],
                                 raw=True)
                     for i, block in candidate.teacher_forced_blocks(text.tokens)]
            tf_s = time.monotonic() - t0
            d = summarize(RowStats.concat(stats))
            model_gates = end_to_end(key, d, spec.limits)
            gates.extend(model_gates)
            clock.lap("teacher_forced")
            contexts: list[ContextRun] = []
            if spec.benchmark and all(g.passed for g in gates):
                seed = spec.seed % (1 << 62)
                guards = set(spec.guard_contexts)
                for ctx in (*spec.contexts, *spec.guard_contexts):
                    rule = (spec.guard_rule or spec.rule) if ctx in guards else spec.rule
                    run = interleaved(frontier, candidate, ctx, rule, seed=seed + ctx)
                    contexts.append(run)
                    gates.append(spot_check(key, ctx, run.spot_check, spec.limits))
                    gates.append(kv_integrity(key, ctx, run.kv_intact))
                    cells.append(speed_cell(key, run, frontier, peak, guard=ctx in guards))
                    clock.lap("guards" if ctx in guards else "benchmark")
                audited = spec.contexts[seed % len(spec.contexts)]
                audit = repeat_audit(frontier, candidate, audited, seed + audited, spec.audit_pairs)
                gates.append(repeat_audit_gate(key, audit, spec.audit_margin))
                clock.lap("repeat_audit")
            elif spec.benchmark:
                notes.append(f"{key}: not benchmarked (a gate failed)")
            runs.append(ModelRun(key, model.sha256(), text.sha256, REFERENCE_VERSION, d, tuple(contexts), tf_s,
                                 stages))
            del candidate, frontier, weights
            cupy.get_default_memory_pool().free_all_blocks()
            clock.lap("release")
    return SessionResult(tuple(gates), tuple(cells), tuple(runs), gpu, driver, time.monotonic() - started, peak,
                         tuple(notes))
