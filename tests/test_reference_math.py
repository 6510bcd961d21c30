"""The reference's building blocks, checked against properties that hold for the true math."""

import numpy as np
import pytest

from reference_runtime.reference import attention, causal_mask, gelu_tanh, log_softmax, rms_norm, rope_neox

rng = np.random.default_rng(7)


def test_rms_norm_gives_unit_rms_times_weight():
    x = rng.standard_normal((5, 64)) * 3
    w = rng.standard_normal(64)
    y = rms_norm(np, x, None, 0.0)
    np.testing.assert_allclose(np.sqrt((y**2).mean(-1)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(rms_norm(np, x, w, 0.0), y * w, rtol=1e-12)


def test_rope_preserves_norm_and_depends_only_on_relative_position():
    q = rng.standard_normal((1, 1, 128))
    k = rng.standard_normal((1, 1, 128))

    def rot(x, pos):
        return rope_neox(np, x, np.array([pos]), 128, 10000.0, 1.0)

    np.testing.assert_allclose(np.linalg.norm(rot(q, 37)), np.linalg.norm(q), rtol=1e-12)
    a = (rot(q, 10) * rot(k, 3)).sum()
    b = (rot(q, 107) * rot(k, 100)).sum()
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_rope_neox_pairs_i_with_i_plus_half_and_leaves_tail():
    x = np.zeros((1, 1, 8))
    x[0, 0, 0] = 1.0  # rotates into dimension 0 + n_rot/2 = 2 for n_rot = 4
    x[0, 0, 6] = 5.0  # beyond n_rot: untouched
    y = rope_neox(np, x, np.array([1]), 4, 10000.0, 1.0)[0, 0]
    assert y[0] == pytest.approx(np.cos(1.0))
    assert y[2] == pytest.approx(np.sin(1.0))
    assert y[6] == 5.0


def test_rope_freq_factors_divide_frequencies():
    x = rng.standard_normal((3, 2, 16))
    pos = np.arange(3)
    base = rope_neox(np, x, pos * 0.5, 16, 1e4, 1.0)
    halved = rope_neox(np, x, pos, 16, 1e4, 1.0, freq_factors=np.full(8, 2.0))
    np.testing.assert_allclose(base, halved, rtol=1e-12)


def test_sliding_window_mask_keeps_exactly_the_last_n_positions():
    m = causal_mask(np, 10, 3)
    assert m[9].tolist() == [False] * 7 + [True] * 3
    assert m[1].tolist() == [True, True] + [False] * 8
    assert causal_mask(np, 10, 0)[9].all()


def test_attention_matches_explicit_softmax_with_gqa():
    t, h, hkv, d = 6, 4, 2, 8
    q, k, v = rng.standard_normal((t, h, d)), rng.standard_normal((t, hkv, d)), rng.standard_normal((t, hkv, d))
    out = attention(np, q, k, v, causal_mask(np, t, 0), 0.3).reshape(t, h, d)
    for i in range(t):
        for head in range(h):
            kv = head // 2
            s = np.array([q[i, head] @ k[j, kv] * 0.3 for j in range(i + 1)])
            p = np.exp(s - s.max())
            p /= p.sum()
            np.testing.assert_allclose(out[i, head], p @ v[: i + 1, kv], rtol=1e-10)


def test_log_softmax_and_gelu():
    x = rng.standard_normal((3, 50)) * 30
    np.testing.assert_allclose(np.exp(log_softmax(np, x)).sum(-1), 1.0, rtol=1e-12)
    assert gelu_tanh(np, np.array([0.0]))[0] == 0.0
    np.testing.assert_allclose(gelu_tanh(np, np.array([10.0])), 10.0, rtol=1e-12)
