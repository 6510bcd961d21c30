"""Runs a :class:`DecodePlan` on the CPU with the NumPy slot oracles (:mod:`slot_math`).

This executes exactly the op list the GPU graph is captured from — same buffers, same order, same
scalars — so agreement with the fp64 reference checks the plan's wiring (which norm feeds which
projection, what aliases what, the cache layout) independently of any CUDA code. Activations are
float64 here; the KV cache is float16 as the ABI says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reference_runtime.gguf_model import GGUFModel
from reference_runtime.runtime import slot_math
from reference_runtime.runtime.abi import slot_abis
from reference_runtime.runtime.plan import WEIGHT_SUFFIX, Buf, DecodePlan, Null, Op

_QTYPE = {suffix: int(qt) for qt, suffix in WEIGHT_SUFFIX.items()}
_ABI_ITEMSIZE = {"float32": 4, "float16": 2, "int32": 4, "uint8": 1}


class Emulator:
    def __init__(self, model: GGUFModel, plan: DecodePlan) -> None:
        self.plan = plan
        self.mem: dict[str, np.ndarray] = {}
        self.itemsize: dict[str, int] = {}
        self._dense: dict[tuple[str, int, int, int, int], np.ndarray] = {}  # dequantized weights, by location
        for spec in plan.buffers.values():
            if spec.kind == "weight":
                array = np.asarray(model.raw(spec.name))
            elif spec.kind == "derived":
                array = plan.derived[spec.name].astype(np.float64)
            elif spec.dtype == "float32":
                array = np.full(spec.count, np.nan)  # poisoned: a read before any write shows
            else:
                array = np.zeros(spec.count, dtype=spec.dtype)
            self.mem[spec.name] = array
            self.itemsize[spec.name] = _ABI_ITEMSIZE[spec.dtype]

    def ptr(self, arg: Any, as_float: bool = False) -> np.ndarray | None:
        """The memory an argument points at; raw weight bytes read as float32 when the parameter is
        a float pointer (norm weights, RoPE frequency factors, expert scales)."""
        if isinstance(arg, Null):
            return None
        assert isinstance(arg, Buf)
        array = self.mem[arg.name][arg.offset // self.itemsize[arg.name] :]
        if as_float and array.dtype == np.uint8:
            return array.view("<f4").astype(np.float64)
        return array

    def matrix(self, arg: Buf, qtype: int, rows: int, cols: int) -> np.ndarray:
        key = (arg.name, arg.offset, qtype, rows, cols)
        if key not in self._dense:
            self._dense[key] = slot_math.dequant(qtype, self.mem[arg.name][arg.offset :], rows, cols)
        return self._dense[key]

    def step(self) -> None:
        for op in self.plan.ops:
            self.run(op)

    def teacher_forced(self, tokens: Sequence[int]) -> np.ndarray:
        """Logits [len(tokens), n_vocab] (float64) of each position, read back from the ring."""
        n = len(tokens)
        if n > self.plan.n_ctx:
            raise ValueError(f"{n} tokens exceed the cache capacity {self.plan.n_ctx}")
        self.mem["tokens"][:n] = tokens
        self.mem["counter"][0] = 0
        vocab, cap = self.plan.config.n_vocab, self.plan.history
        out = np.empty((n, vocab))
        for t in range(n):
            self.step()
            out[t] = self.mem["history"][(t % cap) * vocab : (t % cap + 1) * vocab]
        return out

    def run(self, op: Op) -> None:
        a, name = op.args, op.name
        floats = set() if op.internal else {q.name for q in slot_abis()[name].params if "float*" in q.ctype}

        def p(arg: Any) -> Any:
            return self.ptr(arg, as_float=any(arg is a[f] for f in floats))

        if name == "rt_prologue":
            c = int(p(a["counter"])[0])
            p(a["pos"])[0] = c
            p(a["token"])[0] = p(a["tokens"])[min(c, a["n_tokens"] - 1)]
            p(a["counter"])[0] = c + 1
        elif name == "rt_record":
            row = int(p(a["pos"])[0]) % a["capacity"]
            p(a["history"])[row * a["n_vocab"] : (row + 1) * a["n_vocab"]] = p(a["logits"])[: a["n_vocab"]]
        elif name == "rt_copy":
            n = a["nbytes"] // self.itemsize[a["dst"].name]
            p(a["dst"])[:n] = p(a["src"])[:n]
        elif name.startswith("gemv_"):
            w = self.matrix(a["w"], _QTYPE[name[5:]], a["n_rows"], a["n_cols"])
            p(a["y"])[: a["n_rows"]] = slot_math.gemv(w, p(a["x"]))
        elif name.startswith("lm_head_"):
            w = self.matrix(a["w"], _QTYPE[name[8:]], a["n_vocab"], a["n_embd"])
            p(a["logits"])[: a["n_vocab"]] = slot_math.lm_head(w, p(a["x"]), a["softcap"])
        elif name.startswith("embed_"):
            table = self.matrix(a["table"], _QTYPE[name[6:]], a["n_vocab"], a["n_embd"])
            p(a["out"])[: a["n_embd"]] = table[int(p(a["token"])[0])] * a["scale"]
        elif name == "rmsnorm":
            n = a["n_embd"]
            p(a["y"])[:n] = slot_math.rmsnorm(p(a["x"])[:n], p(a["w"])[:n], a["eps"])
        elif name == "rmsnorm_residual":
            n = a["n_embd"]
            h, y = slot_math.rmsnorm_residual(p(a["h"])[:n], p(a["x"])[:n], p(a["w"])[:n], a["eps"])
            p(a["h"])[:n], p(a["y"])[:n] = h, y
        elif name == "rmsnorm_post_add":
            n = a["n_embd"]
            p(a["h"])[:n] = slot_math.rmsnorm_post_add(p(a["h"])[:n], p(a["x"])[:n], p(a["w"])[:n], a["eps"],
                                                       a["out_scale"])
        elif name == "qk_norm_rope":
            hd = a["head_dim"]
            ff = p(a["freq_factors"])
            v = p(a["v"])
            q, k, vn = slot_math.qk_norm_rope(
                p(a["q"]), p(a["k"]), v, p(a["q_norm"])[:hd], p(a["k_norm"])[:hd],
                None if ff is None else ff[: a["n_rot"] // 2], int(p(a["pos"])[0]), a["n_head"], a["n_head_kv"],
                hd, a["n_rot"], a["freq_base"], a["freq_scale"], a["eps"])
            p(a["q"])[: q.size], p(a["k"])[: k.size] = q, k
            if vn is not None:
                p(a["v"])[: vn.size] = vn
        elif name == "kv_append":
            slot_math.kv_append(p(a["k"]), p(a["v"]), p(a["k_cache"]), p(a["v_cache"]), int(p(a["pos"])[0]),
                                a["n_head_kv"], a["head_dim"], a["n_ctx"])
        elif name.startswith("attn_decode"):
            hd = op.env["head_dim"]
            out = slot_math.attention(p(a["q"]), p(a["k_cache"]), p(a["v_cache"]), int(p(a["pos"])[0]), a["n_head"],
                                      a["n_head_kv"], hd, a["n_ctx"], a["n_swa"], a["scale"])
            p(a["out"])[: out.size] = out
        elif name.startswith("glu_"):
            n = a["n_ff"]
            p(a["y"])[:n] = slot_math.glu(name[4:], p(a["gate"])[:n], p(a["up"])[:n])
        elif name == "moe_router_topk":
            scale = p(a["expert_scale"])
            ids, w = slot_math.router_topk(p(a["logits"])[: a["n_expert"]], scale, a["n_expert_used"],
                                           a["weights_scale"])
            p(a["ids"])[: ids.size], p(a["weights"])[: w.size] = ids, w
        elif name.startswith("moe_ffn_"):
            k = a["n_expert_used"]
            ids = p(a["ids"])[:k]
            d, f = a["n_embd"], a["n_ff_exp"]
            experts = [
                tuple(self.matrix(Buf(a[w].name, a[w].offset + int(e) * a[stride]), a[kind], *shape)
                      for w, stride, kind, shape in (("w_gate", "stride_gate", "type_gate", (f, d)),
                                                     ("w_up", "stride_up", "type_up", (f, d)),
                                                     ("w_down", "stride_down", "type_down", (d, f))))
                for e in ids]
            out = slot_math.moe_ffn(name[8:], p(a["x"])[: a["n_embd"]], ids, p(a["weights"])[:k], experts)
            p(a["out"])[: a["n_embd"]] = out
        else:
            raise NotImplementedError(f"the emulator has no semantics for {name}")
