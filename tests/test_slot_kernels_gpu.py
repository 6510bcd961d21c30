"""Each baseline slot kernel against its NumPy oracle (slot_math) on random inputs, launched exactly
as the runtime launches it. Outputs start poisoned (NaN), so an unwritten element fails."""

from __future__ import annotations

import math

import gguf
import numpy as np
import pytest

from reference_runtime import quants
from reference_runtime.runtime import slot_math
from tests.runtime_support import random_blocks

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")

QT = gguf.GGMLQuantizationType
TYPES = {"q4_k": QT.Q4_K, "q5_0": QT.Q5_0, "q6_k": QT.Q6_K, "q8_0": QT.Q8_0, "f32": QT.F32}


@pytest.fixture(scope="module")
def base() -> dict:
    from reference_runtime.runtime.decode import device_arch
    from reference_runtime.runtime.kernels import baseline_kernels

    return baseline_kernels(device_arch())


@pytest.fixture(scope="module")
def n_sm() -> int:
    from reference_runtime.runtime.decode import device_sm_count

    return device_sm_count()


def run(base: dict, slot: str, env: dict, n_sm: int, **args: object) -> None:
    from reference_runtime.runtime.launch import run_slot

    run_slot(slot, base[slot], {**env, "n_sm": n_sm}, args)
    cupy.cuda.Device().synchronize()


def poisoned(n: int, dtype: object = cupy.float32) -> object:
    return cupy.full(n, np.nan, dtype=dtype)


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want))


@pytest.mark.parametrize("suffix", sorted(TYPES))
@pytest.mark.parametrize("rows,cols", [(37, 512), (8, 768)])
def test_gemv_and_lm_head(base: dict, n_sm: int, suffix: str, rows: int, cols: int) -> None:
    rng = np.random.default_rng(rows * cols)
    raw = random_blocks(TYPES[suffix], rows, cols, rng)
    x = rng.standard_normal(cols).astype(np.float32)
    w = slot_math.dequant(int(TYPES[suffix]), raw, rows, cols)
    y = poisoned(rows)
    run(base, f"gemv_{suffix}", {"n_rows": rows, "n_cols": cols}, n_sm, w=cupy.asarray(raw), x=cupy.asarray(x), y=y,
        n_rows=rows, n_cols=cols)
    assert rel_err(y.get(), slot_math.gemv(w, x)) < 2e-6
    logits = poisoned(rows)
    run(base, f"lm_head_{suffix}", {"n_vocab": rows, "n_embd": cols}, n_sm, w=cupy.asarray(raw), x=cupy.asarray(x),
        logits=logits, n_vocab=rows, n_embd=cols, softcap=3.0)
    assert rel_err(logits.get(), slot_math.lm_head(w, x, 3.0)) < 2e-6


@pytest.mark.parametrize("suffix", sorted(TYPES))
def test_embed_dequantizes_bit_exactly(base: dict, n_sm: int, suffix: str) -> None:
    rng = np.random.default_rng(7)
    n_vocab, n_embd = 11, 512
    raw = random_blocks(TYPES[suffix], n_vocab, n_embd, rng)
    table = quants.dequantize(raw, TYPES[suffix], (n_vocab, n_embd))
    for token, scale in ((9, 1.0), (3, 16.0)):
        out = poisoned(n_embd)
        run(base, f"embed_{suffix}", {"n_embd": n_embd, "n_vocab": n_vocab}, n_sm, table=cupy.asarray(raw),
            token=cupy.asarray([token], dtype=cupy.int32), out=out, n_embd=n_embd, n_vocab=n_vocab, scale=scale)
        want = table[token].astype(np.float32) * np.float32(scale)
        np.testing.assert_array_equal(out.get(), want)


def test_norms(base: dict, n_sm: int) -> None:
    rng = np.random.default_rng(3)
    n, eps = 1280, 1e-6
    h, x, w = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    y = poisoned(n)
    run(base, "rmsnorm", {"n_embd": n}, n_sm, x=cupy.asarray(x), w=cupy.asarray(w), y=y, n_embd=n, eps=eps)
    assert rel_err(y.get(), slot_math.rmsnorm(x, w, eps)) < 1e-6
    inplace = cupy.asarray(x)  # y aliasing x is allowed
    run(base, "rmsnorm", {"n_embd": n}, n_sm, x=inplace, w=cupy.asarray(w), y=inplace, n_embd=n, eps=eps)
    assert rel_err(inplace.get(), slot_math.rmsnorm(x, w, eps)) < 1e-6
    hd, y = cupy.asarray(h), poisoned(n)
    run(base, "rmsnorm_residual", {"n_embd": n}, n_sm, h=hd, x=cupy.asarray(x), w=cupy.asarray(w), y=y, n_embd=n,
        eps=eps)
    h_want, y_want = slot_math.rmsnorm_residual(h, x, w, eps)
    assert rel_err(hd.get(), h_want) < 1e-6 and rel_err(y.get(), y_want) < 1e-6
    hd = cupy.asarray(h)
    run(base, "rmsnorm_post_add", {"n_embd": n}, n_sm, h=hd, x=cupy.asarray(x), w=cupy.asarray(w), n_embd=n, eps=eps,
        out_scale=0.75)
    assert rel_err(hd.get(), slot_math.rmsnorm_post_add(h, x, w, eps, 0.75)) < 1e-6


@pytest.mark.parametrize("with_v,freq", [(True, True), (False, False)])
def test_qk_norm_rope(base: dict, n_sm: int, with_v: bool, freq: bool) -> None:
    rng = np.random.default_rng(5)
    n_head, n_head_kv, hd, n_rot, pos = 4, 2, 256, 128, 12345
    q, k, v = (rng.standard_normal(m * hd).astype(np.float32) for m in (n_head, n_head_kv, n_head_kv))
    qn, kn = (rng.uniform(0.5, 1.5, hd).astype(np.float32) for _ in range(2))
    ff = np.concatenate([rng.uniform(1, 3, n_rot // 4), np.full(n_rot // 4, 1e30)]).astype(np.float32)
    qd, kd, vd = cupy.asarray(q), cupy.asarray(k), cupy.asarray(v)
    env = {"n_head": n_head, "n_head_kv": n_head_kv, "head_dim": hd, "n_rot": n_rot}
    run(base, "qk_norm_rope", env, n_sm, q=qd, k=kd, v=vd if with_v else None, q_norm=cupy.asarray(qn),
        k_norm=cupy.asarray(kn), freq_factors=cupy.asarray(ff) if freq else None, pos=cupy.asarray([pos], cupy.int32),
        n_head=n_head, n_head_kv=n_head_kv, head_dim=hd, n_rot=n_rot, freq_base=1e6, freq_scale=0.5, eps=1e-6)
    qw, kw, vw = slot_math.qk_norm_rope(q, k, v if with_v else None, qn, kn, ff if freq else None, pos, n_head,
                                        n_head_kv, hd, n_rot, 1e6, 0.5, 1e-6)
    assert rel_err(qd.get(), qw) < 1e-6 and rel_err(kd.get(), kw) < 1e-6
    if with_v:
        assert rel_err(vd.get(), vw) < 1e-6
    else:
        np.testing.assert_array_equal(vd.get(), v)


def test_kv_append_stores_fp16_at_the_position(base: dict, n_sm: int) -> None:
    rng = np.random.default_rng(9)
    n_head_kv, hd, n_ctx, pos = 2, 128, 50, 33
    k, v = (rng.standard_normal(n_head_kv * hd).astype(np.float32) for _ in range(2))
    kc, vc = (cupy.zeros(n_head_kv * n_ctx * hd, cupy.float16) for _ in range(2))
    env = {"n_head_kv": n_head_kv, "head_dim": hd, "n_ctx": n_ctx}
    run(base, "kv_append", env, n_sm, k=cupy.asarray(k), v=cupy.asarray(v), k_cache=kc, v_cache=vc,
        pos=cupy.asarray([pos], cupy.int32), n_head_kv=n_head_kv, head_dim=hd, n_ctx=n_ctx)
    kw, vw = (np.zeros(n_head_kv * n_ctx * hd, np.float16) for _ in range(2))
    slot_math.kv_append(k, v, kw, vw, pos, n_head_kv, hd, n_ctx)
    np.testing.assert_array_equal(kc.get(), kw)
    np.testing.assert_array_equal(vc.get(), vw)


ATTN_CASES = [
    ("attn_decode_hd128", 8, 2, 128, 0),
    ("attn_decode_hd128", 16, 1, 128, 0),  # a 16-head group: two passes of 8 heads
    ("attn_decode_hd256", 4, 1, 256, 0),
    ("attn_decode_swa_hd256", 4, 2, 256, 100),
    ("attn_decode_hd512", 4, 1, 512, 0),
    ("attn_decode_hd512", 6, 2, 512, 0),  # groups of 3: one head per pass
]


@pytest.mark.parametrize("slot,n_head,n_head_kv,hd,n_swa", ATTN_CASES)
@pytest.mark.parametrize("pos", [0, 63, 700, 4999])
def test_attention(base: dict, n_sm: int, slot: str, n_head: int, n_head_kv: int, hd: int, n_swa: int,
                   pos: int) -> None:
    rng = np.random.default_rng(pos + hd)
    n_ctx = 5000
    q = rng.standard_normal(n_head * hd).astype(np.float32)
    kc, vc = (rng.standard_normal(n_head_kv * n_ctx * hd).astype(np.float16) for _ in range(2))
    out = poisoned(n_head * hd)
    env = {"n_head": n_head, "n_head_kv": n_head_kv, "head_dim": hd, "n_ctx": n_ctx}
    if n_swa:
        env["n_swa"] = n_swa
    scale = 1.0 / math.sqrt(hd)
    run(base, slot, env, n_sm, q=cupy.asarray(q), k_cache=cupy.asarray(kc), v_cache=cupy.asarray(vc), out=out,
        pos=cupy.asarray([pos], cupy.int32), n_head=n_head, n_head_kv=n_head_kv, n_ctx=n_ctx, n_swa=n_swa, scale=scale)
    want = slot_math.attention(q, kc, vc, pos, n_head, n_head_kv, hd, n_ctx, n_swa, scale)
    assert rel_err(out.get(), want) < 1e-5


@pytest.mark.parametrize("kind", ["swiglu", "geglu"])
def test_glu(base: dict, n_sm: int, kind: str) -> None:
    rng = np.random.default_rng(1)
    n = 2048 + 4
    g, u = (rng.standard_normal(n).astype(np.float32) * 3 for _ in range(2))
    y = poisoned(n)
    run(base, f"glu_{kind}", {"n_ff": n}, n_sm, gate=cupy.asarray(g), up=cupy.asarray(u), y=y, n_ff=n)
    assert rel_err(y.get(), slot_math.glu(kind, g, u)) < 1e-6


@pytest.mark.parametrize("n_expert,k", [(32, 8), (128, 8), (16, 4)])
def test_router_topk(base: dict, n_sm: int, n_expert: int, k: int) -> None:
    rng = np.random.default_rng(n_expert)
    logits = (rng.standard_normal(n_expert) * 3).astype(np.float32)
    scale = rng.uniform(0.5, 2, n_expert).astype(np.float32)
    ids, weights = cupy.full(k, -1, cupy.int32), poisoned(k)
    run(base, "moe_router_topk", {"n_expert": n_expert, "n_expert_used": k}, n_sm, logits=cupy.asarray(logits),
        ids=ids, weights=weights, expert_scale=cupy.asarray(scale), n_expert=n_expert, n_expert_used=k,
        weights_scale=2.5)
    want_ids, want_w = slot_math.router_topk(logits, scale, k, 2.5)
    got = dict(zip(ids.get().tolist(), weights.get().tolist(), strict=True))
    assert set(got) == set(want_ids.tolist())
    np.testing.assert_allclose([got[i] for i in want_ids.tolist()], want_w, rtol=1e-5)


@pytest.mark.parametrize("kind,types", [("swiglu", (QT.Q4_K, QT.Q4_K, QT.Q6_K)),
                                        ("geglu", (QT.Q8_0, QT.Q5_0, QT.Q4_K))])
def test_moe_ffn(base: dict, n_sm: int, kind: str, types: tuple) -> None:
    rng = np.random.default_rng(11)
    n_embd, n_ff, n_expert, k = 256, 512, 6, 3
    shapes = ((n_ff, n_embd), (n_ff, n_embd), (n_embd, n_ff))
    raws = [np.concatenate([random_blocks(t, *s, rng) for _ in range(n_expert)]) for t, s in zip(types, shapes,
                                                                                                 strict=True)]
    strides = [r.size // n_expert for r in raws]
    x = rng.standard_normal(n_embd).astype(np.float32)
    ids = np.array([4, 0, 5], np.int32)
    weights = np.array([0.5, 0.3, 0.2], np.float32)
    out = poisoned(n_embd)
    env = {"n_embd": n_embd, "n_expert": n_expert, "n_expert_used": k, "n_ff_exp": n_ff}
    run(base, f"moe_ffn_{kind}", env, n_sm, x=cupy.asarray(x), ids=cupy.asarray(ids), weights=cupy.asarray(weights),
        w_gate=cupy.asarray(raws[0]), w_up=cupy.asarray(raws[1]), w_down=cupy.asarray(raws[2]),
        stride_gate=strides[0], stride_up=strides[1], stride_down=strides[2], type_gate=int(types[0]),
        type_up=int(types[1]), type_down=int(types[2]), out=out, n_embd=n_embd, n_ff_exp=n_ff, n_expert=n_expert,
        n_expert_used=k)
    experts = [tuple(slot_math.dequant(int(t), r[e * s :], *shape)
                     for t, r, s, shape in zip(types, raws, strides, shapes, strict=True)) for e in ids]
    assert rel_err(out.get(), slot_math.moe_ffn(kind, x, ids, weights, experts)) < 2e-6
