"""Gate cases: the basket's shapes plus shapes fuzzed from the holdout seed, within each slot's ABI."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.kernel_gates.shapes import (
    _MAX_KV_ELEMENTS,
    _MAX_RUNS_PER_CASE,
    _MAX_WEIGHT_ELEMENTS,
    _QTYPE,
    FUZZ,
    QT,
    FixedShape,
    KernelGateError,
    _block,
    _granule,
    _weight_suffix,
    family,
)
from reference_runtime import quants
from reference_runtime import slots as catalogue


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


