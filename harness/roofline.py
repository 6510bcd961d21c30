"""The memory roofline of one decoded token: the bytes that must move, and the fastest time they can.

Decode at batch 1 is bandwidth-bound: every weight a token touches is read once, and attention reads
the KV cache of every position it can see. So the floor of a step's time is

    (active weight bytes + KV bytes read) / peak memory bandwidth

Active weights are every tensor a token reads in full, plus the routed fraction
(n_expert_used / n_expert) of each expert tensor, plus one embedding row (the whole embedding when
it doubles as the LM head). KV bytes count each layer's keys and values over the positions it sees:
all of them on global layers, at most the window on sliding ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from reference_runtime.arch import ArchConfig
from reference_runtime.gguf_model import GGUFModel


@dataclass(frozen=True)
class TokenBytes:
    weights: int
    kv: int

    @property
    def total(self) -> int:
        return self.weights + self.kv

    def seconds(self, peak_bytes_per_s: float) -> float:
        return self.total / peak_bytes_per_s


def active_weight_bytes(model: GGUFModel, cfg: ArchConfig) -> int:
    total = 0.0
    for name, spec in model.tensors.items():
        if name == "token_embd.weight":
            total += spec.n_bytes if cfg.tied_output else spec.n_bytes / cfg.n_vocab
        elif "_exps." in name and len(spec.shape) == 3:
            total += spec.n_bytes * cfg.n_expert_used / cfg.n_expert
        else:
            total += spec.n_bytes
    return round(total)


def kv_bytes(cfg: ArchConfig, context: int, bytes_per_element: int) -> int:
    total = 0
    for layer in cfg.layers:
        visible = min(context, cfg.n_swa) if layer.is_swa and cfg.n_swa else context
        total += 2 * layer.n_head_kv * layer.head_dim * visible * bytes_per_element
    return total


def token_bytes(model: GGUFModel, cfg: ArchConfig, context: int, kv_bytes_per_element: int = 4) -> TokenBytes:
    return TokenBytes(active_weight_bytes(model, cfg), kv_bytes(cfg, context, kv_bytes_per_element))


def headroom_closed(t_frontier: float, t_candidate: float, t_roofline: float) -> float:
    """Fraction of the frontier's distance to the roofline that the candidate removes (1: reached it)."""
    headroom = t_frontier - t_roofline
    if headroom <= 0:
        raise ValueError(f"frontier time {t_frontier} is at or below the roofline {t_roofline}: re-measure the peak")
    return (t_frontier - t_candidate) / headroom
