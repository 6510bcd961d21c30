"""Hyper-parameters of the supported architectures, read from GGUF metadata with llama.cpp's semantics.

Everything the forward pass needs to know about a model — per layer, because Gemma interleaves
sliding-window and global layers with different head sizes, RoPE bases and rotary widths — is
resolved here once, so the math in ``reference.py`` never looks at metadata keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from reference_runtime.gguf_model import GGUFError, GGUFModel

SUPPORTED_ARCHS = ("qwen3moe", "gemma3", "gemma4")


@dataclass(frozen=True)
class LayerSpec:
    index: int
    is_swa: bool
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    rope_base: float
    rope_scale: float  # multiplies positions (llama.cpp's freq_scale = 1 / rope.scaling.factor)
    is_moe: bool
    n_ff: int  # dense (gemma3) or shared-expert (gemma4) FFN width; 0 when absent
    n_ff_exp: int
    fused_gate_up: bool  # experts' gate and up stored as one [2*n_ff_exp] tensor (ffn_gate_up_exps)


@dataclass(frozen=True)
class ArchConfig:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    rms_eps: float
    layers: tuple[LayerSpec, ...]
    n_swa: int  # sliding-window length in positions (0: no sliding window)
    attn_scale: float | None  # None: 1/sqrt(head_dim) per layer
    embd_scale: float  # token embeddings are multiplied by this (sqrt(n_embd) on Gemma)
    n_expert: int
    n_expert_used: int
    expert_weights_scale: float
    final_softcap: float  # 0: none
    ffn_act: str  # "silu" (SwiGLU) or "gelu" (GeGLU, tanh approximation)
    tied_output: bool


def _get_or_arr(model: GGUFModel, suffix: str, n_layer: int, default: Any = None) -> list[int]:
    """llama.cpp's get_key_or_arr: a scalar applies to every layer, an array gives one per layer."""
    value = model.arch_get(suffix) if default is None else model.arch_get(suffix, default)
    if isinstance(value, list):
        if len(value) != n_layer:
            raise GGUFError(
                f"{model.path}: {model.arch}.{suffix} has {len(value)} entries for {n_layer} layers"
            )
        return [int(v) for v in value]
    return [int(value)] * n_layer


def _swa_pattern(model: GGUFModel, n_layer: int) -> list[bool]:
    if model.arch == "qwen3moe":
        return [False] * n_layer
    if model.arch == "gemma3" and int(model.arch_get("attention.sliding_window", 0)) <= 0:
        return [False] * n_layer
    pattern = model.arch_get("attention.sliding_window_pattern", None if model.arch == "gemma4" else 6)
    if pattern is None:
        raise GGUFError(f"{model.path}: missing key {model.arch}.attention.sliding_window_pattern")
    if isinstance(pattern, list):
        if len(pattern) != n_layer:
            raise GGUFError(f"{model.path}: sliding_window_pattern has {len(pattern)} entries for {n_layer} layers")
        return [bool(p) for p in pattern]
    n = int(pattern)
    # Every n-th layer is global (llama.cpp set_swa_pattern with dense_first = false).
    return [n == 0 or (il % n < n - 1) for il in range(n_layer)]


def read_config(model: GGUFModel) -> ArchConfig:
    """Resolve every hyper-parameter the forward pass needs; unknown archs and missing keys are errors."""
    arch = model.arch
    if arch not in SUPPORTED_ARCHS:
        raise GGUFError(
            f"{model.path}: unsupported architecture {arch!r} (supported: {', '.join(SUPPORTED_ARCHS)})"
        )
    n_embd = int(model.arch_get("embedding_length"))
    n_layer = int(model.arch_get("block_count"))
    n_head = _get_or_arr(model, "attention.head_count", n_layer)
    n_head_kv = _get_or_arr(model, "attention.head_count_kv", n_layer, default=-1)
    n_head_kv = [h if kv < 0 else kv for h, kv in zip(n_head, n_head_kv, strict=True)]
    rms_eps = float(model.arch_get("attention.layer_norm_rms_epsilon"))

    head_full = int(model.arch_get("attention.key_length", n_embd // n_head[0]))
    head_swa = int(model.arch_get("attention.key_length_swa", head_full))
    rot_full = int(model.arch_get("rope.dimension_count", head_full))
    rot_swa = int(model.arch_get("rope.dimension_count_swa", rot_full))
    for suffix, k_len in (("attention.value_length", head_full), ("attention.value_length_swa", head_swa)):
        v_len = int(model.arch_get(suffix, k_len))
        if v_len != k_len:
            raise GGUFError(f"{model.path}: {arch}.{suffix}={v_len} differs from the key length {k_len}")

    base_full = float(model.arch_get("rope.freq_base", 10000.0))
    base_swa = float(model.arch_get("rope.freq_base_swa", 10000.0))
    factor = float(model.arch_get("rope.scaling.factor", 0.0))
    scale_full = 1.0 if factor == 0.0 else 1.0 / factor
    scaling_type = model.arch_get("rope.scaling.type", "linear")
    if scaling_type not in ("linear", "none"):
        raise GGUFError(f"{model.path}: rope scaling type {scaling_type!r} is not supported by the reference")

    is_swa = _swa_pattern(model, n_layer)
    n_swa = int(model.arch_get("attention.sliding_window", 0)) if any(is_swa) else 0

    n_expert = int(model.arch_get("expert_count", 0))
    n_expert_used = int(model.arch_get("expert_used_count", 0))
    n_ff = _get_or_arr(model, "feed_forward_length", n_layer, default=0)
    n_ff_exp = _get_or_arr(model, "expert_feed_forward_length", n_layer, default=0)

    if arch == "gemma4":
        if int(model.arch_get("embedding_length_per_layer_input", 0)) > 0:
            raise GGUFError(f"{model.path}: gemma4 per-layer embeddings are not supported by the reference")
        if int(model.arch_get("attention.shared_kv_layers", 0)) > 0:
            raise GGUFError(f"{model.path}: gemma4 KV-sharing layers are not supported by the reference")

    layers = []
    for il in range(n_layer):
        swa = is_swa[il]
        is_moe = arch == "qwen3moe" or (arch == "gemma4" and model.has(f"blk.{il}.ffn_gate_inp.weight"))
        layers.append(
            LayerSpec(
                index=il,
                is_swa=swa,
                n_head=n_head[il],
                n_head_kv=n_head_kv[il],
                head_dim=head_swa if swa else head_full,
                n_rot=rot_swa if swa else rot_full,
                rope_base=base_swa if swa else base_full,
                rope_scale=1.0 if swa else scale_full,
                is_moe=is_moe,
                n_ff=0 if arch == "qwen3moe" else n_ff[il],
                n_ff_exp=n_ff_exp[il],
                fused_gate_up=model.has(f"blk.{il}.ffn_gate_up_exps.weight"),
            )
        )
        if n_head[il] % max(n_head_kv[il], 1):
            raise GGUFError(f"{model.path}: layer {il}: {n_head[il]} heads not divisible by {n_head_kv[il]} KV heads")

    if any(layer.is_moe for layer in layers) and not (0 < n_expert_used <= n_expert):
        raise GGUFError(
            f"{model.path}: MoE model needs 0 < expert_used_count ({n_expert_used}) <= expert_count ({n_expert})"
        )

    embd = model.spec("token_embd.weight")
    if embd.shape[1] != n_embd:
        raise GGUFError(f"{model.path}: token_embd.weight has width {embd.shape[1]}, expected n_embd={n_embd}")

    config = ArchConfig(
        arch=arch,
        n_vocab=embd.shape[0],
        n_embd=n_embd,
        n_layer=n_layer,
        rms_eps=rms_eps,
        layers=tuple(layers),
        n_swa=n_swa,
        # Gemma 3 scales queries by 1/sqrt(head_dim) (27B: by 1/sqrt(n_embd/n_head)); Gemma 4 not at all.
        attn_scale=(
            1.0 if arch == "gemma4"
            else 1.0 / math.sqrt(n_embd / n_head[0]) if arch == "gemma3" and n_layer == 62
            else None
        ),
        embd_scale=math.sqrt(n_embd) if arch.startswith("gemma") else 1.0,
        n_expert=n_expert,
        n_expert_used=n_expert_used,
        expert_weights_scale=float(model.arch_get("expert_weights_scale", 0.0)) if arch != "qwen3moe" else 0.0,
        final_softcap=float(model.arch_get("final_logit_softcapping", 0.0)) if arch != "qwen3moe" else 0.0,
        ffn_act="silu" if arch == "qwen3moe" else "gelu",
        tied_output=not model.has("output.weight"),
    )
    missing = [name for name in required_tensors(config) if not model.has(name)]
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise GGUFError(f"{model.path}: {arch} model is missing tensor(s) {', '.join(missing[:5])}{more}")
    return config


def required_tensors(config: ArchConfig) -> list[str]:
    """Every tensor name the forward pass reads (optional ones excluded)."""
    names = ["token_embd.weight", "output_norm.weight"]
    if config.arch == "gemma4" and any(not layer.is_swa for layer in config.layers):
        names.append("rope_freqs.weight")
    for layer in config.layers:
        p = f"blk.{layer.index}."
        names += [p + n for n in ("attn_norm", "attn_q", "attn_k", "attn_output", "attn_q_norm", "attn_k_norm")]
        if config.arch != "gemma4":
            names.append(p + "attn_v")
        if config.arch.startswith("gemma"):
            names += [p + "post_attention_norm", p + "post_ffw_norm"]
        names.append(p + "ffn_norm")
        if layer.n_ff:
            names += [p + "ffn_gate", p + "ffn_up", p + "ffn_down"]
        if layer.is_moe:
            names += [p + "ffn_gate_inp", p + "ffn_down_exps"]
            if not layer.fused_gate_up:
                names += [p + "ffn_gate_exps", p + "ffn_up_exps"]
        if layer.is_moe and config.arch == "gemma4":
            names += [p + "ffn_gate_inp.scale", p + "pre_ffw_norm_2", p + "post_ffw_norm_1", p + "post_ffw_norm_2"]
    return [n if n.endswith((".weight", ".scale")) else n + ".weight" for n in names]
