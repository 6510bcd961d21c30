"""The kernel-slot catalogue: the Python side of the slot ABI.

Every op of a decode step (qwen3moe, gemma3, gemma4) is a named *slot*. A contributor's manifest
overrides any subset of them with its own cubins; the manifest validator checks each override
against this table (the slot exists, its launch geometry only uses the slot's shape symbols).

This table is the contract the GPU runtime fills in: the runtime's C header gives each slot its
argument list, dtypes, layouts and aliasing rules, and ``Slot.signature`` should then carry that
prototype verbatim. To add a slot, append a :class:`Slot` to ``_CATALOGUE`` (or a weight type to
``WEIGHT_TYPES`` for the per-type families); :func:`_index` rejects duplicates and unknown symbols
at import time, so a typo fails every test at once instead of one manifest in production.

Rules every slot shares (the runtime enforces them; they are listed here so manifests can rely on
them):

* **CUDA-graph safe.** Shape symbols are capture-time constants: launch geometry is evaluated once
  per captured graph, never per token. The current position / sequence length lives in device
  memory (``n_ctx`` is the KV capacity, not the current length); kernels read it and exit early.
  No host synchronisation, no allocation inside a slot.
* **Sync-free MoE.** Routed expert ids, weights and counts stay on the device.
* **Alignment.** Every pointer argument is at least :data:`POINTER_ALIGN` bytes aligned; scratch
  buffers are :data:`SCRATCH_ALIGN` bytes aligned and their contents are undefined (poisoned) on
  entry.
* **Scratch.** A slot that needs temporary device memory declares ``scratch_bytes`` in its
  manifest entry as an expression of its shape symbols; the runtime allocates it once per graph.
* **Arguments.** ``signature`` is the slot's parameter list, verbatim from the runtime's header
  ``reference_runtime/cuda/evalbot_slots.h`` (macro ``EVALBOT_*_ARGS``); every launch of a
  multi-launch slot receives that same full argument list, in order, on one stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

# Bumped whenever a slot's meaning changes incompatibly (renamed, symbols removed, semantics).
ABI_VERSION = 0

POINTER_ALIGN = 16
SCRATCH_ALIGN = 256

# Symbols launch geometry may use; each slot lists the subset that is meaningful for it.
SYMBOLS: Mapping[str, str] = MappingProxyType({
    "n_embd": "model width (hidden size)",
    "n_vocab": "vocabulary size",
    "n_rows": "GEMV output length (rows of the weight matrix)",
    "n_cols": "GEMV input length (columns of the weight matrix, in elements)",
    "n_head": "query heads",
    "n_head_kv": "key/value heads (GQA: n_head is a multiple of it)",
    "head_dim": "elements per attention head",
    "n_rot": "rotated elements per head (RoPE width; <= head_dim)",
    "n_ctx": "KV-cache capacity in positions (not the current length, which is on the device)",
    "n_swa": "sliding-window length in positions",
    "n_expert": "experts per MoE layer",
    "n_expert_used": "experts routed per token (top-k)",
    "n_ff": "dense or shared-expert FFN width",
    "n_ff_exp": "per-expert FFN width",
    "n_sm": "streaming multiprocessors on the GPU (for split-K and persistent kernels)",
})

# Symbols every slot may use whatever it computes.
UNIVERSAL_SYMBOLS: tuple[str, ...] = ("n_sm",)

# GGML weight types with their (elements, bytes) per quantisation block; rows of a quantised
# weight are whole blocks, so a slot's n_cols is always a multiple of the block's elements.
WEIGHT_TYPES: Mapping[str, tuple[int, int]] = MappingProxyType({
    "q4_k": (256, 144),
    "q5_0": (32, 22),
    "q6_k": (256, 210),
    "q8_0": (32, 34),
    "f32": (1, 4),
})

ARCHS: tuple[str, ...] = ("qwen3moe", "gemma3", "gemma4")

# Representative shapes per architecture. The manifest validator evaluates every launch expression
# against these (with each slot's ``fixed`` values on top) to catch division by zero, empty grids
# and oversized blocks before a build; they are sanity probes, not the basket's exact shapes.
EXAMPLE_SHAPES: Mapping[str, Mapping[str, int]] = MappingProxyType({
    "qwen3moe": MappingProxyType({
        "n_embd": 2048, "n_vocab": 151936, "n_head": 32, "n_head_kv": 4, "head_dim": 128,
        "n_rot": 128, "n_ctx": 16384, "n_swa": 0, "n_expert": 128, "n_expert_used": 8,
        "n_ff": 6144, "n_ff_exp": 768, "n_rows": 4096, "n_cols": 2048, "n_sm": 132,
    }),
    "gemma3": MappingProxyType({
        "n_embd": 640, "n_vocab": 262144, "n_head": 4, "n_head_kv": 1, "head_dim": 256,
        "n_rot": 256, "n_ctx": 16384, "n_swa": 512, "n_expert": 0, "n_expert_used": 0,
        "n_ff": 2048, "n_ff_exp": 0, "n_rows": 2048, "n_cols": 640, "n_sm": 132,
    }),
    "gemma4": MappingProxyType({
        "n_embd": 2816, "n_vocab": 262144, "n_head": 16, "n_head_kv": 8, "head_dim": 256,
        "n_rot": 256, "n_ctx": 16384, "n_swa": 1024, "n_expert": 128, "n_expert_used": 8,
        "n_ff": 2112, "n_ff_exp": 704, "n_rows": 4096, "n_cols": 2816, "n_sm": 132,
    }),
})


@dataclass(frozen=True)
class Slot:
    """One replaceable op. ``signature`` is empty until the runtime's C header defines it."""

    name: str
    summary: str
    symbols: tuple[str, ...]
    archs: tuple[str, ...]
    # Symbols the slot pins (the head_dim of a head-size-specialised attention slot).
    fixed: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    # Kernels the slot may chain in order (split-K attention: partial pass, then combine).
    max_launches: int = 1
    scratch: str = "none"
    notes: str = ""
    signature: str = ""

    @property
    def all_symbols(self) -> frozenset[str]:
        return frozenset(self.symbols) | frozenset(UNIVERSAL_SYMBOLS)

    def example_shapes(self) -> list[dict[str, int]]:
        """Probe values for this slot's symbols: one set per architecture that uses it."""
        return [{**EXAMPLE_SHAPES[arch], **self.fixed} for arch in self.archs]

# Parameter lists, verbatim from reference_runtime/cuda/evalbot_slots.h (a test keeps them equal).
_SIG_GEMV = "const void* __restrict__ w, const float* __restrict__ x, float* __restrict__ y, int n_rows, int n_cols"
_SIG_EMBED = ("const void* __restrict__ table, const int* __restrict__ token, float* __restrict__ out, int n_embd, "
              "int n_vocab, float scale")
_SIG_LM_HEAD = ("const void* __restrict__ w, const float* __restrict__ x, float* __restrict__ logits, int n_vocab, "
                "int n_embd, float softcap")
_SIG_RMSNORM = "const float* x, const float* __restrict__ w, float* y, int n_embd, float eps"
_SIG_RMSNORM_RESIDUAL = ("float* __restrict__ h, const float* __restrict__ x, const float* __restrict__ w, "
                         "float* __restrict__ y, int n_embd, float eps")
_SIG_RMSNORM_POST_ADD = ("float* __restrict__ h, float* __restrict__ x, const float* __restrict__ w, int n_embd, "
                         "float eps, float out_scale")
_SIG_QK_NORM_ROPE = ("float* __restrict__ q, float* __restrict__ k, float* __restrict__ v, "
                     "const float* __restrict__ q_norm, const float* __restrict__ k_norm, "
                     "const float* __restrict__ freq_factors, const int* __restrict__ pos, int n_head, int n_head_kv, "
                     "int head_dim, int n_rot, float freq_base, float freq_scale, float eps")
_SIG_KV_APPEND = ("const float* __restrict__ k, const float* __restrict__ v, __half* __restrict__ k_cache, "
                  "__half* __restrict__ v_cache, const int* __restrict__ pos, int n_head_kv, int head_dim, int n_ctx")
_SIG_ATTN = ("const float* __restrict__ q, const __half* __restrict__ k_cache, const __half* __restrict__ v_cache, "
             "float* __restrict__ out, void* __restrict__ scratch, const int* __restrict__ pos, int n_head, "
             "int n_head_kv, int n_ctx, int n_swa, float scale")
_SIG_GLU = "const float* __restrict__ gate, const float* __restrict__ up, float* __restrict__ y, int n_ff"
_SIG_MOE_ROUTER = ("const float* __restrict__ logits, int* __restrict__ ids, float* __restrict__ weights, "
                   "const float* __restrict__ expert_scale, int n_expert, int n_expert_used, float weights_scale")
_SIG_MOE_FFN = ("const float* __restrict__ x, const int* __restrict__ ids, const float* __restrict__ weights, "
                "const void* __restrict__ w_gate, const void* __restrict__ w_up, const void* __restrict__ w_down, "
                "long long stride_gate, long long stride_up, long long stride_down, int type_gate, int type_up, "
                "int type_down, float* __restrict__ out, void* __restrict__ scratch, int n_embd, int n_ff_exp, "
                "int n_expert, int n_expert_used")


def _fixed(**values: int) -> Mapping[str, int]:
    return MappingProxyType(values)


def _per_weight_type() -> list[Slot]:
    slots = []
    for wtype, (block, nbytes) in WEIGHT_TYPES.items():
        layout = f"rows of {block}-element blocks of {nbytes} bytes" if block > 1 else "plain f32 rows"
        slots += [
            Slot(f"gemv_{wtype}", f"y[n_rows] = W[n_rows, n_cols] · x[n_cols], W in {wtype}",
                 ("n_rows", "n_cols"), ARCHS,
                 notes=f"W is {layout}, row-major; x and y are f32; n_cols % {block} == 0. "
                       "Used for every dense projection (attention q/k/v/o, dense FFN, router logits).",
                 signature=_SIG_GEMV),
            Slot(f"embed_{wtype}", f"token embedding lookup from a {wtype} table, scaled, to f32",
                 ("n_embd", "n_vocab"), ARCHS,
                 notes="The token id is read from device memory (graph-safe); the scale (sqrt(n_embd) "
                       "on Gemma, 1 elsewhere) is an argument.",
                 signature=_SIG_EMBED),
            Slot(f"lm_head_{wtype}", f"logits[n_vocab] = W_out[n_vocab, n_embd] · x, W_out in {wtype}",
                 ("n_embd", "n_vocab"), ARCHS,
                 notes="Optional final logit soft-capping (Gemma) is an argument: cap * tanh(z / cap).",
                 signature=_SIG_LM_HEAD),
        ]
    return slots


def _attention(head_dim: int, sliding: bool, archs: tuple[str, ...]) -> Slot:
    kind = "sliding-window" if sliding else "full"
    return Slot(
        f"attn_decode{'_swa' if sliding else ''}_hd{head_dim}",
        f"single-token GQA decode attention over the KV cache, {kind}, head_dim {head_dim}",
        ("n_head", "n_head_kv", "head_dim", "n_ctx", *(("n_swa",) if sliding else ())),
        archs,
        fixed=_fixed(head_dim=head_dim),
        max_launches=2,
        scratch="split-K partials: per (head, split) the running max, the softmax denominator and "
                "head_dim f32 accumulators; size them for the largest split count the grid can use",
        notes="The current length is read from device memory; a split-K grid is sized from n_ctx and "
              "idle splits exit early. The combine launch (if any) must not depend on host data."
              + (" Only the last n_swa positions are attended." if sliding else ""),
        signature=_SIG_ATTN,
    )


_CATALOGUE: tuple[Slot, ...] = (
    *_per_weight_type(),
    Slot("rmsnorm", "y = x / rms(x) * w over n_embd elements", ("n_embd",), ARCHS,
         notes="x, w, y f32; y may alias x. Gemma's (1 + w) convention is folded into w by the loader.",
         signature=_SIG_RMSNORM),
    Slot("rmsnorm_residual", "h += x; y = rmsnorm(h) * w (fused residual add then norm)", ("n_embd",), ARCHS,
         notes="h is the residual stream, updated in place; y must not alias h.",
         signature=_SIG_RMSNORM_RESIDUAL),
    Slot("rmsnorm_post_add", "h = (h + rmsnorm(x) * w) * out_scale (Gemma post-attention / post-FFN norm)",
         ("n_embd",), ("gemma3", "gemma4"),
         notes="x may be clobbered; h is updated in place; out_scale is Gemma 4's layer_output_scale on a "
               "layer's last add, 1 elsewhere.",
         signature=_SIG_RMSNORM_POST_ADD),
    Slot("qk_norm_rope", "per-head RMSNorm of q and k, then NeoX RoPE at the device-side position",
         ("n_head", "n_head_kv", "head_dim", "n_rot"), ARCHS,
         notes="q [n_head, head_dim] and k [n_head_kv, head_dim] f32, in place. RoPE base and scale are "
               "per-layer arguments (Gemma alternates bases between sliding and global layers); optional "
               "per-pair frequency divisors (Gemma 4 proportional RoPE). When v is not NULL (Gemma 4) it is "
               "RMS-normed in place without a weight and not rotated.",
         signature=_SIG_QK_NORM_ROPE),
    Slot("kv_append", "write this position's k and v into the KV cache",
         ("n_head_kv", "head_dim", "n_ctx"), ARCHS,
         notes="fp16 caches [n_head_kv][n_ctx][head_dim] per layer (the header's KV CACHE section); "
               "position p at index p on every layer, sliding-window layers included; the position is "
               "read from device memory.",
         signature=_SIG_KV_APPEND),
    _attention(128, False, ("qwen3moe",)),
    _attention(256, False, ("gemma3",)),
    _attention(256, True, ("gemma3", "gemma4")),
    _attention(512, False, ("gemma4",)),
    Slot("glu_swiglu", "y = silu(gate) * up over n_ff elements", ("n_ff",), ("qwen3moe",), signature=_SIG_GLU),
    Slot("glu_geglu", "y = gelu_tanh(gate) * up over n_ff elements", ("n_ff",), ("gemma3", "gemma4"),
         signature=_SIG_GLU),
    Slot("moe_router_topk", "softmax/top-k over router logits into device-side expert ids and weights",
         ("n_expert", "n_expert_used"), ("qwen3moe", "gemma4"),
         notes="Writes n_expert_used ids (int32) and weights (f32, renormalised as the architecture "
               "requires, times Gemma 4's per-expert output scale when given); nothing returns to the host.",
         signature=_SIG_MOE_ROUTER),
    Slot("moe_ffn_swiglu", "fused routed-expert FFN: down(silu(gate x) * up x), weighted sum over experts",
         ("n_embd", "n_expert", "n_expert_used", "n_ff_exp"), ("qwen3moe",),
         max_launches=3,
         scratch="optional: the [n_expert_used, n_ff_exp] f32 activations between the gate/up and down "
                 "launches",
         notes="Expert ids and weights come from moe_router_topk on the device. Expert weight types and "
               "per-expert byte strides are arguments (types differ between gate/up and down in K-quant "
               "mixes).",
         signature=_SIG_MOE_FFN),
    Slot("moe_ffn_geglu", "fused routed-expert FFN with GeGLU, weighted sum over experts",
         ("n_embd", "n_expert", "n_expert_used", "n_ff_exp"), ("gemma4",),
         max_launches=3,
         scratch="optional: the [n_expert_used, n_ff_exp] f32 activations between launches",
         notes="As moe_ffn_swiglu, with the tanh-approximated GELU.",
         signature=_SIG_MOE_FFN),
)


def _index(slots: Iterable[Slot]) -> Mapping[str, Slot]:
    table: dict[str, Slot] = {}
    for slot in slots:
        if slot.name in table:
            raise ValueError(f"slot {slot.name!r} is defined twice")
        unknown = (set(slot.symbols) | set(slot.fixed)) - set(SYMBOLS)
        if unknown:
            raise ValueError(f"slot {slot.name!r} uses undefined symbols {sorted(unknown)}")
        if not set(slot.fixed) <= set(slot.symbols):
            raise ValueError(f"slot {slot.name!r} fixes symbols it does not list")
        if bad_arch := set(slot.archs) - set(ARCHS):
            raise ValueError(f"slot {slot.name!r} names unknown architectures {sorted(bad_arch)}")
        if slot.max_launches < 1:
            raise ValueError(f"slot {slot.name!r} must allow at least one launch")
        table[slot.name] = slot
    return MappingProxyType(table)


SLOTS: Mapping[str, Slot] = _index(_CATALOGUE)
