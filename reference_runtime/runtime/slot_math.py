"""Every slot's meaning, restated in NumPy float64 from the header's comments.

These are the oracles: the emulator runs whole plans with them, and the GPU slot tests compare each
baseline kernel with them on random inputs. They are written for clarity; speed is irrelevant.
Weights are passed dequantized (:func:`dequant` is exact, through :mod:`reference_runtime.quants`).
"""

from __future__ import annotations

import gguf
import numpy as np

from reference_runtime import quants
from reference_runtime.reference import gelu_tanh, silu

F64 = np.float64


def dequant(qtype: int, raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The first [rows, cols] matrix of type ``qtype`` in ``raw``, exactly, as float64."""
    qt = gguf.GGMLQuantizationType(qtype)
    return quants.dequantize(raw[: quants.n_bytes_for(qt, (rows, cols))], qt, (rows, cols))


def gemv(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y = W x with W already dequantized [n_rows, n_cols]."""
    return w @ x[: w.shape[1]].astype(F64)


def lm_head(w: np.ndarray, x: np.ndarray, softcap: float) -> np.ndarray:
    z = gemv(w, x)
    return softcap * np.tanh(z / softcap) if softcap > 0 else z


def _norm(x: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(F64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return _norm(x, eps) * w


def rmsnorm_residual(h: np.ndarray, x: np.ndarray, w: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Returns (new h, y)."""
    h = h.astype(F64) + x
    return h, _norm(h, eps) * w


def rmsnorm_post_add(h: np.ndarray, x: np.ndarray, w: np.ndarray, eps: float, out_scale: float) -> np.ndarray:
    return (h.astype(F64) + _norm(x, eps) * w) * out_scale


def rope(x: np.ndarray, pos: int, n_rot: int, base: float, scale: float, freq_factors: np.ndarray | None) -> np.ndarray:
    """NeoX RoPE on x [heads, head_dim] at one position."""
    half = n_rot // 2
    inv = float(base) ** (-2.0 * np.arange(half, dtype=F64) / n_rot)
    if freq_factors is not None:
        inv = inv / freq_factors[:half]
    theta = pos * float(scale) * inv
    c, s = np.cos(theta), np.sin(theta)
    a, b = x[:, :half], x[:, half:n_rot]
    return np.concatenate([a * c - b * s, b * c + a * s, x[:, n_rot:]], axis=1)


def qk_norm_rope(q: np.ndarray, k: np.ndarray, v: np.ndarray | None, q_norm: np.ndarray, k_norm: np.ndarray,
                 freq_factors: np.ndarray | None, pos: int, n_head: int, n_head_kv: int, head_dim: int, n_rot: int,
                 freq_base: float, freq_scale: float, eps: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    qh = _norm(q[: n_head * head_dim].reshape(n_head, head_dim), eps) * q_norm
    kh = _norm(k[: n_head_kv * head_dim].reshape(n_head_kv, head_dim), eps) * k_norm
    qo = rope(qh, pos, n_rot, freq_base, freq_scale, freq_factors).reshape(-1)
    ko = rope(kh, pos, n_rot, freq_base, freq_scale, freq_factors).reshape(-1)
    vo = None if v is None else _norm(v[: n_head_kv * head_dim].reshape(n_head_kv, head_dim), eps).reshape(-1)
    return qo, ko, vo


def kv_append(k: np.ndarray, v: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, pos: int, n_head_kv: int,
              head_dim: int, n_ctx: int) -> None:
    """In place, on float16 caches [n_head_kv * n_ctx * head_dim]."""
    if pos >= n_ctx:
        return
    for cache, src in ((k_cache, k), (v_cache, v)):
        view = cache[: n_head_kv * n_ctx * head_dim].reshape(n_head_kv, n_ctx, head_dim)
        view[:, pos, :] = src[: n_head_kv * head_dim].reshape(n_head_kv, head_dim).astype(np.float16)


def attention(q: np.ndarray, k_cache: np.ndarray, v_cache: np.ndarray, pos: int, n_head: int, n_head_kv: int,
              head_dim: int, n_ctx: int, n_swa: int, scale: float) -> np.ndarray:
    hi = min(pos, n_ctx - 1) + 1
    lo = max(0, hi - n_swa) if n_swa > 0 else 0
    kc = k_cache[: n_head_kv * n_ctx * head_dim].reshape(n_head_kv, n_ctx, head_dim)[:, lo:hi].astype(F64)
    vc = v_cache[: n_head_kv * n_ctx * head_dim].reshape(n_head_kv, n_ctx, head_dim)[:, lo:hi].astype(F64)
    qh = q[: n_head * head_dim].reshape(n_head, head_dim).astype(F64)
    group = n_head // n_head_kv
    out = np.empty((n_head, head_dim))
    for h in range(n_head):
        s = kc[h // group] @ qh[h] * scale
        p = np.exp(s - s.max())
        out[h] = (p / p.sum()) @ vc[h // group]
    return out.reshape(-1)


def glu(kind: str, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    act = silu if kind == "swiglu" else gelu_tanh
    return act(np, gate.astype(F64)) * up


def router_topk(logits: np.ndarray, expert_scale: np.ndarray | None, n_expert_used: int,
                weights_scale: float) -> tuple[np.ndarray, np.ndarray]:
    z = logits.astype(F64)
    p = np.exp(z - z.max())
    p /= p.sum()
    ids = np.argsort(-z, kind="stable")[:n_expert_used]
    w = p[ids] / max(p[ids].sum(), 6.103515625e-5)
    if weights_scale not in (0.0, 1.0):
        w = w * weights_scale
    if expert_scale is not None:
        w = w * expert_scale[ids]
    return ids.astype(np.int32), w


def moe_ffn(kind: str, x: np.ndarray, ids: np.ndarray, weights: np.ndarray, experts: list[tuple[np.ndarray, ...]]
            ) -> np.ndarray:
    """experts[i] = (gate [n_ff_exp, n_embd], up, down [n_embd, n_ff_exp]) of expert ids[i], float64."""
    out = np.zeros(experts[0][2].shape[0])
    for w, (gate, up, down) in zip(weights, experts, strict=True):
        out += w * (down @ glu(kind, gate @ x, up @ x))
    return out


