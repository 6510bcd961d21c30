"""The fp64 reference: a prefill-style causal forward over a whole token sequence.

This is the oracle every decode kernel is judged against, so it is written to be obviously right
rather than fast: float64 throughout, one layer at a time over all positions (a different
computation from the token-by-token decode it checks), llama.cpp's semantics for each architecture.
Each weight is dequantized once, when its layer runs, and dropped afterwards — experts one at a time
and the LM head in vocabulary chunks — so peak memory stays near one layer, not one model.

``xp`` is the array module: NumPy on a CPU, CuPy on a GPU; the code is the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from reference_runtime.arch import ArchConfig, LayerSpec, read_config
from reference_runtime.errors import ReferenceRuntimeError
from reference_runtime.gguf_model import GGUFModel

# Bump when a change here can change the reference's output: it keys the reference cache.
REFERENCE_VERSION = 1

VOCAB_CHUNK = 32768  # LM-head / embedding rows dequantized at once


class TokenError(ReferenceRuntimeError, ValueError):
    """A token sequence the model cannot read (empty, or ids outside its vocabulary)."""


def rms_norm(xp: Any, x: Any, weight: Any | None, eps: float) -> Any:
    y = x / xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + eps)
    return y if weight is None else y * weight


def gelu_tanh(xp: Any, x: Any) -> Any:
    # llama.cpp's GELU is the tanh approximation.
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def silu(xp: Any, x: Any) -> Any:
    # Below -700, exp(-x) overflows float64 (the edge gates' 100x outlier channels get there); the
    # clamp keeps the value (|silu| < 1e-300 there) and the validator's log free of overflow warnings.
    return x / (1.0 + xp.exp(-xp.maximum(x, -700.0)))


def log_softmax(xp: Any, x: Any) -> Any:
    shifted = x - xp.max(x, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def rope_neox(xp: Any, x: Any, positions: Any, n_rot: int, base: float, scale: float, freq_factors: Any = None) -> Any:
    """NeoX-style RoPE on x [T, heads, head_dim]: dimension i pairs with i + n_rot/2; dims >= n_rot pass."""
    half = n_rot // 2
    inv_freq = base ** (-2.0 * xp.arange(half, dtype=xp.float64) / n_rot)
    if freq_factors is not None:
        inv_freq = inv_freq / freq_factors[:half]
    theta = (scale * positions.astype(xp.float64))[:, None] * inv_freq[None, :]
    cos, sin = xp.cos(theta)[:, None, :], xp.sin(theta)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:n_rot]
    return xp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., n_rot:]], axis=-1)


def causal_mask(xp: Any, n_tokens: int, n_swa: int) -> Any:
    """True where query i may attend key j: j <= i, and within the window when n_swa > 0."""
    i = xp.arange(n_tokens)[:, None]
    j = xp.arange(n_tokens)[None, :]
    allowed = j <= i
    if n_swa > 0:
        allowed &= (i - j) < n_swa  # llama.cpp masks when p1 - p0 >= n_swa
    return allowed


def attention(xp: Any, q: Any, k: Any, v: Any, mask: Any, scale: float) -> Any:
    """Softmax attention with GQA: q [T, H, D], k/v [T, Hkv, D] -> [T, H*D]. One head at a time, so
    the score matrix is [T, T], not [H, T, T]."""
    n_tokens, n_head, head_dim = q.shape
    group = n_head // k.shape[1]
    out = xp.empty_like(q)
    for h in range(n_head):
        kv = h // group
        scores = xp.where(mask, (q[:, h] @ k[:, kv].T) * scale, -xp.inf)
        out[:, h] = xp.exp(log_softmax(xp, scores)) @ v[:, kv]
    return out.reshape(n_tokens, n_head * head_dim)


class Forward:
    """One model's reference forward. ``logprobs(tokens)`` is the whole API."""

    def __init__(self, model: GGUFModel, xp: Any = np) -> None:
        self.model = model
        self.xp = xp
        self.cfg: ArchConfig = read_config(model)

    def w(self, name: str) -> Any:
        return self.model.dequantize(name, xp=self.xp)

    def opt(self, name: str) -> Any | None:
        return self.w(name) if self.model.has(name) else None

    def linear(self, x: Any, name: str) -> Any:
        return x @ self.w(name).T

    def norm(self, x: Any, name: str | None) -> Any:
        return rms_norm(self.xp, x, None if name is None else self.w(name), self.cfg.rms_eps)

    def embed(self, tokens: Any) -> Any:
        xp, cfg = self.xp, self.cfg
        out = xp.empty((len(tokens), cfg.n_embd), dtype=xp.float64)
        for start in range(0, cfg.n_vocab, VOCAB_CHUNK):
            hit = (tokens >= start) & (tokens < start + VOCAB_CHUNK)
            if bool(hit.any()):
                rows = self.model.dequantize("token_embd.weight", xp=xp, rows=slice(start, start + VOCAB_CHUNK))
                out[hit] = rows[tokens[hit] - start]
        return out * cfg.embd_scale

    def lm_head(self, h: Any) -> Any:
        xp, cfg = self.xp, self.cfg
        name = "token_embd.weight" if cfg.tied_output else "output.weight"
        logits = xp.empty((h.shape[0], cfg.n_vocab), dtype=xp.float64)
        for start in range(0, cfg.n_vocab, VOCAB_CHUNK):
            rows = self.model.dequantize(name, xp=xp, rows=slice(start, start + VOCAB_CHUNK))
            logits[:, start : start + rows.shape[0]] = h @ rows.T
        if cfg.final_softcap:
            logits = cfg.final_softcap * xp.tanh(logits / cfg.final_softcap)
        return logits

    def attention_block(self, x: Any, layer: LayerSpec, positions: Any) -> Any:
        xp, cfg = self.xp, self.cfg
        p = f"blk.{layer.index}."
        n_tokens, hd = x.shape[0], layer.head_dim
        freq_factors = None
        if cfg.arch == "gemma4" and not layer.is_swa:
            freq_factors = self.w("rope_freqs.weight")  # proportional RoPE on global layers

        q = self.linear(x, p + "attn_q.weight").reshape(n_tokens, layer.n_head, hd)
        q = rms_norm(xp, q, self.w(p + "attn_q_norm.weight"), cfg.rms_eps)
        q = rope_neox(xp, q, positions, layer.n_rot, layer.rope_base, layer.rope_scale, freq_factors)

        k_raw = self.linear(x, p + "attn_k.weight").reshape(n_tokens, layer.n_head_kv, hd)
        v_name = p + "attn_v.weight"
        # Gemma 4 may omit attn_v: V is then the (un-normed) K projection.
        v = self.linear(x, v_name).reshape(n_tokens, layer.n_head_kv, hd) if self.model.has(v_name) else k_raw
        k = rms_norm(xp, k_raw, self.w(p + "attn_k_norm.weight"), cfg.rms_eps)
        k = rope_neox(xp, k, positions, layer.n_rot, layer.rope_base, layer.rope_scale, freq_factors)
        if cfg.arch == "gemma4":
            v = rms_norm(xp, v, None, cfg.rms_eps)

        scale = cfg.attn_scale if cfg.attn_scale is not None else 1.0 / math.sqrt(hd)
        mask = causal_mask(xp, n_tokens, cfg.n_swa if layer.is_swa else 0)
        return self.linear(attention(xp, q, k, v, mask, scale), p + "attn_output.weight")

    def dense_ffn(self, x: Any, prefix: str) -> Any:
        act = silu if self.cfg.ffn_act == "silu" else gelu_tanh
        gate = self.linear(x, prefix + "ffn_gate.weight")
        up = self.linear(x, prefix + "ffn_up.weight")
        return self.linear(act(self.xp, gate) * up, prefix + "ffn_down.weight")

    def moe_ffn(self, x: Any, router_logits: Any, layer: LayerSpec) -> Any:
        """Softmax routing, top-k, renormalised weights, gated experts, weighted sum (llama.cpp build_moe_ffn)."""
        xp, cfg = self.xp, self.cfg
        p = f"blk.{layer.index}."
        act = silu if cfg.ffn_act == "silu" else gelu_tanh
        probs = xp.exp(log_softmax(xp, router_logits))
        chosen = xp.argsort(-probs, axis=-1)[:, : cfg.n_expert_used]
        weights = xp.take_along_axis(probs, chosen, axis=-1)
        weights = weights / xp.maximum(weights.sum(axis=-1, keepdims=True), 6.103515625e-5)
        if cfg.expert_weights_scale not in (0.0, 1.0):
            weights = weights * cfg.expert_weights_scale
        down_scale = self.opt(p + "ffn_down_exps.scale")

        out = xp.zeros_like(x)
        chosen_host = chosen.get() if hasattr(chosen, "get") else chosen
        for e in sorted({int(v) for v in np.unique(chosen_host)}):
            tok, slot = (xp.asarray(a) for a in np.nonzero(chosen_host == e))
            one = slice(e, e + 1)
            if layer.fused_gate_up:
                gate_up = x[tok] @ self.model.dequantize(p + "ffn_gate_up_exps.weight", xp=xp, rows=one)[0].T
                gate, up = gate_up[:, : layer.n_ff_exp], gate_up[:, layer.n_ff_exp :]
            else:
                gate = x[tok] @ self.model.dequantize(p + "ffn_gate_exps.weight", xp=xp, rows=one)[0].T
                up = x[tok] @ self.model.dequantize(p + "ffn_up_exps.weight", xp=xp, rows=one)[0].T
            y = (act(xp, gate) * up) @ self.model.dequantize(p + "ffn_down_exps.weight", xp=xp, rows=one)[0].T
            if down_scale is not None:
                y = y * down_scale[e]
            out[tok] += y * weights[tok, slot][:, None]
        return out

    def layer(self, h: Any, layer: LayerSpec, positions: Any) -> Any:
        xp, cfg = self.xp, self.cfg
        p = f"blk.{layer.index}."
        attn = self.attention_block(self.norm(h, p + "attn_norm.weight"), layer, positions)
        if cfg.arch == "qwen3moe":
            h = h + attn
            x = self.norm(h, p + "ffn_norm.weight")
            router = self.linear(x, p + "ffn_gate_inp.weight")
            return h + self.moe_ffn(x, router, layer)

        h = h + self.norm(attn, p + "post_attention_norm.weight")
        if layer.is_moe:  # gemma4: a shared dense FFN beside the routed experts, each with its own norms
            shared = self.norm(self.dense_ffn(self.norm(h, p + "ffn_norm.weight"), p), p + "post_ffw_norm_1.weight")
            router_in = rms_norm(xp, h, None, cfg.rms_eps) / math.sqrt(cfg.n_embd) * self.w(p + "ffn_gate_inp.scale")
            router = self.linear(router_in, p + "ffn_gate_inp.weight")
            routed = self.moe_ffn(self.norm(h, p + "pre_ffw_norm_2.weight"), router, layer)
            ffn = shared + self.norm(routed, p + "post_ffw_norm_2.weight")
        else:
            ffn = self.dense_ffn(self.norm(h, p + "ffn_norm.weight"), p)
        h = h + self.norm(ffn, p + "post_ffw_norm.weight")
        out_scale = self.opt(p + "layer_output_scale.weight")
        return h if out_scale is None else h * out_scale

    def logprobs(self, tokens: Sequence[int] | Any, on_layer: Callable[[int, int], None] | None = None,
                 at: Sequence[int] | None = None) -> Any:
        """Log-probabilities [n_tokens, n_vocab] (float64) of the next token after each position;
        ``on_layer(done, total)`` is called after each layer (a CPU forward takes seconds). ``at``:
        only those positions' rows (a long context's logits would not fit: 16k x 262,144 x 8 B = 34 GB)."""
        xp = self.xp
        ids = xp.asarray(np.asarray(tokens, dtype=np.int64))
        if ids.ndim != 1 or len(ids) == 0:
            raise TokenError("tokens must be a non-empty 1-D sequence")
        if int(ids.min()) < 0 or int(ids.max()) >= self.cfg.n_vocab:
            raise TokenError(f"token ids must lie in [0, {self.cfg.n_vocab}); got {int(ids.min())}..{int(ids.max())}")
        positions = xp.arange(len(ids))
        h = self.embed(ids)
        for done, layer in enumerate(self.cfg.layers, 1):
            h = self.layer(h, layer, positions)
            if on_layer is not None:
                on_layer(done, len(self.cfg.layers))
        if at is not None:
            h = h[xp.asarray(np.asarray(at, dtype=np.int64))]
        return log_softmax(xp, self.lm_head(self.norm(h, "output_norm.weight")))


def reference_logprobs(model: GGUFModel, tokens: Sequence[int], xp: Any = np) -> Any:
    return Forward(model, xp).logprobs(tokens)
