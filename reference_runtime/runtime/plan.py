"""The decode step of one model as data: buffers and an ordered list of slot calls.

A plan says *what* runs (which slot, on which buffers, with which shape symbols and scalars) and
nothing about *how*: the GPU runtime resolves it to kernel launches of whichever cubin serves each
slot, and :mod:`reference_runtime.runtime.emulate` runs the same plan with NumPy, which is how the
wiring is checked against the fp64 reference without a GPU. The step is self-driving: a prologue
reads the position and input token from device memory, a recorder stores the logits in a ring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import gguf
import numpy as np

from reference_runtime import slots as catalogue
from reference_runtime.arch import ArchConfig, LayerSpec, read_config
from reference_runtime.errors import DeviceTooSmall, ReferenceRuntimeError
from reference_runtime.gguf_model import GGUFModel
from reference_runtime.runtime.abi import slot_abis

QT = gguf.GGMLQuantizationType
WEIGHT_SUFFIX: Mapping[QT, str] = MappingProxyType(
    {QT.F32: "f32", QT.Q4_K: "q4_k", QT.Q5_0: "q5_0", QT.Q6_K: "q6_k", QT.Q8_0: "q8_0"}
)
# Runtime-internal kernels (kernels/runtime.cu) and their parameters: (name, dtype or "ptr").
INTERNAL: Mapping[str, tuple[tuple[str, str], ...]] = MappingProxyType({
    "rt_prologue": (("tokens", "ptr"), ("n_tokens", "int32"), ("counter", "ptr"), ("pos", "ptr"),
                    ("token", "ptr")),
    "rt_record": (("logits", "ptr"), ("history", "ptr"), ("pos", "ptr"), ("n_vocab", "int32"),
                  ("capacity", "int32")),
    "rt_copy": (("dst", "ptr"), ("src", "ptr"), ("nbytes", "int64")),
})


class PlanError(ReferenceRuntimeError):
    pass


@dataclass(frozen=True)
class Buf:
    """A pointer argument: the start of a named buffer plus a byte offset."""

    name: str
    offset: int = 0


@dataclass(frozen=True)
class Null:
    pass


NULL = Null()
Arg = Buf | Null | int | float


@dataclass(frozen=True)
class Op:
    name: str  # a slot of the catalogue, or an INTERNAL kernel
    label: str  # what it computes, for reports: "blk.3.attn_q"
    env: Mapping[str, int]  # the slot's shape symbols (n_sm is added by the runtime)
    args: Mapping[str, Arg]  # by parameter name, in the ABI's order

    @property
    def internal(self) -> bool:
        return self.name in INTERNAL


@dataclass(frozen=True)
class BufferSpec:
    name: str
    dtype: str  # numpy dtype of the elements ("uint8" for raw weight bytes)
    count: int
    kind: str  # weight | derived | activation | kv | state | history | scratch


@dataclass
class DecodePlan:
    config: ArchConfig
    n_ctx: int
    history: int  # rows of the logits ring
    buffers: dict[str, BufferSpec] = field(default_factory=dict)
    derived: dict[str, np.ndarray] = field(default_factory=dict)  # small host-computed f32 vectors
    ops: list[Op] = field(default_factory=list)

    def slots_used(self) -> list[str]:
        return sorted({op.name for op in self.ops if not op.internal})

    def working_bytes(self, runtimes: int = 2) -> int:
        """Device bytes besides the weights for ``runtimes`` runtimes sharing the working memory
        (``DecodeRuntime(share_from=)``), each with its own logits history; slot scratch is not
        counted (a manifest caps it)."""
        return sum(spec.count * np.dtype(spec.dtype).itemsize * (runtimes if spec.kind == "history" else 1)
                   for spec in self.buffers.values() if spec.kind != "weight")


# Beyond the plan's buffers: the CUDA context, cuBLAS/CuPy workspaces, pool fragmentation, slot scratch.
DEVICE_HEADROOM_BYTES = 1 << 30


def require_fits(plan: DecodePlan, weight_bytes: int, what: str, free_bytes: int, total_bytes: int) -> None:
    """Refuse (:class:`DeviceTooSmall`, naming the memory needed) an evaluation of ``plan``'s model
    (``weight_bytes`` of tensors, two runtimes) that cannot fit the GPU's free memory, before
    anything is loaded."""
    working = plan.working_bytes(runtimes=2)
    need = weight_bytes + working + DEVICE_HEADROOM_BYTES
    if need > free_bytes:
        gib = 1 << 30
        raise DeviceTooSmall(
            f"{what}: the evaluation needs {need / gib:.1f} GiB of GPU memory (weights {weight_bytes / gib:.1f} "
            f"GiB, KV cache and activations of two runtimes at n_ctx {plan.n_ctx} {working / gib:.1f} GiB, "
            f"{DEVICE_HEADROOM_BYTES / gib:.0f} GiB headroom); this GPU has {free_bytes / gib:.1f} GiB free of "
            f"{total_bytes / gib:.1f} GiB")


def weight_suffix(model: GGUFModel, name: str) -> str:
    qtype = model.spec(name).qtype
    if qtype not in WEIGHT_SUFFIX:
        raise PlanError(f"{model.path}: tensor {name} is {qtype.name}; the runtime has slots for "
                        f"{', '.join(t.name for t in WEIGHT_SUFFIX)} only")
    return WEIGHT_SUFFIX[qtype]


class _Builder:
    def __init__(self, model: GGUFModel, n_ctx: int, history: int) -> None:
        self.model = model
        self.cfg = read_config(model)
        self.plan = DecodePlan(self.cfg, n_ctx, history)
        self.abis = slot_abis()

    # -- buffers --------------------------------------------------------------------------------
    def buffer(self, name: str, dtype: str, count: int, kind: str) -> Buf:
        old = self.plan.buffers.get(name)
        if old is None or old.count < count:
            self.plan.buffers[name] = BufferSpec(name, dtype, count, kind)
        return Buf(name)

    def act(self, name: str, count: int) -> Buf:
        return self.buffer(name, "float32", count, "activation")

    def weight(self, name: str) -> Buf:
        spec = self.model.spec(name)
        return self.buffer(name, "uint8", spec.n_bytes, "weight")

    def derived(self, name: str, values: np.ndarray) -> Buf:
        self.plan.derived[name] = np.ascontiguousarray(values, dtype=np.float32)
        return self.buffer(name, "float32", values.size, "derived")

    def vector(self, name: str) -> np.ndarray:
        return np.asarray(self.model.dequantize(name), dtype=np.float64).reshape(-1)

    # -- ops ------------------------------------------------------------------------------------
    def op(self, name: str, label: str, env: dict[str, int], **args: Arg) -> None:
        if name in INTERNAL:
            order = [p for p, _ in INTERNAL[name]]
        else:
            slot = catalogue.SLOTS.get(name)
            if slot is None:
                raise PlanError(f"the step needs slot {name!r}, which the catalogue does not define")
            if set(env) != set(slot.symbols):
                raise PlanError(f"{label}: slot {name} takes symbols {sorted(slot.symbols)}, got {sorted(env)}")
            order = [p.name for p in self.abis[name].params]
        if set(args) != set(order):
            raise PlanError(f"{label}: {name} takes {order}, got {sorted(args)}")
        self.plan.ops.append(Op(name, label, MappingProxyType(dict(env)),
                                MappingProxyType({k: args[k] for k in order})))

    def gemv(self, tensor: str, x: Buf, y: Buf) -> None:
        rows, cols = self.model.spec(tensor).shape
        self.act(y.name, rows)
        self.op(f"gemv_{weight_suffix(self.model, tensor)}", tensor, {"n_rows": rows, "n_cols": cols},
                w=self.weight(tensor), x=x, y=y, n_rows=rows, n_cols=cols)

    def rmsnorm(self, x: Buf, w: Buf, y: Buf, label: str) -> None:
        n = self.cfg.n_embd
        self.op("rmsnorm", label, {"n_embd": n}, x=x, w=w, y=y, n_embd=n, eps=self.cfg.rms_eps)

    def post_add(self, h: Buf, x: Buf, w: Buf, label: str, out_scale: float = 1.0) -> None:
        n = self.cfg.n_embd
        self.op("rmsnorm_post_add", label, {"n_embd": n}, h=h, x=x, w=w, n_embd=n, eps=self.cfg.rms_eps,
                out_scale=out_scale)

    def residual(self, h: Buf, x: Buf, w: Buf, y: Buf, label: str) -> None:
        n = self.cfg.n_embd
        self.op("rmsnorm_residual", label, {"n_embd": n}, h=h, x=x, w=w, y=y, n_embd=n, eps=self.cfg.rms_eps)

    # -- the step -------------------------------------------------------------------------------
    def build(self) -> DecodePlan:
        cfg, plan = self.cfg, self.plan
        n = cfg.n_embd
        for name, dtype, count, kind in (("counter", "int32", 1, "state"), ("pos", "int32", 1, "state"),
                                         ("token", "int32", 1, "state"), ("tokens", "int32", plan.n_ctx, "state"),
                                         ("history", "float32", plan.history * cfg.n_vocab, "history")):
            self.buffer(name, dtype, count, kind)
        h, x = self.act("h", n), self.act("x", n)
        self.op("rt_prologue", "prologue", {}, tokens=Buf("tokens"), n_tokens=plan.n_ctx, counter=Buf("counter"),
                pos=Buf("pos"), token=Buf("token"))
        embd = "token_embd.weight"
        self.op(f"embed_{weight_suffix(self.model, embd)}", embd, {"n_embd": n, "n_vocab": cfg.n_vocab},
                table=self.weight(embd), token=Buf("token"), out=h, n_embd=n, n_vocab=cfg.n_vocab,
                scale=cfg.embd_scale)
        for layer in cfg.layers:
            if cfg.arch == "qwen3moe":
                self.qwen_layer(layer)
            else:
                self.gemma_layer(layer)
        if cfg.arch != "qwen3moe":
            self.rmsnorm(h, self.weight("output_norm.weight"), x, "output_norm")
        head = "token_embd.weight" if cfg.tied_output else "output.weight"
        logits = self.act("logits", cfg.n_vocab)
        self.op(f"lm_head_{weight_suffix(self.model, head)}", head, {"n_embd": n, "n_vocab": cfg.n_vocab},
                w=self.weight(head), x=x, logits=logits, n_vocab=cfg.n_vocab, n_embd=n, softcap=cfg.final_softcap)
        self.op("rt_record", "record", {"n_vocab": cfg.n_vocab}, logits=logits, history=Buf("history"), pos=Buf("pos"),
                n_vocab=cfg.n_vocab, capacity=plan.history)
        return plan

    def attention(self, layer: LayerSpec, x: Buf) -> Buf:
        """q/k/v projections, norms and RoPE, the cache append and attention; returns the output."""
        cfg, p, hd = self.cfg, f"blk.{layer.index}.", layer.head_dim
        q = self.act("q", layer.n_head * hd)
        k, v = self.act("k", layer.n_head_kv * hd), self.act("v", layer.n_head_kv * hd)
        self.gemv(p + "attn_q.weight", x, q)
        self.gemv(p + "attn_k.weight", x, k)
        if self.model.has(p + "attn_v.weight"):
            self.gemv(p + "attn_v.weight", x, v)
        else:  # Gemma 4 global layers: V is the raw K projection (normed below, without RoPE)
            self.op("rt_copy", p + "v=k", {"n_elements": layer.n_head_kv * hd}, dst=v, src=k,
                    nbytes=layer.n_head_kv * hd * 4)
        freq_factors: Buf | Null = NULL
        if cfg.arch == "gemma4" and not layer.is_swa:
            freq_factors = self.weight("rope_freqs.weight")
        self.op("qk_norm_rope", p + "qk_norm_rope",
                {"n_head": layer.n_head, "n_head_kv": layer.n_head_kv, "head_dim": hd, "n_rot": layer.n_rot},
                q=q, k=k, v=v if cfg.arch == "gemma4" else NULL, q_norm=self.weight(p + "attn_q_norm.weight"),
                k_norm=self.weight(p + "attn_k_norm.weight"), freq_factors=freq_factors, pos=Buf("pos"),
                n_head=layer.n_head, n_head_kv=layer.n_head_kv, head_dim=hd, n_rot=layer.n_rot,
                freq_base=layer.rope_base, freq_scale=layer.rope_scale, eps=cfg.rms_eps)
        kv_count = layer.n_head_kv * self.plan.n_ctx * hd
        kc = self.buffer(f"k_cache.{layer.index}", "float16", kv_count, "kv")
        vc = self.buffer(f"v_cache.{layer.index}", "float16", kv_count, "kv")
        self.op("kv_append", p + "kv_append", {"n_head_kv": layer.n_head_kv, "head_dim": hd, "n_ctx": self.plan.n_ctx},
                k=k, v=v, k_cache=kc, v_cache=vc, pos=Buf("pos"), n_head_kv=layer.n_head_kv, head_dim=hd,
                n_ctx=self.plan.n_ctx)
        slot = f"attn_decode{'_swa' if layer.is_swa else ''}_hd{hd}"
        env = {"n_head": layer.n_head, "n_head_kv": layer.n_head_kv, "head_dim": hd, "n_ctx": self.plan.n_ctx}
        if layer.is_swa:
            env["n_swa"] = cfg.n_swa
        out = self.act("attn", layer.n_head * hd)
        scale = cfg.attn_scale if cfg.attn_scale is not None else 1.0 / math.sqrt(hd)
        self.op(slot, p + "attention", env, q=q, k_cache=kc, v_cache=vc, out=out, scratch=Buf("scratch"),
                pos=Buf("pos"), n_head=layer.n_head, n_head_kv=layer.n_head_kv, n_ctx=self.plan.n_ctx,
                n_swa=cfg.n_swa if layer.is_swa else 0, scale=scale)
        o = self.act("o", cfg.n_embd)
        self.gemv(p + "attn_output.weight", out, o)
        return o

    def moe(self, layer: LayerSpec, x: Buf, router_in: Buf, out: Buf, expert_scale: Buf | Null) -> None:
        cfg, p = self.cfg, f"blk.{layer.index}."
        router = self.act("router", cfg.n_expert)
        self.gemv(p + "ffn_gate_inp.weight", router_in, router)
        ids = self.buffer("ids", "int32", cfg.n_expert_used, "activation")
        weights = self.act("weights", cfg.n_expert_used)
        self.op("moe_router_topk", p + "router", {"n_expert": cfg.n_expert, "n_expert_used": cfg.n_expert_used},
                logits=router, ids=ids, weights=weights, expert_scale=expert_scale, n_expert=cfg.n_expert,
                n_expert_used=cfg.n_expert_used, weights_scale=cfg.expert_weights_scale)
        if layer.fused_gate_up:
            fused = p + "ffn_gate_up_exps.weight"
            gate = up = fused
            row = self.model.spec(fused).n_bytes // (cfg.n_expert * 2 * layer.n_ff_exp)
            gate_buf, up_buf = self.weight(fused), Buf(fused, layer.n_ff_exp * row)
        else:
            gate, up = p + "ffn_gate_exps.weight", p + "ffn_up_exps.weight"
            gate_buf, up_buf = self.weight(gate), self.weight(up)
        down = p + "ffn_down_exps.weight"
        kind = "swiglu" if cfg.ffn_act == "silu" else "geglu"
        self.op(f"moe_ffn_{kind}", p + "experts",
                {"n_embd": cfg.n_embd, "n_expert": cfg.n_expert, "n_expert_used": cfg.n_expert_used,
                 "n_ff_exp": layer.n_ff_exp},
                x=x, ids=ids, weights=weights, w_gate=gate_buf, w_up=up_buf, w_down=self.weight(down),
                stride_gate=self.model.spec(gate).n_bytes // cfg.n_expert,
                stride_up=self.model.spec(up).n_bytes // cfg.n_expert,
                stride_down=self.model.spec(down).n_bytes // cfg.n_expert,
                type_gate=int(self.model.spec(gate).qtype), type_up=int(self.model.spec(up).qtype),
                type_down=int(self.model.spec(down).qtype), out=out, scratch=Buf("scratch"), n_embd=cfg.n_embd,
                n_ff_exp=layer.n_ff_exp, n_expert=cfg.n_expert, n_expert_used=cfg.n_expert_used)

    def qwen_layer(self, layer: LayerSpec) -> None:
        cfg, p = self.cfg, f"blk.{layer.index}."
        h, x = Buf("h"), Buf("x")
        if layer.index == 0:
            self.rmsnorm(h, self.weight(p + "attn_norm.weight"), x, p + "attn_norm")
        o = self.attention(layer, x)
        self.residual(h, o, self.weight(p + "ffn_norm.weight"), x, p + "ffn_norm")
        moe = self.act("moe", cfg.n_embd)
        self.moe(layer, x, x, moe, NULL)
        last = layer.index == cfg.n_layer - 1
        # The residual add of the experts' output is fused with the next norm (the next layer's
        # attention norm, or the output norm after the last layer).
        nxt = "output_norm.weight" if last else f"blk.{layer.index + 1}.attn_norm.weight"
        self.residual(h, moe, self.weight(nxt), x, nxt.removesuffix(".weight"))

    def gemma_layer(self, layer: LayerSpec) -> None:
        p, n = f"blk.{layer.index}.", self.cfg.n_embd
        h, x = Buf("h"), Buf("x")
        self.rmsnorm(h, self.weight(p + "attn_norm.weight"), x, p + "attn_norm")
        o = self.attention(layer, x)
        self.post_add(h, o, self.weight(p + "post_attention_norm.weight"), p + "post_attention_norm")
        out_scale = 1.0
        if self.model.has(p + "layer_output_scale.weight"):
            out_scale = float(np.float32(self.vector(p + "layer_output_scale.weight")[0]))
        # The dense FFN: Gemma 3's only FFN, Gemma 4's shared expert beside the routed ones.
        self.rmsnorm(h, self.weight(p + "ffn_norm.weight"), x, p + "ffn_norm")
        gate, up, act = (self.act(b, layer.n_ff) for b in ("gate", "up", "act"))
        down = self.act("down", n)
        self.gemv(p + "ffn_gate.weight", x, gate)
        self.gemv(p + "ffn_up.weight", x, up)
        self.op("glu_geglu", p + "glu", {"n_ff": layer.n_ff}, gate=gate, up=up, y=act, n_ff=layer.n_ff)
        self.gemv(p + "ffn_down.weight", act, down)
        if not layer.is_moe:
            self.post_add(h, down, self.weight(p + "post_ffw_norm.weight"), p + "post_ffw_norm", out_scale)
            return
        ffn = self.act("ffn", n)
        self.rmsnorm(down, self.weight(p + "post_ffw_norm_1.weight"), ffn, p + "post_ffw_norm_1")
        # Router input: rms_norm(h) / sqrt(n_embd) * ffn_gate_inp.scale, one weighted norm.
        router_w = self.derived(p + "router_norm", self.vector(p + "ffn_gate_inp.scale") / math.sqrt(n))
        xr = self.act("xr", n)
        self.rmsnorm(h, router_w, xr, p + "router_norm")
        self.rmsnorm(h, self.weight(p + "pre_ffw_norm_2.weight"), x, p + "pre_ffw_norm_2")
        scale_name = p + "ffn_down_exps.scale"
        expert_scale = self.weight(scale_name) if self.model.has(scale_name) else NULL
        moe = self.act("moe", n)
        self.moe(layer, x, xr, moe, expert_scale)
        self.post_add(ffn, moe, self.weight(p + "post_ffw_norm_2.weight"), p + "post_ffw_norm_2")
        self.post_add(h, ffn, self.weight(p + "post_ffw_norm.weight"), p + "post_ffw_norm", out_scale)


def build_plan(model: GGUFModel, n_ctx: int, history: int = 256) -> DecodePlan:
    """The decode step of ``model`` with a KV cache of ``n_ctx`` positions and a ring of ``history``
    logits rows."""
    if n_ctx < 1 or history < 1:
        raise PlanError(f"n_ctx ({n_ctx}) and history ({history}) must be positive")
    return _Builder(model, n_ctx, history).build()
