"""Each case's runs: random inputs fixed by (seed, slot, case) and the float64 oracle's outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.kernel_gates.case_gen import Case
from harness.kernel_gates.shapes import _QTYPE, QT, KernelGateError, _weight_suffix
from reference_runtime import quants
from reference_runtime.runtime import slot_math


# -- inputs and expected outputs ------------------------------------------------------------------
@dataclass
class Run:
    """One launch: every ABI argument but scratch (NumPy arrays for pointers, None for NULL; numbers
    for scalars), the expected final contents of the output buffers (float64, or the exact bits for
    exact slots), rows to split an output into for per-head errors, buffers shared by two
    parameters (``alias[y] = x``: y is passed x's buffer), and per output the norm below which the
    relative error's denominator does not shrink (:func:`dot_floor`)."""

    label: str
    args: dict[str, Any]
    expect: dict[str, np.ndarray]
    rows: dict[str, int] = field(default_factory=dict)
    alias: dict[str, str] = field(default_factory=dict)
    floor: dict[str, float] = field(default_factory=dict)


def dot_floor(w: np.ndarray, x: np.ndarray, softcap: float = 0.0) -> float:
    """The size of W x (soft-capped when ``softcap`` > 0) that float32 rounding scales with when its
    dot products cancel: ||(|W| |x|) * slope|| / sqrt(n_cols), the slope being the cap's derivative
    (1 without one; a saturated logit hides its dot product's error). A dot product's rounding error
    grows with the sum of its terms' magnitudes, not with the result, so a nearly cancelling row (one
    logit of a one-row lm_head, say) has an unbounded relative error in any correct float32 kernel.
    For uncancelled rows this is about 0.64 ||W x|| (N(0, 1) terms), below the norm itself: only
    cancelling outputs are judged by it."""
    x64 = x[: w.shape[1]].astype(np.float64)
    size = np.abs(w) @ np.abs(x64)
    if softcap > 0:
        size = size * (1 - np.tanh((w @ x64) / softcap) ** 2)
    return float(np.linalg.norm(size) / np.sqrt(max(w.shape[1], 1)))


_FP16_EXTREMES = np.array([65504.0, -65504.0, 6.1e-5, 6e-8, -6e-8, 1.0, -0.0, 0.333], dtype=np.float16)
_FP16_TINY = np.array([6.1e-5, 6e-8, -6e-8, -0.0], dtype=np.float16)  # smallest normal, subnormals, -0
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


# -- the edges of the numerics, beside the N(0, 1) draws --------------------------------------------
# Real activations are not N(0, 1): a few channels sit ~100x above the rest (the outlier features of
# LLMs), norms see near-constant and near-zero rows, attention meets scores far past exp's float32
# range (|q.k| * scale >> 88.7), routers meet logits one ulp apart, and the fp16 cache holds its
# extremes. A kernel that only works on well-scaled inputs (an unshifted softmax, a sum of squares in
# fp16, probabilities compared instead of logits) fails here; a correct float32 one does not.
def outlier_channels(r: np.random.Generator, n: int, factor: float = 100.0) -> np.ndarray:
    x = _vec(r, n)
    hot = r.choice(n, max(1, n // 256), replace=False)
    x[hot] *= np.float32(factor)
    return x


def cancelling(row: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``x`` made orthogonal to ``row``, then rounded to float32: that row's dot product cancels to
    ~0, the case a one-row GEMV meets by chance and only :func:`dot_floor` can judge."""
    x64 = x.astype(np.float64)
    return (x64 - (row @ x64) / max(float(row @ row), 1e-300) * row).astype(np.float32)


def edge_rows(r: np.random.Generator, n: int) -> list[tuple[str, np.ndarray]]:
    c = np.float32(r.choice([-1, 1]) * 10 ** r.uniform(-1, 1))
    return [("near-constant row", (c * (1 + 1e-3 * r.standard_normal(n))).astype(np.float32)),
            ("near-zero row", _vec(r, n, 1e-12)),  # x*x stays a normal float32
            ("outlier channels", outlier_channels(r, n))]


def peaked_query(q: np.ndarray, k_cache: np.ndarray, pos: int, n_head: int, n_head_kv: int, head_dim: int,
                 n_ctx: int, n_swa: int, scale: float, r: np.random.Generator, peak: float = 300.0) -> np.ndarray:
    """``q`` turned, head by head, towards one visible key so that its score is about ``peak``."""
    hi = min(pos, n_ctx - 1) + 1
    lo = max(0, hi - n_swa) if n_swa > 0 else 0
    keys = k_cache[: n_head_kv * n_ctx * head_dim].reshape(n_head_kv, n_ctx, head_dim)
    qh = q[: n_head * head_dim].reshape(n_head, head_dim).astype(np.float64)
    group = n_head // n_head_kv
    out = np.empty_like(qh)
    for h in range(n_head):
        key = keys[h // group, int(r.integers(lo, hi))].astype(np.float64)  # one row: the cache may be 32k long
        out[h] = 0.1 * qh[h] + key * (peak / (abs(scale) * max(float(key @ key), 1e-6)))
    return out.astype(np.float32).reshape(-1)


def fp16_extremes(cache: np.ndarray, r: np.random.Generator, values: np.ndarray = _FP16_EXTREMES,
                  share: float = 1e-3) -> np.ndarray:
    out = cache.copy()
    hit = r.random(out.size) < share
    out[hit] = values[r.integers(0, len(values), int(hit.sum()))]
    return out


def near_tie(logits: np.ndarray, k: int) -> np.ndarray:
    """``logits`` with the k-th and (k+1)-th experts one float32 ulp apart, the lower id below: a
    kernel comparing rounded probabilities instead of logits picks the wrong one."""
    z = logits.copy()
    order = np.argsort(-z.astype(np.float64), kind="stable")
    if k >= z.size:
        return z
    lo_id, hi_id = sorted((int(order[k - 1]), int(order[k])))
    top = z[order[k - 1]]
    z[hi_id] = top
    z[lo_id] = np.nextafter(top, np.float32(-np.inf))
    return z


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
        w = slot_math.dequant(int(qt), raw, rows, cols)
        out = []
        plain = _vec(r, cols)
        for label, x in (("", plain), ("outlier channels", outlier_channels(r, cols)),
                         ("row 0 cancelling", cancelling(w[0], plain))):
            if gemv:
                out.append(Run(label, {"w": raw, "x": x, "y": _poison(rows), "n_rows": rows, "n_cols": cols},
                               {"y": slot_math.gemv(w, x)}, floor={"y": dot_floor(w, x)}))
            else:
                cap = p["softcap"]
                out.append(Run(label, {"w": raw, "x": x, "logits": _poison(rows), "n_vocab": rows, "n_embd": cols,
                                       "softcap": cap}, {"logits": slot_math.lm_head(w, x, cap)},
                               floor={"logits": dot_floor(w, x, cap)}))
        return out
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
        w = (1 + 0.3 * r.standard_normal(n)).astype(np.float32)
        out = []
        for label, x in (("", _vec(r, n, float(10 ** r.uniform(-2, 2)))), *edge_rows(r, n)):
            if slot == "rmsnorm":
                want = slot_math.rmsnorm(x, w, eps)
                if p["alias"]:
                    out.append(Run(" ".join(("y=x", label)).strip(), {"x": x, "w": w, "y": None, "n_embd": n,
                                                                     "eps": eps}, {"x": want}, alias={"y": "x"}))
                else:
                    out.append(Run(label, {"x": x, "w": w, "y": _poison(n), "n_embd": n, "eps": eps}, {"y": want}))
                continue
            h = _vec(r, n, float(10 ** r.uniform(-2, 2)))
            if slot == "rmsnorm_residual":
                h_want, y_want = slot_math.rmsnorm_residual(h, x, w, eps)
                out.append(Run(label, {"h": h, "x": x, "w": w, "y": _poison(n), "n_embd": n, "eps": eps},
                               {"h": h_want, "y": y_want}))
            else:
                scale = p["out_scale"]
                out.append(Run(label, {"h": h, "x": x, "w": w, "n_embd": n, "eps": eps, "out_scale": scale},
                               {"h": slot_math.rmsnorm_post_add(h, x, w, eps, scale)}))
        return out
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
        first = p["points"][0]
        variants = [(f"pos={pos}", pos, q, kc, vc) for pos in p["points"]]
        # The edges, at the first position: scores far past exp's float32 range (an unshifted softmax
        # overflows), then fp16's extremes in the cache: all of them in V, the tiny ones (subnormals,
        # -0) in K. A 65504 in K makes scores of ~5000 whose float32 rounding alone moves the
        # softmax by 1e-3: no float32 kernel could meet the limit there.
        variants.append((f"pos={first} large scores", first,
                         peaked_query(q, kc, first, nh, nkv, hd, n_ctx, n_swa, p["scale"], r), kc, vc))
        variants.append((f"pos={first} fp16 extremes", first, q, fp16_extremes(kc, r, _FP16_TINY),
                         fp16_extremes(vc, r)))
        out = []
        for label, pos, qq, kk, vv in variants:
            want = slot_math.attention(qq, kk, vv, pos, nh, nkv, hd, n_ctx, n_swa, p["scale"])
            out.append(Run(label, {"q": qq, "k_cache": kk, "v_cache": vv, "out": _poison(nh * hd),
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
        out = []
        for label, z in (("", logits), ("near-tie at the top-k edge", near_tie(logits, k))):
            ids, weights = slot_math.router_topk(z, scale, k, p["weights_scale"])
            out.append(Run(label, {"logits": z, "ids": np.full(k, -1, np.int32), "weights": _poison(k),
                                   "expert_scale": scale, "n_expert": n_expert, "n_expert_used": k,
                                   "weights_scale": p["weights_scale"]},
                           {"ids": ids, "weights": weights}))
        return out
    if slot.startswith("moe_ffn_"):
        return _moe_runs(case, r)
    raise KernelGateError(f"no input rule for slot {slot!r}")


def _moe_runs(case: Case, r: np.random.Generator) -> list[Run]:
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
    experts = [tuple(slot_math.dequant(p[f"type_{w}"], buffers[w][int(e) * p[f"stride_{w}"] :], *shapes[w])
                     for w in ("gate", "up", "down")) for e in ids]
    out = []
    for label, x in (("", _vec(r, d)), (" outlier channels", outlier_channels(r, d))):
        want = slot_math.moe_ffn(case.slot.removeprefix("moe_ffn_"), x, ids, weights, experts)
        args = {"x": x, "ids": ids, "weights": weights, "w_gate": buffers["gate"], "w_up": buffers["up"],
                "w_down": buffers["down"], "out": _poison(d), "n_embd": d, "n_ff_exp": f, "n_expert": n_exp,
                "n_expert_used": k}
        for w in ("gate", "up", "down"):
            args[f"stride_{w}"] = p[f"stride_{w}"]
            args[f"type_{w}"] = p[f"type_{w}"]
        out.append(Run(f"experts={sorted(ids.tolist())}{label}", args, {"out": want}))
    return out


