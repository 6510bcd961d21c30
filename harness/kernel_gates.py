"""Kernel gates: every slot a candidate overrides, checked against its float64 oracle on the basket's
shapes plus shapes fuzzed from a validator-private holdout seed.

What one gate does
------------------
For an overridden slot, :func:`cases` lists what to check:

* the **basket shapes**: the distinct shape environments (and per-layer scalars: RoPE bases, softcap,
  expert weight types, ...) with which the basket models' decode plans call the slot
  (:func:`basket_envs` / :func:`shapes_from_ops`);
* ``fuzz_cases`` **fuzzed shapes** drawn deterministically from the holdout seed, within what the
  slot's ABI allows: whole quantisation blocks, odd row counts, head_dim from the slot's name, GQA
  groups that do not divide the baseline's tiles, positions straddling the sliding-window edge and
  the last cache slot, RoPE positions up to 32k, router ties, padded expert strides, ...

Each case expands to one or more runs (several positions over one KV cache, several tokens of one
table), whose inputs are random but fixed by (seed, slot, case). A run uploads every pointer
argument into its own device buffer between 256-byte guard bands of a canary byte, with output-only
buffers poisoned (NaN; ids -1), launches the slot exactly as the runtime does
(:func:`reference_runtime.runtime.launch.run_slot`: same argument packing, poisoned scratch), and
checks, in this order:

1. the guard bands are intact (no write outside any buffer) and ``const`` inputs are unchanged;
2. the outputs against :mod:`reference_runtime.runtime.slot_math` in float64:

   * ``embed_*`` (dequantisation) and ``kv_append`` (an fp16 store, round to nearest): **exact**;
     the gate's value is the number of differing elements and its limit 0;
   * ``moe_router_topk``: the chosen ids exactly (as a set: their order is free), the weights
     matched by id;
   * every other slot: the normwise relative error ``||got - want|| / ||want||``, per head for
     attention and qk_norm_rope, within the policy's tolerance for the slot's family
     (:data:`TOLERANCE_FAMILIES`). A non-finite output element (unwritten, so still NaN) fails.

One :class:`~harness.measurements.GateResult` per slot, named ``kernel:<slot>``: the worst run's
value, the limit, the model the worst shape came from (``-`` for a fuzzed shape), and a detail
naming the failing shape. A passing gate names only basket shapes, never a fuzzed one.

:func:`run_kernel_gates` does the GPU work in a spawned worker (:func:`run_contained`), so a
candidate kernel that faults (an illegal address kills the CUDA context) or hangs is a failed gate
with the reason in its detail, never a crash of the caller.

The holdout seed
----------------
The fuzzed shapes and every input come from the seed; knowing it would let a kernel special-case
exactly the shapes it is checked on. It is the caller's: ``evalbot`` reads it from the environment
variable that ``[basket] holdout_seed_env`` names (default ``EVALBOT_HOLDOUT_SEED``; an integer,
``0x`` allowed), else from a random seed it creates once in the validator's data directory (mode
0600) — see ``evalbot.evaluator.holdout_seed``. A validator who wants its verdicts reproducible on
another box sets the variable to the same value there. This module takes the integer and never
prints, logs or returns it: case inputs are keyed by SHA-256 digests of (seed, slot, case), and
details name shapes, not seeds.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from harness.measurements import GateResult
from reference_runtime import quants
from reference_runtime import slots as catalogue
from reference_runtime.runtime import slot_math
from reference_runtime.runtime.abi import slot_abis
from reference_runtime.runtime.kernels import SlotKernel
from reference_runtime.runtime.plan import WEIGHT_SUFFIX, Null, Op
from reference_runtime.runtime.worker import KernelFault, KernelHang, WorkerError, run_contained

QT = gguf.GGMLQuantizationType

# Slot families with a tolerance in the policy file ([kernel_gates]); "exact" slots have none.
TOLERANCE_FAMILIES: tuple[str, ...] = ("gemv", "norm", "rope", "attention", "glu", "router", "moe")
EXACT = "exact"
FUZZ = "-"  # the origin (GateResult.model) of a fuzzed shape

# The n_ctx of the basket plans whose shapes the gates use: the attention and kv_append slots see a
# cache of this capacity (positions are drawn across all of it).
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


# -- cases ----------------------------------------------------------------------------------------
def _digest(*parts: object) -> int:
    """A 128-bit key from the parts (one-way: the seed cannot be read back from it)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode() + b"\0")
    return int.from_bytes(h.digest()[:16], "little")


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(_digest(*parts))


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise KernelGateError("the holdout seed must be an integer")


@dataclass(frozen=True)
class Case:
    """One shape of one slot: its symbols, scalar arguments and variants (``points``: positions or
    embedding tokens). ``input_seed`` keys the random inputs; it is derived one-way from the
    holdout seed, and :meth:`describe` never shows it."""

    slot: str
    index: int
    origin: str  # the basket model the shape came from, or FUZZ
    env: dict[str, int]
    params: dict[str, Any] = field(default_factory=dict)
    input_seed: int = 0

    @property
    def fuzzed(self) -> bool:
        return self.origin == FUZZ

    def describe(self, run: str = "") -> str:
        order = catalogue.SLOTS[self.slot].symbols if self.slot in catalogue.SLOTS else ()
        shown: dict[str, Any] = {k: self.env[k] for k in order if k in self.env}
        shown |= {k: v for k, v in self.env.items() if k not in shown}
        for k, v in self.params.items():
            if k == "points":
                continue
            if k.startswith("type_"):
                v = QT(v).name
            elif isinstance(v, float):
                v = f"{v:.6g}"
            shown[k] = v
        text = ", ".join(f"{k}={v}" for k, v in shown.items())
        return f"{text}, {run}" if run else text


def _pick(r: np.random.Generator, options: Sequence[Any]) -> Any:
    value = options[int(r.integers(len(options)))]
    return value.item() if isinstance(value, np.generic) else value


def _edge_or(r: np.random.Generator, edges: Sequence[int], lo: int, hi: int) -> int:
    """An edge value in [lo, hi] three times in ten, else uniform in [lo, hi]."""
    hi = max(lo, hi)
    ok = [e for e in edges if lo <= e <= hi]
    if ok and r.random() < 0.3:
        return int(_pick(r, ok))
    return int(r.integers(lo, hi + 1))


def _f32(x: float) -> float:
    return float(np.float32(x))


def _head_dims(r: np.random.Generator) -> int:
    return int(_pick(r, [64, 128, 256, 512, 4 * int(r.integers(1, 129))]))


def _draw_env(slot: str, r: np.random.Generator) -> dict[str, int]:
    """A fuzzed shape environment within the slot's ABI."""
    if slot.startswith(("gemv_", "lm_head_", "embed_")):
        g = _granule(_weight_suffix(slot))
        cols = g * _edge_or(r, [1, 2, 3], 1, max(1, 4096 // g))
        if slot.startswith("gemv_"):
            return {"n_rows": _edge_or(r, [1, 7, 8, 9, 127, 129], 1, min(3000, _MAX_WEIGHT_ELEMENTS // cols)),
                    "n_cols": cols}
        if slot.startswith("lm_head_"):
            return {"n_vocab": _edge_or(r, [1, 8, 1023, 1025], 1, min(8192, _MAX_WEIGHT_ELEMENTS // cols)),
                    "n_embd": cols}
        return {"n_vocab": _edge_or(r, [1, 2, 255], 1, min(4096, _MAX_WEIGHT_ELEMENTS // cols)), "n_embd": cols}
    if slot.startswith("rmsnorm"):
        return {"n_embd": 4 * _edge_or(r, [1, 2, 8, 255, 256, 257, 1024, 2048], 1, 2048)}
    if slot == "qk_norm_rope":
        hd = _head_dims(r)
        n_rot = int(_pick(r, [hd, hd // 2, max(2, 2 * (hd // 8)), 2 * int(r.integers(1, hd // 2 + 1))]))
        n_kv = int(r.integers(1, 9))
        return {"n_head": n_kv * int(_pick(r, [1, 2, 3, 4, 6, 8])), "n_head_kv": n_kv, "head_dim": hd, "n_rot": n_rot}
    if slot == "kv_append":
        hd, n_kv = _head_dims(r), int(r.integers(1, 9))
        return {"n_head_kv": n_kv, "head_dim": hd,
                "n_ctx": _edge_or(r, [1, 2, 33], 1, min(8192, _MAX_KV_ELEMENTS // (n_kv * hd)))}
    if slot.startswith("attn_decode"):
        hd = catalogue.SLOTS[slot].fixed["head_dim"]
        n_kv = int(r.integers(1, 9))
        env = {"n_head": n_kv * int(_pick(r, [1, 2, 3, 4, 5, 6, 8, 16])), "n_head_kv": n_kv, "head_dim": hd,
               "n_ctx": _edge_or(r, [1, 31, 32, 33, 4096], 1, min(8192, _MAX_KV_ELEMENTS // (n_kv * hd)))}
        if "n_swa" in catalogue.SLOTS[slot].symbols:
            env["n_swa"] = _edge_or(r, [1, 2, 32, 33, 128, 512, 1024], 1, 2048)
        return env
    if slot.startswith("glu_"):
        return {"n_ff": 4 * _edge_or(r, [1, 2, 256, 257, 513, 2048], 1, 4096)}
    if slot == "moe_router_topk":
        n_expert = _edge_or(r, [1, 2, 8, 32, 64, 128, 1024], 1, 1024)
        return {"n_expert": n_expert, "n_expert_used": _edge_or(r, [1, 2, 8], 1, min(16, n_expert))}
    if slot.startswith("moe_ffn_"):
        k = _edge_or(r, [1, 8], 1, 8)
        return {"n_embd": 0, "n_ff_exp": 0, "n_expert_used": k, "n_expert": _edge_or(r, [k], k, max(k, 16))}
    raise KernelGateError(f"no fuzzing rule for slot {slot!r}")


def _positions(slot: str, env: Mapping[str, int], r: np.random.Generator) -> list[int]:
    """Positions to check, the interesting ones first: the ends of the cache, the split-K chunk
    edges, the sliding-window edge from both sides."""
    n_ctx = env.get("n_ctx", 32768)
    if slot == "qk_norm_rope":
        cands = [_pick(r, [0, 1, 4095, 4096, 16383, 32767]), int(r.integers(0, 32768))]
    elif slot == "kv_append":
        cands = [0, n_ctx - 1, int(r.integers(0, n_ctx)), n_ctx]  # n_ctx: past the end, nothing is written
        return sorted(set(cands))
    else:
        cands = []
        swa = env.get("n_swa", 0)
        if swa:
            cands += [swa - 1, swa, swa + 1, swa - 2, swa + int(r.integers(2, 2 * swa + 2))]
        cands += [n_ctx - 1, 0, int(_pick(r, [31, 32, 33, 63, 64, 65])), int(r.integers(0, n_ctx))]
    out: list[int] = []
    for p in cands:
        p = int(p)
        if 0 <= p < n_ctx and p not in out:
            out.append(p)
    return sorted(out[:_MAX_RUNS_PER_CASE])


def _draw_params(slot: str, env: dict[str, int], r: np.random.Generator) -> dict[str, Any]:
    """Scalar arguments and variants of a case (basket shapes override them with their own)."""
    eps = _f32(_pick(r, [1e-6, 1e-5]))
    if slot.startswith("gemv_"):
        return {}
    if slot.startswith("lm_head_"):
        return {"softcap": _f32(_pick(r, [0.0, 30.0, float(r.uniform(5, 50))]))}
    if slot.startswith("embed_"):
        n_vocab = env["n_vocab"]
        tokens = sorted({0, n_vocab - 1, int(r.integers(0, n_vocab))})
        scale = _f32(_pick(r, [1.0, math.sqrt(env["n_embd"]), float(r.uniform(0.1, 64))]))
        return {"scale": scale, "extreme_scales": bool(r.random() < 0.5), "points": tokens}
    if slot == "rmsnorm":
        return {"eps": eps, "alias": bool(r.random() < 0.5)}
    if slot == "rmsnorm_residual":
        return {"eps": eps}
    if slot == "rmsnorm_post_add":
        return {"eps": eps, "out_scale": _f32(_pick(r, [1.0, float(r.uniform(0.25, 2))]))}
    if slot == "qk_norm_rope":
        return {"freq_base": _f32(_pick(r, [1e4, 1e6, float(10 ** r.uniform(3, 7))])),
                "freq_scale": _f32(_pick(r, [1.0, 0.5, 0.25, float(r.uniform(0.1, 1))])), "eps": eps,
                "with_v": bool(r.random() < 0.5), "with_freq_factors": bool(r.random() < 0.5),
                "points": _positions(slot, env, r)}
    if slot == "kv_append":
        return {"points": _positions(slot, env, r)}
    if slot.startswith("attn_decode"):
        hd = env["head_dim"]
        return {"scale": _f32(_pick(r, [1.0, float(r.uniform(0.5, 1.5))]) / math.sqrt(hd)),
                "points": _positions(slot, env, r)}
    if slot.startswith("glu_"):
        return {}
    if slot == "moe_router_topk":
        return {"weights_scale": _f32(_pick(r, [0.0, 1.0, 2.5, float(r.uniform(0.5, 3))])),
                "with_expert_scale": bool(r.random() < 0.5)}
    if slot.startswith("moe_ffn_"):
        types = list(catalogue.WEIGHT_TYPES)
        if env["n_embd"]:  # a given shape: only the types whose blocks tile it (the basket's own override these)
            across = [t for t in types if env["n_embd"] % max(_block(t)[0], 4) == 0]
            down = [t for t in types if env["n_ff_exp"] % max(_block(t)[0], 4) == 0]
        else:
            across = down = types
        tg = _pick(r, across)
        tu = tg if r.random() < 0.7 else _pick(r, across)
        td = _pick(r, down)
        params: dict[str, Any] = {f"type_{w}": int(_QTYPE[t]) for w, t in (("gate", tg), ("up", tu), ("down", td))}
        if env["n_embd"] == 0:  # fuzzed: widths follow from the types
            ge = math.lcm(_granule(tg), _granule(tu), 4)
            gf = math.lcm(_granule(td), 4)
            env["n_embd"] = ge * _edge_or(r, [1, 2], 1, max(1, 2048 // ge))
            env["n_ff_exp"] = gf * _edge_or(r, [1, 2], 1, max(1, 1024 // gf))
        for w, t in (("gate", tg), ("up", tu), ("down", td)):
            # Padded expert strides, in whole blocks (f32: 16 bytes, the pointer alignment), so every
            # expert starts as aligned as the header promises.
            unit = _block(t)[1] if _block(t)[0] > 1 else 16
            pad = int(_pick(r, [0, 0, 1, 3])) * unit
            params[f"stride_{w}"] = _matrix_bytes(slot, w, env, int(_QTYPE[t])) + pad
        return params
    raise KernelGateError(f"no parameter rule for slot {slot!r}")


def _matrix_bytes(slot: str, which: str, env: Mapping[str, int], type_id: int) -> int:
    shape = (env["n_embd"], env["n_ff_exp"]) if which == "down" else (env["n_ff_exp"], env["n_embd"])
    return quants.n_bytes_for(QT(type_id), shape)


_NULLABLE = {"v": "with_v", "freq_factors": "with_freq_factors", "expert_scale": "with_expert_scale"}


def _fixed_params(slot: str, shape: FixedShape, drawn: dict[str, Any]) -> dict[str, Any]:
    """The drawn parameters with the shape's own: its scalar arguments, which pointers are NULL, the
    plain variant (the plans never alias rmsnorm's y and x, and real tables have sane scales), its
    points. A shape's scalars may also name a variant (``alias``, ``extreme_scales``)."""
    params = dict(drawn)
    for pointer, flag in _NULLABLE.items():
        if flag in params:
            params[flag] = pointer not in shape.nulls
    for variant in ("alias", "extreme_scales"):
        if variant in params:
            params[variant] = False
    scalars = dict(shape.scalars)
    for name in drawn:
        if name in scalars:
            value = scalars[name]
            if name in ("alias", "extreme_scales"):
                value = bool(value)
            elif isinstance(value, float):
                value = _f32(value)  # what the kernel receives
            params[name] = value
    env = dict(shape.env)
    for w in ("gate", "up", "down"):  # a type given without its stride: experts packed back to back
        if f"type_{w}" in scalars and f"stride_{w}" not in scalars:
            params[f"stride_{w}"] = _matrix_bytes(slot, w, env, int(scalars[f"type_{w}"]))
    if shape.points:
        params["points"] = list(shape.points)
    return params


def check_case(case: Case) -> None:
    """Raise :class:`KernelGateError` unless the case is a legal call of its slot under the ABI."""
    slot, env, p = case.slot, case.env, case.params
    spec = catalogue.SLOTS.get(slot)

    def bad(why: str) -> KernelGateError:
        return KernelGateError(f"{slot} case {case.index} ({case.describe()}): {why}")

    if spec is None:
        raise bad("unknown slot")
    if set(env) != set(spec.symbols):
        raise bad(f"symbols {sorted(env)} are not the slot's {sorted(spec.symbols)}")
    if any(not isinstance(v, int) or v < 1 for v in env.values()):
        raise bad("every shape symbol must be a positive integer")
    for k, v in spec.fixed.items():
        if env[k] != v:
            raise bad(f"{k} must be {v}")
    for k in ("n_embd", "n_ff", "n_ff_exp", "head_dim"):
        if k in env and env[k] % 4:
            raise bad(f"{k} must be a multiple of 4")
    if slot.startswith(("gemv_", "lm_head_", "embed_")):
        cols = env["n_cols"] if slot.startswith("gemv_") else env["n_embd"]
        block = max(_block(_weight_suffix(slot))[0], 4)
        if cols % block:
            raise bad(f"rows must be whole blocks of {block} elements")
    if "n_head" in env and env["n_head"] % env["n_head_kv"]:
        raise bad("n_head must be a multiple of n_head_kv")
    if slot == "qk_norm_rope" and (env["n_rot"] % 2 or env["n_rot"] > env["head_dim"]):
        raise bad("n_rot must be even and at most head_dim")
    points = p.get("points", [])
    if slot.startswith("attn_decode") and (not points or any(not 0 <= x < env["n_ctx"] for x in points)):
        raise bad("positions must lie in [0, n_ctx)")
    if slot.startswith("embed_") and (not points or any(not 0 <= x < env["n_vocab"] for x in points)):
        raise bad("tokens must lie in [0, n_vocab)")
    if slot in ("qk_norm_rope", "kv_append") and (not points or min(points) < 0):
        raise bad("positions must be non-negative")
    if slot == "moe_router_topk" and not (env["n_expert"] <= 1024 and env["n_expert_used"] <= env["n_expert"]):
        raise bad("n_expert <= 1024 and n_expert_used <= n_expert")
    if slot.startswith("moe_ffn_"):
        if env["n_expert_used"] > env["n_expert"]:
            raise bad("n_expert_used > n_expert")
        for w in ("gate", "up", "down"):
            if f"type_{w}" not in p or f"stride_{w}" not in p:
                raise bad(f"type_{w} and stride_{w} are needed")
            try:
                need = _matrix_bytes(slot, w, env, p[f"type_{w}"])
            except (quants.DequantError, ValueError) as exc:
                raise bad(str(exc)) from None
            if p[f"stride_{w}"] < need:
                raise bad(f"stride_{w} {p[f'stride_{w}']} is shorter than one expert's {need} bytes")


def cases(slot: str, fixed: Sequence[FixedShape], seed: int, n_fuzz: int) -> list[Case]:
    """The basket shapes of ``slot`` (``fixed``) and then ``n_fuzz`` shapes fuzzed from ``seed``.
    Deterministic in (slot, fixed, seed, n_fuzz); the fuzzed shapes do not depend on ``fixed``."""
    family(slot)
    _check_seed(seed)
    seed = int(seed)
    if n_fuzz < 0:
        raise KernelGateError("the number of fuzzed cases must not be negative")
    out: list[Case] = []
    seen: set[tuple[Any, ...]] = set()
    for shape in fixed:
        if shape.key() in seen:
            continue
        seen.add(shape.key())
        i = len(out)
        r = _rng(seed, "basket", slot, shape.key())
        env = dict(shape.env)
        params = _fixed_params(slot, shape, _draw_params(slot, env, r))
        out.append(Case(slot, i, shape.model, env, params, _digest(seed, "inputs", slot, "basket", shape.key())))
    for j in range(n_fuzz):
        r = _rng(seed, "fuzz", slot, j)
        env = _draw_env(slot, r)
        params = _draw_params(slot, env, r)
        out.append(Case(slot, len(out), FUZZ, env, params, _digest(seed, "inputs", slot, "fuzz", j)))
    for case in out:
        check_case(case)
    return out


# -- inputs and expected outputs ------------------------------------------------------------------
@dataclass
class Run:
    """One launch: every ABI argument but scratch (NumPy arrays for pointers, None for NULL; numbers
    for scalars), the expected final contents of the output buffers (float64, or the exact bits for
    exact slots), rows to split an output into for per-head errors, and buffers shared by two
    parameters (``alias[y] = x``: y is passed x's buffer)."""

    label: str
    args: dict[str, Any]
    expect: dict[str, np.ndarray]
    rows: dict[str, int] = field(default_factory=dict)
    alias: dict[str, str] = field(default_factory=dict)


_FP16_EXTREMES = np.array([65504.0, -65504.0, 6.1e-5, 6e-8, -6e-8, 1.0, -0.0, 0.333], dtype=np.float16)
_FP16_SCALE_AT = {QT.Q4_K: (0, 2), QT.Q6_K: (208,), QT.Q8_0: (0,), QT.Q5_0: (0,)}


def random_weights(qtype: QT, rows: int, cols: int, rng: np.random.Generator, extreme: bool = False) -> np.ndarray:
    """Raw bytes of a [rows, cols] tensor of ``qtype``: random codes and sub-block scales, every fp16
    block scale a small positive value (random bits would include infinities and NaNs), or with
    ``extreme`` one of the finite fp16 extremes (the largest, subnormals, negatives, -0)."""
    if qtype == QT.F32:
        return rng.standard_normal(rows * cols).astype(np.float32).view(np.uint8)
    block, size = quants.block_layout(qtype)
    n = rows * cols // block
    raw = rng.integers(0, 256, (n, size), dtype=np.uint8)
    for off in _FP16_SCALE_AT[qtype]:
        if extreme:
            scales = _FP16_EXTREMES[rng.integers(0, len(_FP16_EXTREMES), n)]
        else:
            scales = rng.uniform(0.002, 0.02, n).astype(np.float16)
        raw[:, off : off + 2] = scales.view(np.uint8).reshape(n, 2)
    return raw.reshape(-1)


def _vec(r: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    return (r.standard_normal(n) * scale).astype(np.float32)


def _poison(n: int) -> np.ndarray:
    return np.full(n, np.nan, dtype=np.float32)


def _pos(p: int) -> np.ndarray:
    return np.array([p], dtype=np.int32)


def runs(case: Case) -> list[Run]:
    """The case's launches with their inputs (random, fixed by the case) and expected outputs."""
    r = np.random.default_rng(case.input_seed)
    slot, env, p = case.slot, case.env, case.params
    if slot.startswith(("gemv_", "lm_head_")):
        qt = _QTYPE[_weight_suffix(slot)]
        gemv = slot.startswith("gemv_")
        rows, cols = (env["n_rows"], env["n_cols"]) if gemv else (env["n_vocab"], env["n_embd"])
        raw = random_weights(qt, rows, cols, r)
        x = _vec(r, cols)
        w = slot_math.dequant(int(qt), raw, rows, cols)
        if gemv:
            return [Run("", {"w": raw, "x": x, "y": _poison(rows), "n_rows": rows, "n_cols": cols},
                        {"y": slot_math.gemv(w, x)})]
        cap = p["softcap"]
        return [Run("", {"w": raw, "x": x, "logits": _poison(rows), "n_vocab": rows, "n_embd": cols, "softcap": cap},
                    {"logits": slot_math.lm_head(w, x, cap)})]
    if slot.startswith("embed_"):
        qt = _QTYPE[_weight_suffix(slot)]
        n_vocab, n_embd = env["n_vocab"], env["n_embd"]
        raw = random_weights(qt, n_vocab, n_embd, r, extreme=p["extreme_scales"])
        row_bytes = quants.n_bytes_for(qt, (1, n_embd))
        out = []
        for t in p["points"]:
            row = slot_math.dequant(int(qt), raw[t * row_bytes : (t + 1) * row_bytes], 1, n_embd)[0]
            want = row.astype(np.float32) * np.float32(p["scale"])
            out.append(Run(f"token={t}", {"table": raw, "token": _pos(t), "out": _poison(n_embd), "n_embd": n_embd,
                                          "n_vocab": n_vocab, "scale": p["scale"]}, {"out": want}))
        return out
    if slot.startswith("rmsnorm"):
        n, eps = env["n_embd"], p["eps"]
        x = _vec(r, n, float(10 ** r.uniform(-2, 2)))
        w = (1 + 0.3 * r.standard_normal(n)).astype(np.float32)
        if slot == "rmsnorm":
            want = slot_math.rmsnorm(x, w, eps)
            if p["alias"]:
                return [Run("y=x", {"x": x, "w": w, "y": None, "n_embd": n, "eps": eps}, {"x": want},
                            alias={"y": "x"})]
            return [Run("", {"x": x, "w": w, "y": _poison(n), "n_embd": n, "eps": eps}, {"y": want})]
        h = _vec(r, n, float(10 ** r.uniform(-2, 2)))
        if slot == "rmsnorm_residual":
            h_want, y_want = slot_math.rmsnorm_residual(h, x, w, eps)
            return [Run("", {"h": h, "x": x, "w": w, "y": _poison(n), "n_embd": n, "eps": eps},
                        {"h": h_want, "y": y_want})]
        s = p["out_scale"]
        return [Run("", {"h": h, "x": x, "w": w, "n_embd": n, "eps": eps, "out_scale": s},
                    {"h": slot_math.rmsnorm_post_add(h, x, w, eps, s)})]
    if slot == "qk_norm_rope":
        nh, nkv, hd, n_rot = env["n_head"], env["n_head_kv"], env["head_dim"], env["n_rot"]
        sigma = float(10 ** r.uniform(-1, 1))
        q, k, v = _vec(r, nh * hd, sigma), _vec(r, nkv * hd, sigma), _vec(r, nkv * hd, sigma)
        qn, kn = ((1 + 0.3 * r.standard_normal(hd)).astype(np.float32) for _ in range(2))
        ff = None
        if p["with_freq_factors"]:  # Gemma 4 style: some pairs slowed down, some not rotating at all
            ff = np.where(r.random(n_rot // 2) < 0.25, 1e30, r.uniform(1, 8, n_rot // 2)).astype(np.float32)
        vv = v if p["with_v"] else None
        out = []
        for pos in p["points"]:
            qw, kw, vw = slot_math.qk_norm_rope(q, k, vv, qn, kn, ff, pos, nh, nkv, hd, n_rot, p["freq_base"],
                                                p["freq_scale"], p["eps"])
            expect = {"q": qw, "k": kw} | ({"v": vw} if vw is not None else {})
            out.append(Run(f"pos={pos}", {"q": q, "k": k, "v": vv, "q_norm": qn, "k_norm": kn, "freq_factors": ff,
                                          "pos": _pos(pos), "n_head": nh, "n_head_kv": nkv, "head_dim": hd,
                                          "n_rot": n_rot, "freq_base": p["freq_base"], "freq_scale": p["freq_scale"],
                                          "eps": p["eps"]},
                           expect, rows={"q": nh, "k": nkv, "v": nkv}))
        return out
    if slot == "kv_append":
        nkv, hd, n_ctx = env["n_head_kv"], env["head_dim"], env["n_ctx"]
        k, v = _vec(r, nkv * hd), _vec(r, nkv * hd)
        kc, vc = (r.standard_normal(nkv * n_ctx * hd).astype(np.float16) for _ in range(2))
        out = []
        for pos in p["points"]:
            kw, vw = kc.copy(), vc.copy()
            slot_math.kv_append(k, v, kw, vw, pos, nkv, hd, n_ctx)
            out.append(Run(f"pos={pos}", {"k": k, "v": v, "k_cache": kc, "v_cache": vc, "pos": _pos(pos),
                                          "n_head_kv": nkv, "head_dim": hd, "n_ctx": n_ctx},
                           {"k_cache": kw, "v_cache": vw}))
        return out
    if slot.startswith("attn_decode"):
        nh, nkv, hd, n_ctx = env["n_head"], env["n_head_kv"], env["head_dim"], env["n_ctx"]
        n_swa = env.get("n_swa", 0)
        q = _vec(r, nh * hd)
        kc, vc = (r.standard_normal(nkv * n_ctx * hd, dtype=np.float32).astype(np.float16) for _ in range(2))
        out = []
        for pos in p["points"]:
            want = slot_math.attention(q, kc, vc, pos, nh, nkv, hd, n_ctx, n_swa, p["scale"])
            out.append(Run(f"pos={pos}", {"q": q, "k_cache": kc, "v_cache": vc, "out": _poison(nh * hd),
                                          "pos": _pos(pos), "n_head": nh, "n_head_kv": nkv, "n_ctx": n_ctx,
                                          "n_swa": n_swa, "scale": p["scale"]},
                           {"out": want}, rows={"out": nh}))
        return out
    if slot.startswith("glu_"):
        n = env["n_ff"]
        gate = _vec(r, n, 3.0)
        wild = r.random(n) < 0.02  # saturated activations both ways
        gate[wild] = (r.choice([-1, 1], int(wild.sum())) * r.uniform(20, 100, int(wild.sum()))).astype(np.float32)
        up = _vec(r, n)
        with np.errstate(over="ignore"):  # exp(100) in silu's denominator: inf, and the output -0
            want = slot_math.glu(slot.removeprefix("glu_"), gate, up)
        return [Run("", {"gate": gate, "up": up, "y": _poison(n), "n_ff": n}, {"y": want})]
    if slot == "moe_router_topk":
        n_expert, k = env["n_expert"], env["n_expert_used"]
        # On a 1/16 grid: logits either tie exactly (the lower id wins, per the header) or differ by
        # enough that no float32 rounding can reorder them.
        logits = (np.round(r.standard_normal(n_expert) * 3 * 16) / 16).astype(np.float32)
        scale = r.uniform(0.5, 2, n_expert).astype(np.float32) if p["with_expert_scale"] else None
        ids, weights = slot_math.router_topk(logits, scale, k, p["weights_scale"])
        return [Run("", {"logits": logits, "ids": np.full(k, -1, np.int32), "weights": _poison(k),
                         "expert_scale": scale, "n_expert": n_expert, "n_expert_used": k,
                         "weights_scale": p["weights_scale"]},
                    {"ids": ids, "weights": weights})]
    if slot.startswith("moe_ffn_"):
        return [_moe_run(case, r)]
    raise KernelGateError(f"no input rule for slot {slot!r}")


def _moe_run(case: Case, r: np.random.Generator) -> Run:
    env, p = case.env, case.params
    d, f, n_exp, k = env["n_embd"], env["n_ff_exp"], env["n_expert"], env["n_expert_used"]
    shapes = {"gate": (f, d), "up": (f, d), "down": (d, f)}
    buffers: dict[str, np.ndarray] = {}
    for w, (rows, cols) in shapes.items():
        qt, stride = QT(p[f"type_{w}"]), p[f"stride_{w}"]
        parts = []
        for _ in range(n_exp):
            m = random_weights(qt, rows, cols, r)
            parts += [m, r.integers(0, 256, stride - m.size, dtype=np.uint8)]  # padding: garbage
        buffers[w] = np.concatenate(parts)
    ids = r.choice(n_exp, k, replace=False).astype(np.int32)
    weights = r.uniform(0.05, 1, k)
    weights = (weights / weights.sum()).astype(np.float32)
    x = _vec(r, d)
    experts = [tuple(slot_math.dequant(p[f"type_{w}"], buffers[w][int(e) * p[f"stride_{w}"] :], *shapes[w])
                     for w in ("gate", "up", "down")) for e in ids]
    want = slot_math.moe_ffn(case.slot.removeprefix("moe_ffn_"), x, ids, weights, experts)
    args = {"x": x, "ids": ids, "weights": weights, "w_gate": buffers["gate"], "w_up": buffers["up"],
            "w_down": buffers["down"], "out": _poison(d), "n_embd": d, "n_ff_exp": f, "n_expert": n_exp,
            "n_expert_used": k}
    for w in ("gate", "up", "down"):
        args[f"stride_{w}"] = p[f"stride_{w}"]
        args[f"type_{w}"] = p[f"type_{w}"]
    return Run(f"experts={sorted(ids.tolist())}", args, {"out": want})


# -- comparison -----------------------------------------------------------------------------------
def _first_diff(got: np.ndarray, want: np.ndarray, mask: np.ndarray) -> str:
    i = int(np.flatnonzero(mask)[0])
    return f"first at [{i}]: {got[i]!r} != {want[i]!r}"


def score(slot: str, run: Run, got: Mapping[str, np.ndarray]) -> tuple[float, str]:
    """(error, note) of one run's outputs ``got`` (final buffer contents by parameter name). The
    error is the count of differing elements for exact slots, else the worst relative error; inf
    when the outputs cannot be compared (non-finite values, wrong router ids)."""
    fam = family(slot)
    if fam == EXACT:
        total, notes = 0, []
        for name, want in run.expect.items():
            g = np.asarray(got[name]).reshape(-1)
            w = want.reshape(-1)
            differ = ~((g == w) | (np.isnan(g) & np.isnan(w)))
            n = int(differ.sum())
            if n:
                total += n
                notes.append(f"{n} of {w.size} elements of {name} differ ({_first_diff(g, w, differ)})")
        return float(total), "; ".join(notes) or "exact"
    if fam == "router":
        return _score_router(run, got)
    worst, note = 0.0, ""
    for name, want in run.expect.items():
        g = np.asarray(got[name], dtype=np.float64).reshape(-1)
        bad = ~np.isfinite(g)
        if bad.any():
            return math.inf, (f"{int(bad.sum())} of {g.size} elements of {name} are not finite (outputs start as "
                              f"NaN: unwritten?), first at [{int(np.flatnonzero(bad)[0])}]")
        rows = run.rows.get(name, 1)
        diff = (g - want.reshape(-1)).reshape(rows, -1)
        ref = np.linalg.norm(want.reshape(rows, -1), axis=1)
        err = np.linalg.norm(diff, axis=1) / np.where(ref > 0, ref, 1.0)
        i = int(np.argmax(err))
        if err[i] > worst or not note:
            worst, note = float(err[i]), f"{name}" + (f" head {i}" if rows > 1 else "")
    return worst, f"relative error {worst:.3g} in {note}"


def _score_router(run: Run, got: Mapping[str, np.ndarray]) -> tuple[float, str]:
    want_ids, want_w = run.expect["ids"], run.expect["weights"]
    ids = np.asarray(got["ids"]).astype(np.int64).reshape(-1)
    if sorted(ids.tolist()) != sorted(want_ids.tolist()):
        return math.inf, (f"chose experts {sorted(ids.tolist())}, the top {want_ids.size} are "
                          f"{sorted(want_ids.tolist())}")
    w = np.asarray(got["weights"], dtype=np.float64).reshape(-1)
    if not np.isfinite(w).all():
        return math.inf, "routing weights are not finite (unwritten?)"
    by_id = dict(zip(ids.tolist(), w.tolist(), strict=True))
    g = np.array([by_id[i] for i in want_ids.tolist()])
    err = float(np.linalg.norm(g - want_w) / max(float(np.linalg.norm(want_w)), 1e-300))
    return err, f"relative error {err:.3g} in the routing weights"


@dataclass(frozen=True)
class Outcome:
    case: Case
    run: str  # the run's label
    error: float
    note: str


def summarize(slot: str, limit: float, outcomes: Sequence[Outcome]) -> GateResult:
    """The slot's gate from its runs: failed if any run is over the limit (or not comparable)."""
    name = f"kernel:{slot}"
    if not outcomes:
        return GateResult(name, FUZZ, True, 0.0, limit, "no cases: the basket does not use the slot and no "
                                                        "shapes were fuzzed")
    n_basket = len({o.case.index for o in outcomes if not o.case.fuzzed})
    n_fuzz = len({o.case.index for o in outcomes if o.case.fuzzed})
    failed = [o for o in outcomes if not o.error <= limit]
    counts = f"{len(outcomes)} runs on {n_basket} basket and {n_fuzz} fuzzed shapes"
    if failed:
        w = max(failed, key=lambda o: o.error)
        where = ("fuzzed shape " if w.case.fuzzed else "") + w.case.describe(w.run)
        return GateResult(name, w.case.origin, False, w.error, limit,
                          f"{len(failed)} of {counts} over the limit; worst on {where}: {w.note}")
    w = max(outcomes, key=lambda o: o.error)
    where = "a fuzzed shape" if w.case.fuzzed else w.case.describe(w.run)
    return GateResult(name, w.case.origin, True, w.error, limit, f"{counts}; worst on {where}")


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
               n_sm: int | None = None) -> GateResult:
    """Run ``kernel`` as ``slot`` on every case (in this process, on the current CUDA device) and
    grade it. A launch that cannot be made (no such entry, bad geometry) fails the gate; any other
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
            try:
                got, violations = _execute(slot, kernel, case, run, n_sm)
            except LaunchError as exc:
                outcomes.append(Outcome(case, run.label, math.inf, f"launch failed: {exc}"))
                return summarize(slot, limit, outcomes)
            except Exception as exc:
                where = ("a fuzzed shape " if case.fuzzed else "") + case.describe(run.label)
                raise GateFault(f"{slot}: {type(exc).__name__}: {exc} (while running {where})") from None
            if violations:
                outcomes.append(Outcome(case, run.label, math.inf, "; ".join(violations)))
            else:
                outcomes.append(Outcome(case, run.label, *score(slot, run, got)))
    return summarize(slot, limit, outcomes)


def _gate_job(overrides: Mapping[str, SlotKernel], fixed: Mapping[str, Sequence[FixedShape]], seed: int,
              tolerances: Mapping[str, float], fuzz_cases: int) -> tuple[GateResult, ...]:
    """The worker's side of :func:`run_kernel_gates`."""
    from reference_runtime.runtime.decode import device_sm_count

    n_sm = device_sm_count()
    return tuple(check_slot(slot, overrides[slot], cases(slot, fixed.get(slot, ()), seed, fuzz_cases), tolerances,
                            n_sm) for slot in sorted(overrides))


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
                     tolerances: Mapping[str, float], fuzz_cases: int, *, timeout_s: float = 300.0
                     ) -> tuple[GateResult, ...]:
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
            return run_contained(_gate_job, subset, shapes, seed, tol, fuzz_cases, timeout_s=timeout_s)
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
