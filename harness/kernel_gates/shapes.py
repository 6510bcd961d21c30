"""Slot families, tolerances, and the fixed shapes the basket models call each slot with."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from reference_runtime import slots as catalogue
from reference_runtime.runtime.plan import WEIGHT_SUFFIX, Null, Op

QT = gguf.GGMLQuantizationType

# Slot families with a tolerance in the policy file ([kernel_gates]); "exact" slots have none.
TOLERANCE_FAMILIES: tuple[str, ...] = ("gemv", "norm", "rope", "attention", "glu", "router", "moe")
EXACT = "exact"
FUZZ = "-"  # the origin (GateResult.model) of a fuzzed shape

# The default n_ctx of the basket plans whose shapes the gates use: the attention and kv_append slots
# see a cache of this capacity (positions are drawn across all of it). An evaluation passes its
# policy's longest scored context instead (Policy.gate_n_ctx: 32k on the production basket).
GATE_N_CTX = 4096

# Fuzzed f32 weight rows are multiples of 16 elements, not the header's 4: the baseline f32 GEMV and
# embedding kernels work in 16-element parts (common.h, EbF32), and every real model's widths are
# multiples of 64 anyway.
F32_COLS_GRANULE = 16

# Host-side bounds on fuzzed sizes: the float64 reference and the input upload stay well under a
# second per case.
_MAX_WEIGHT_ELEMENTS = 1 << 22
_MAX_KV_ELEMENTS = 1 << 23
_MAX_RUNS_PER_CASE = 6
_GUARD_BYTES = 256  # keeps the body 256-byte aligned, like a fresh allocation
_CANARY = 0x5A  # finite as f32 (1.5e16), fp16 (203.25) and int32, so a masked over-read stays finite

_QTYPE: Mapping[str, QT] = {suffix: qt for qt, suffix in WEIGHT_SUFFIX.items()}


class KernelGateError(RuntimeError):
    """The gates could not be run (bad input to this module, or a bug in it): not a verdict."""


class GateFault(RuntimeError):
    """A candidate kernel failed to run (a CUDA error, usually a dead context) while gated."""


# -- slots, families, tolerances -------------------------------------------------------------------
def family(slot: str) -> str:
    """The slot's tolerance family, or :data:`EXACT`."""
    if slot not in catalogue.SLOTS:
        raise KernelGateError(f"unknown slot {slot!r}")
    if slot.startswith("embed_") or slot == "kv_append":
        return EXACT
    for prefix, fam in (("gemv_", "gemv"), ("lm_head_", "gemv"), ("rmsnorm", "norm"), ("qk_norm_rope", "rope"),
                        ("attn_decode", "attention"), ("glu_", "glu"), ("moe_router_topk", "router"),
                        ("moe_ffn_", "moe")):
        if slot.startswith(prefix):
            return fam
    raise KernelGateError(f"slot {slot!r} has no kernel gate")  # a new catalogue slot needs one


def gate_limit(slot: str, tolerances: Mapping[str, float]) -> float:
    fam = family(slot)
    if fam == EXACT:
        return 0.0
    if fam not in tolerances:
        raise KernelGateError(f"no kernel-gate tolerance for family {fam!r} (slot {slot})")
    return float(tolerances[fam])


def _weight_suffix(slot: str) -> str:
    for prefix in ("gemv_", "lm_head_", "embed_"):
        if slot.startswith(prefix):
            return slot.removeprefix(prefix)
    raise KernelGateError(f"{slot} has no weight type")


def _block(suffix: str) -> tuple[int, int]:
    return catalogue.WEIGHT_TYPES[suffix]


def _granule(suffix: str) -> int:
    block = _block(suffix)[0]
    return block if block > 1 else F32_COLS_GRANULE


# -- fixed shapes from the basket -----------------------------------------------------------------
@dataclass(frozen=True)
class FixedShape:
    """One way a basket model calls a slot: its shape symbols, its scalar arguments (eps, RoPE base,
    softcap, expert weight types and strides, ...) and which pointer arguments it passes as NULL.
    ``points`` optionally pins the positions (or embedding tokens) to check; else they are drawn."""

    model: str
    env: tuple[tuple[str, int], ...]
    scalars: tuple[tuple[str, int | float], ...] = ()
    nulls: tuple[str, ...] = ()
    points: tuple[int, ...] = ()

    @classmethod
    def make(cls, model: str, env: Mapping[str, int], scalars: Mapping[str, int | float] | None = None,
             nulls: Iterable[str] = (), points: Iterable[int] = ()) -> FixedShape:
        if model == FUZZ:
            raise KernelGateError(f"{FUZZ!r} names fuzzed shapes; a fixed shape needs its model's name")
        plain = {k: int(v) if isinstance(v, int | np.integer) else float(v) for k, v in (scalars or {}).items()}
        return cls(model, tuple(sorted((k, int(v)) for k, v in env.items())), tuple(sorted(plain.items())),
                   tuple(sorted(nulls)), tuple(int(p) for p in points))

    def key(self) -> tuple[Any, ...]:
        """What makes two shapes the same check (the model they came from does not)."""
        return self.env, self.scalars, self.nulls, self.points


def shapes_from_ops(model: str, ops: Iterable[Op], slots: Collection[str] | None = None
                    ) -> dict[str, list[FixedShape]]:
    """The distinct (env, scalars, NULL pointers) per slot among a plan's ops."""
    out: dict[str, list[FixedShape]] = {}
    seen: set[tuple[Any, ...]] = set()
    for op in ops:
        if op.internal or (slots is not None and op.name not in slots):
            continue
        scalars = {k: v for k, v in op.args.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        nulls = [k for k, v in op.args.items() if isinstance(v, Null)]
        shape = FixedShape.make(model, op.env, scalars, nulls)
        if (op.name, shape.key()) not in seen:
            seen.add((op.name, shape.key()))
            out.setdefault(op.name, []).append(shape)
    return out


def merge_shapes(*tables: Mapping[str, Sequence[FixedShape]]) -> dict[str, list[FixedShape]]:
    """Union per slot, first occurrence kept (a shape two models share is credited to the first)."""
    out: dict[str, list[FixedShape]] = {}
    for table in tables:
        for slot, shapes in table.items():
            have = out.setdefault(slot, [])
            keys = {s.key() for s in have}
            for shape in shapes:
                if shape.key() not in keys:
                    keys.add(shape.key())
                    have.append(shape)
    return out


def _model_key(path: Path) -> str:
    from reference_runtime import basket

    for key in basket.SPECS:
        if path.name == basket.model_path(path.parent, key).name:
            return key
    return path.name.removesuffix(".gguf")


def basket_envs(models: Sequence[Path] | Mapping[str, Path], slots: Collection[str] | None = None,
                n_ctx: int = GATE_N_CTX) -> dict[str, list[FixedShape]]:
    """Fixed shapes of ``slots`` (all when None) from the decode plans of the basket models, given
    as paths (named by their basket key or file name) or as key -> path."""
    from reference_runtime.gguf_model import GGUFModel
    from reference_runtime.runtime.plan import build_plan

    named = dict(models) if isinstance(models, Mapping) else {_model_key(Path(p)): Path(p) for p in models}
    tables = []
    for key, path in named.items():
        with GGUFModel.open(path) as model:
            tables.append(shapes_from_ops(key, build_plan(model, n_ctx, history=1).ops, slots))
    return merge_shapes(*tables)


