"""Each baseline slot kernel against its NumPy oracle (slot_math) on hand-picked shapes, through the
kernel gates' machinery (harness/kernel_gates/): launched exactly as the runtime launches them,
outputs poisoned (NaN) so an unwritten element fails, guard bands around every buffer, const inputs
checked unchanged, embed and kv_append exact.

The bar here is the baseline's own precision, tighter than the policy's gate tolerances (the gates'
own GPU tests, with fuzzed shapes at the policy's limits, are in test_kernel_gates_gpu.py).
Run with ``-s`` to see each slot's worst error."""

from __future__ import annotations

import math

import gguf
import pytest

from harness import kernel_gates as kg
from reference_runtime import slots as catalogue

pytestmark = pytest.mark.gpu

QT = gguf.GGMLQuantizationType
SEED = 7
# Relative errors (per head for attention and RoPE); embed and kv_append are exact regardless.
BASELINE_TOLERANCES = {"gemv": 2e-6, "norm": 1e-6, "rope": 1e-6, "attention": 2e-5, "glu": 1e-6, "router": 1e-5,
                       "moe": 2e-6}


def shape(env: dict[str, int], scalars: dict[str, float] | None = None, nulls: tuple[str, ...] = (),
          points: tuple[int, ...] = ()) -> kg.FixedShape:
    return kg.FixedShape.make("hand-picked", env, scalars, nulls, points)


SHAPES: dict[str, list[kg.FixedShape]] = {}
for _suffix in catalogue.WEIGHT_TYPES:
    SHAPES[f"gemv_{_suffix}"] = [shape({"n_rows": r, "n_cols": c}) for r, c in ((37, 512), (8, 768))]
    SHAPES[f"lm_head_{_suffix}"] = [shape({"n_vocab": r, "n_embd": c}, {"softcap": 3.0}) for r, c in ((37, 512),
                                                                                                       (8, 768))]
    SHAPES[f"embed_{_suffix}"] = [shape({"n_vocab": 11, "n_embd": 512}, {"scale": s}, points=(t,))
                                  for t, s in ((9, 1.0), (3, 16.0))]
SHAPES["rmsnorm"] = [shape({"n_embd": 1280}, {"eps": 1e-6, "alias": a}) for a in (0, 1)]  # y may alias x
SHAPES["rmsnorm_residual"] = [shape({"n_embd": 1280}, {"eps": 1e-6})]
SHAPES["rmsnorm_post_add"] = [shape({"n_embd": 1280}, {"eps": 1e-6, "out_scale": 0.75})]
SHAPES["qk_norm_rope"] = [shape({"n_head": 4, "n_head_kv": 2, "head_dim": 256, "n_rot": 128},
                                {"freq_base": 1e6, "freq_scale": 0.5, "eps": 1e-6}, nulls, (12345,))
                          for nulls in ((), ("v", "freq_factors"))]
SHAPES["kv_append"] = [shape({"n_head_kv": 2, "head_dim": 128, "n_ctx": 50}, points=(33, 50))]
ATTN_CASES = [
    ("attn_decode_hd128", 8, 2, 0),
    ("attn_decode_hd128", 16, 1, 0),  # a 16-head group: two passes of 8 heads
    ("attn_decode_hd256", 4, 1, 0),
    ("attn_decode_swa_hd256", 4, 2, 100),
    ("attn_decode_hd512", 4, 1, 0),
    ("attn_decode_hd512", 6, 2, 0),  # groups of 3: one head per pass
]
for _slot, _n_head, _n_head_kv, _n_swa in ATTN_CASES:
    _hd = catalogue.SLOTS[_slot].fixed["head_dim"]
    _env = {"n_head": _n_head, "n_head_kv": _n_head_kv, "head_dim": _hd, "n_ctx": 5000} | (
        {"n_swa": _n_swa} if _n_swa else {})
    SHAPES.setdefault(_slot, []).append(shape(_env, {"scale": 1 / math.sqrt(_hd)}, points=(0, 63, 700, 4999)))
SHAPES["glu_swiglu"] = SHAPES["glu_geglu"] = [shape({"n_ff": 2048 + 4})]
SHAPES["moe_router_topk"] = [shape({"n_expert": e, "n_expert_used": k}, {"weights_scale": 2.5})
                             for e, k in ((32, 8), (128, 8), (16, 4))]
SHAPES["moe_ffn_swiglu"] = [shape({"n_embd": 256, "n_ff_exp": 512, "n_expert": 6, "n_expert_used": 3},
                                  {"type_gate": int(QT.Q4_K), "type_up": int(QT.Q4_K), "type_down": int(QT.Q6_K)})]
SHAPES["moe_ffn_geglu"] = [shape({"n_embd": 256, "n_ff_exp": 512, "n_expert": 6, "n_expert_used": 3},
                                 {"type_gate": int(QT.Q8_0), "type_up": int(QT.Q5_0), "type_down": int(QT.Q4_K)})]


@pytest.fixture(scope="module")
def base() -> dict:
    from reference_runtime.runtime.decode import device_arch
    from reference_runtime.runtime.kernels import baseline_kernels

    return baseline_kernels(device_arch())


def test_every_slot_has_hand_picked_shapes() -> None:
    assert set(SHAPES) == set(catalogue.SLOTS)


@pytest.mark.parametrize("slot", sorted(SHAPES))
def test_baseline_kernel_matches_its_oracle(base: dict, slot: str) -> None:
    gate = kg.check_slot(slot, base[slot], kg.cases(slot, SHAPES[slot], SEED, 0), BASELINE_TOLERANCES)
    print(f"{gate.name:32s} {gate.value:.3g} (bar {gate.limit:.3g}) {gate.detail}")
    assert gate.passed, gate
