"""Bytes one decode step must move through device memory: the roofline's numerator.

Counted from the plan, so it is exactly what the step reads: every dense weight matrix whole (GEMVs,
the LM head), one embedding row, only the routed experts' matrices, and the KV rows attention
visits at the given position (fp16 K and V, sliding windows honoured). Norm vectors and
activations are left out: under 1% on every basket model.
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf

from reference_runtime import quants
from reference_runtime.runtime.plan import WEIGHT_SUFFIX, DecodePlan

_QTYPE = {suffix: qt for qt, suffix in WEIGHT_SUFFIX.items()}


@dataclass(frozen=True)
class StepTraffic:
    weight_bytes: int
    kv_bytes: int

    @property
    def total(self) -> int:
        return self.weight_bytes + self.kv_bytes


def _matrix_bytes(qtype: gguf.GGMLQuantizationType, rows: int, cols: int) -> int:
    return quants.n_bytes_for(qtype, (rows, cols))


def step_traffic(plan: DecodePlan, position: int) -> StepTraffic:
    """Bytes read by the step that decodes ``position`` (0-based)."""
    weights = kv = 0
    for op in plan.ops:
        name, a = op.name, op.args
        if name.startswith("gemv_"):
            weights += _matrix_bytes(_QTYPE[name[5:]], a["n_rows"], a["n_cols"])
        elif name.startswith("lm_head_"):
            weights += _matrix_bytes(_QTYPE[name[8:]], a["n_vocab"], a["n_embd"])
        elif name.startswith("embed_"):
            weights += _matrix_bytes(_QTYPE[name[6:]], 1, a["n_embd"])
        elif name.startswith("moe_ffn_"):
            weights += a["n_expert_used"] * (a["stride_gate"] + a["stride_up"] + a["stride_down"])
        elif name.startswith("attn_decode"):
            length = min(position, a["n_ctx"] - 1) + 1
            if a["n_swa"] > 0:
                length = min(length, a["n_swa"])
            kv += 2 * length * a["n_head_kv"] * op.env["head_dim"] * 2
    return StepTraffic(weights, kv)
