"""Which kernel serves each slot: cubins, entry names and launch geometry, baseline or candidate.

A :class:`SlotKernel` is everything the runtime needs to launch one slot: the cubin, the ordered
launches (entry name, grid, block, dynamic shared memory, each a function of the slot's shape
symbols) and the scratch it needs. Geometry is data evaluated by the runtime at capture time, never
candidate host code. Geometry functions must pickle (the fault-containing worker receives them), so
they are module-level functions or :class:`Const` / expression objects, never lambdas.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from reference_runtime import slots as catalogue
from reference_runtime.runtime.abi import cuda_dir
from reference_runtime.runtime.compile import compile_cubin
from reference_runtime.runtime.plan import WEIGHT_SUFFIX

Env = Mapping[str, int]
Dims = Callable[[Env], tuple[int, ...]]
Size = Callable[[Env], int]


@dataclass(frozen=True)
class Const:
    """Geometry that does not depend on the shapes."""

    value: tuple[int, ...] | int

    def __call__(self, env: Env) -> tuple[int, ...] | int:
        return self.value


@dataclass(frozen=True)
class LaunchSpec:
    """One kernel launch of a slot. ``pdl``: the kernel waits for the previous launch on the device
    (``EVALBOT_GRID_WAIT``, see the header), so it may be launched programmatically dependent."""

    kernel: str
    grid: Dims
    block: Dims
    shared_bytes: Size = Const(0)  # type: ignore[assignment]
    pdl: bool = False


@dataclass(frozen=True)
class SlotKernel:
    cubin: Path
    launches: tuple[LaunchSpec, ...]
    scratch_bytes: Size = Const(0)  # type: ignore[assignment]
    origin: str = "baseline"  # for reports: "baseline", "candidate", "frontier", ...


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


# -- baseline geometry (kernels/*.cu: 8 rows per 128-thread GEMV block, 128-thread attention partials) --
def gemv_grid(env: Env) -> tuple[int, ...]:
    return (_ceil(env["n_rows"], 8),)


def vocab_grid(env: Env) -> tuple[int, ...]:
    return (_ceil(env["n_vocab"], 8),)


def norm_block(env: Env) -> tuple[int, ...]:
    return (min(1024, 32 * _ceil(max(env["n_embd"] // 4, 1), 32)),)


def qk_rope_grid(env: Env) -> tuple[int, ...]:
    return (env["n_head"] + 2 * env["n_head_kv"],)


def kv_grid(env: Env) -> tuple[int, ...]:
    return (env["n_head_kv"],)


ATTN_MIN_CHUNK = 32  # EB_ATTN_MIN_CHUNK in attention.cu
ATTN_MAX_SPLIT = 1024  # EB_ATTN_MAX_SPLIT


def attn_splits(env: Env) -> int:
    """One wave at full length: the partial kernel's ~170 registers per thread leave room for two
    128-thread blocks per SM. Never chunks shorter than the kernel's minimum."""
    by_sm = _ceil(2 * env["n_sm"], env["n_head_kv"])
    return max(1, min(by_sm, _ceil(env["n_ctx"], ATTN_MIN_CHUNK), ATTN_MAX_SPLIT))


def attn_partial_grid(env: Env) -> tuple[int, ...]:
    return (env["n_head_kv"], attn_splits(env))


def attn_combine_grid(env: Env) -> tuple[int, ...]:
    return (env["n_head"],)


def attn_scratch(env: Env) -> int:
    s, h, d = attn_splits(env), env["n_head"], env["head_dim"]
    return 256 + _ceil(h * s * 2 * 4, 16) * 16 + h * s * d * 4


def glu_grid(env: Env) -> tuple[int, ...]:
    return (_ceil(env["n_ff"] // 4, 256),)


def moe_gate_up_grid(env: Env) -> tuple[int, ...]:
    return (_ceil(env["n_ff_exp"], 8), env["n_expert_used"])


def moe_down_grid(env: Env) -> tuple[int, ...]:
    return (env["n_embd"],)


def moe_scratch(env: Env) -> int:
    return env["n_expert_used"] * env["n_ff_exp"] * 4


def record_grid(env: Env) -> tuple[int, ...]:
    return (min(_ceil(env["n_vocab"], 256), 1024),)


def kernel_source(name: str) -> Path:
    return cuda_dir() / "kernels" / f"{name}.cu"


BASELINE_SOURCES = ("gemv", "embed", "norm", "rope", "attention", "glu", "moe")

_ONE = Const((1,))
_T128 = Const((128,))
_T256 = Const((256,))


def _baseline_launches() -> dict[str, tuple[str, tuple[LaunchSpec, ...], Size]]:
    """slot -> (source, launches, scratch) of every baseline slot."""
    table: dict[str, tuple[str, tuple[LaunchSpec, ...], Size]] = {}
    none = Const(0)
    for suffix in WEIGHT_SUFFIX.values():
        table[f"gemv_{suffix}"] = ("gemv", (LaunchSpec(f"gemv_{suffix}", gemv_grid, _T128, pdl=True),), none)
        table[f"lm_head_{suffix}"] = ("gemv", (LaunchSpec(f"lm_head_{suffix}", vocab_grid, _T128, pdl=True),), none)
        table[f"embed_{suffix}"] = ("embed", (LaunchSpec(f"embed_{suffix}", _ONE, _T256, pdl=True),), none)
    for name in ("rmsnorm", "rmsnorm_residual", "rmsnorm_post_add"):
        table[name] = ("norm", (LaunchSpec(name, _ONE, norm_block, pdl=True),), none)
    table["qk_norm_rope"] = ("rope", (LaunchSpec("qk_norm_rope", qk_rope_grid, _T128, pdl=True),), none)
    table["kv_append"] = ("rope", (LaunchSpec("kv_append", kv_grid, _T128, pdl=True),), none)
    for slot in catalogue.SLOTS:
        if slot.startswith("attn_decode"):
            launches = (LaunchSpec(f"{slot}_partial", attn_partial_grid, _T128, pdl=True),
                        LaunchSpec(f"{slot}_combine", attn_combine_grid, Const((1024,)), pdl=True))
            table[slot] = ("attention", launches, attn_scratch)
    for kind in ("swiglu", "geglu"):
        table[f"glu_{kind}"] = ("glu", (LaunchSpec(f"glu_{kind}", glu_grid, _T256, pdl=True),), none)
        table[f"moe_ffn_{kind}"] = ("moe", (LaunchSpec(f"moe_ffn_{kind}_gate_up", moe_gate_up_grid, _T128, pdl=True),
                                            LaunchSpec("moe_ffn_down", moe_down_grid, _T128, pdl=True)), moe_scratch)
    table["moe_router_topk"] = ("moe", (LaunchSpec("moe_router_topk", _ONE, Const((32,)), pdl=True),), none)
    return table


def copy_grid(env: Env) -> tuple[int, ...]:
    return (min(_ceil(env["n_elements"], 256), 1024),)


INTERNAL_LAUNCHES: Mapping[str, LaunchSpec] = {
    "rt_prologue": LaunchSpec("rt_prologue", _ONE, _ONE, pdl=True),
    "rt_record": LaunchSpec("rt_record", record_grid, _T256, pdl=True),
    "rt_copy": LaunchSpec("rt_copy", copy_grid, _T256, pdl=True),
}


def baseline_slot_names() -> frozenset[str]:
    return frozenset(_baseline_launches())


def baseline_kernels(arch: str, cache_dir: Path | None = None) -> dict[str, SlotKernel]:
    """Every slot's baseline kernel, compiled for ``arch`` (e.g. ``sm_90``)."""
    cubins = {src: compile_cubin(kernel_source(src), arch, cache_dir) for src in BASELINE_SOURCES}
    return {slot: SlotKernel(cubins[src], launches, scratch)
            for slot, (src, launches, scratch) in _baseline_launches().items()}


def internal_cubin(arch: str, cache_dir: Path | None = None) -> Path:
    return compile_cubin(kernel_source("runtime"), arch, cache_dir)
