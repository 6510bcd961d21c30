"""The CUDA-graph decode runtime: one model, one KV cache, one kernel per slot (baseline or not).

``DecodeRuntime`` turns a :class:`~reference_runtime.runtime.plan.DecodePlan` into launches of the
chosen cubins, captures the whole step into one CUDA graph and replays it once per token. Nothing
on the host changes between replays: the step's prologue kernel advances a device-side counter
into the position and reads the input token from a device-side sequence; the recorder kernel
copies the logits into a device ring that the host reads every ``history`` tokens. MoE expert ids
stay on the device. Two runtimes may share one :class:`DeviceModel` (the weights) in a process.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cupy
import numpy as np

from reference_runtime.errors import ReferenceRuntimeError
from reference_runtime.runtime.abi import slot_abis
from reference_runtime.runtime.device import DeviceModel
from reference_runtime.runtime.driver_launch import PreparedLaunch
from reference_runtime.runtime.kernels import INTERNAL_LAUNCHES, SlotKernel, baseline_kernels, internal_cubin
from reference_runtime.runtime.launch import function, geometry, pack, prepare
from reference_runtime.runtime.plan import Buf, DecodePlan, Null, Op, build_plan

SCRATCH_ALIGN = 256
_POISON = 0xFF  # NaN in every float format: a kernel reading memory nothing wrote shows it


class RuntimeSetupError(ReferenceRuntimeError):
    pass


def device_arch() -> str:
    return f"sm_{cupy.cuda.Device().compute_capability}"


def device_sm_count() -> int:
    return int(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["multiProcessorCount"])


@dataclass(frozen=True)
class Launch:
    op: Op
    kernel: str
    prepared: PreparedLaunch  # geometry and arguments, packed


class DecodeRuntime:
    """Teacher-forced decode of one model through one captured CUDA graph."""

    def __init__(self, weights: DeviceModel, n_ctx: int, overrides: Mapping[str, SlotKernel] | None = None,
                 history: int = 256, baseline: Mapping[str, SlotKernel] | None = None,
                 share_from: DecodeRuntime | None = None, pdl: bool = True) -> None:
        """``pdl``: launch the kernels that wait on the device for their predecessor (every baseline
        kernel; candidates that declare it) as programmatic dependent launches, so their scheduling
        overlaps the previous kernel's tail. Off, every kernel starts only after the previous one
        ends: the step then shows each kernel's own time (for overhead measurements).

        ``share_from``: use that runtime's stream and working memory (KV cache, activations, state,
        scratch when large enough) instead of its own, keeping only the logits history apart. Two
        runtimes measured against each other then touch the very same addresses through the same
        hardware queue (on an H200 a runtime on a fresh stream ran up to 4.5 % slower, identical
        kernels, in a pattern that repeated every 8 streams); they can never run at once."""
        self.weights = weights
        self.plan: DecodePlan = build_plan(weights.model, n_ctx, history)
        self.arch, self.n_sm = device_arch(), device_sm_count()
        table = dict(baseline if baseline is not None else baseline_kernels(self.arch))
        for slot in overrides or {}:
            if slot not in slot_abis():
                raise RuntimeSetupError(f"override for unknown slot {slot!r}")
        table.update(overrides or {})
        if missing := [s for s in self.plan.slots_used() if s not in table]:
            raise RuntimeSetupError(f"no kernel for slot(s) {', '.join(missing)}")
        self.kernels = {s: table[s] for s in self.plan.slots_used()}
        self.stream = share_from.stream if share_from is not None else cupy.cuda.Stream(non_blocking=True)
        self.buffers: dict[str, cupy.ndarray] = {}
        if share_from is not None and (share_from.weights is not weights or share_from.plan.n_ctx != n_ctx
                                       or share_from.plan.history != history):
            raise RuntimeSetupError("shared working memory needs the same weights, n_ctx and history")
        self._allocate(share_from)
        self.pdl = pdl
        self.launches = self._resolve()
        self.graph: Any = None

    # -- set-up ---------------------------------------------------------------------------------
    def env(self, op: Op) -> dict[str, int]:
        return {**op.env, "n_sm": self.n_sm}

    def _allocate(self, share_from: DecodeRuntime | None) -> None:
        scratch = max((self.kernels[op.name].scratch_bytes(self.env(op)) for op in self.plan.ops
                       if not op.internal), default=0)
        with self.stream:
            for spec in self.plan.buffers.values():
                if spec.kind == "weight":
                    continue
                if share_from is not None and spec.kind != "history":
                    array = share_from.buffers[spec.name]
                elif spec.kind == "derived":
                    array = cupy.asarray(self.plan.derived[spec.name])
                else:
                    array = cupy.empty(spec.count, dtype=spec.dtype)
                    array.view(cupy.uint8).fill(0 if spec.kind in ("kv", "state") else _POISON)
                self.buffers[spec.name] = array
            need = max(scratch, SCRATCH_ALIGN)
            if share_from is not None and share_from.buffers["scratch"].size >= need:
                self.buffers["scratch"] = share_from.buffers["scratch"]
            else:
                self.buffers["scratch"] = cupy.full(need, _POISON, dtype=cupy.uint8)
        self.stream.synchronize()

    def ptr(self, arg: Buf | Null) -> int | None:
        if isinstance(arg, Null):
            return None
        base = self.weights.ptr(arg.name) if arg.name in self.weights.arrays else int(self.buffers[arg.name].data.ptr)
        return base + arg.offset

    def _resolve(self) -> list[Launch]:
        internal = str(internal_cubin(self.arch))
        launches = []
        for op in self.plan.ops:
            env = self.env(op)
            args = pack(op.name, [self.ptr(v) if isinstance(v, Buf | Null) else v for v in op.args.values()])
            specs = [(internal, INTERNAL_LAUNCHES[op.name])] if op.internal else \
                [(str(self.kernels[op.name].cubin), spec) for spec in self.kernels[op.name].launches]
            for cubin, spec in specs:
                prepared = prepare(function(cubin, spec.kernel), *geometry(spec, env), args, self.pdl and spec.pdl)
                launches.append(Launch(op, spec.kernel, prepared))
        return launches

    # -- running ----------------------------------------------------------------------------------
    def _enqueue(self) -> None:
        stream = self.stream.ptr
        for item in self.launches:
            item.prepared(stream)

    def step_eager(self) -> None:
        """One decode step by ordinary launches (asynchronous; for comparison with the graph)."""
        with self.stream:
            self._enqueue()

    def capture(self) -> None:
        with self.stream:
            self.stream.begin_capture()
            try:
                self._enqueue()
            finally:
                self.graph = self.stream.end_capture()

    def replay(self) -> None:
        if self.graph is None:
            self.capture()
        self.graph.launch(self.stream)

    def set_tokens(self, tokens: Sequence[int], start: int = 0) -> None:
        """Load the teacher-forced sequence and make the next step decode position ``start``."""
        ids = np.asarray(tokens, dtype=np.int32)
        n_vocab = self.plan.config.n_vocab
        if ids.ndim != 1 or len(ids) > self.plan.n_ctx:
            raise ValueError(f"expected at most {self.plan.n_ctx} tokens in a 1-D sequence, got shape {ids.shape}")
        if len(ids) and (ids.min() < 0 or ids.max() >= n_vocab):
            raise ValueError(f"token ids must lie in [0, {n_vocab})")
        with self.stream:
            self.buffers["tokens"][: len(ids)].set(ids, stream=self.stream)
            self.buffers["counter"].fill(start)
        self.stream.synchronize()

    def teacher_forced(self, tokens: Sequence[int], eager: bool = False) -> np.ndarray:
        """Logits [len(tokens), n_vocab] (float32): position t's row is the model's prediction after
        reading tokens[: t + 1], decoded one token per graph replay."""
        out = np.empty((len(tokens), self.plan.config.n_vocab), dtype=np.float32)
        for start, block in self.teacher_forced_blocks(tokens, eager):
            out[start : start + len(block)] = block.get()
        return out

    def teacher_forced_blocks(self, tokens: Sequence[int], eager: bool = False
                              ) -> Iterator[tuple[int, cupy.ndarray]]:
        """``teacher_forced``, left on the device: (first position, logits [m, n_vocab]) per filling of
        the history buffer. A block is a view of that buffer, valid until the next one is requested."""
        self.set_tokens(tokens)
        n, vocab, cap = len(tokens), self.plan.config.n_vocab, self.plan.history
        if not eager and self.graph is None:
            self.capture()
        for start in range(0, n, cap):
            m = min(cap, n - start)
            for _ in range(m):
                self.step_eager() if eager else self.graph.launch(self.stream)
            self.stream.synchronize()
            yield start, self.buffers["history"][: m * vocab].reshape(m, vocab)

    def kv_views(self) -> dict[str, cupy.ndarray]:
        """Each KV cache buffer as [n_head_kv, n_ctx, head_dim] (head-major, the ABI's layout)."""
        views = {}
        for op in self.plan.ops:
            if op.name.startswith("attn_decode"):
                for arg in ("k_cache", "v_cache"):
                    name = op.args[arg].name  # type: ignore[union-attr]
                    views[name] = self.buffers[name].reshape(op.args["n_head_kv"], self.plan.n_ctx, op.env["head_dim"])
        return views

    def fill_kv(self, seed: int = 0) -> None:
        """Random unit-scale fp16 keys and values everywhere, for timing at a context length without
        decoding it first (attention's cost does not depend on the values)."""
        rng = cupy.random.default_rng(seed)
        with self.stream:
            for name, array in self.buffers.items():
                if name.startswith(("k_cache.", "v_cache.")):
                    array[...] = rng.standard_normal(array.size, dtype=cupy.float32).astype(cupy.float16)
        self.stream.synchronize()


def teacher_forced_job(model_path: str, tokens: list[int], n_ctx: int,
                       overrides: Mapping[str, SlotKernel] | None = None) -> np.ndarray:
    """Open, upload, decode: the unit of work a contained worker runs (see ``worker.py``)."""
    from reference_runtime.gguf_model import GGUFModel

    with GGUFModel.open(model_path) as model:
        runtime = DecodeRuntime(DeviceModel(model), n_ctx, overrides, history=min(256, max(len(tokens), 1)))
        return runtime.teacher_forced(tokens)
