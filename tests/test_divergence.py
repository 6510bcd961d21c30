"""harness.divergence: block-wise and raw-logit comparison give the whole-array answer."""

from __future__ import annotations

import numpy as np
import pytest

from harness import divergence
from harness.divergence import compare, normalize


def _whole(ref: np.ndarray, cand: np.ndarray, targets: np.ndarray, margin: float = 0.25) -> dict[str, float]:
    """The definitions, written out over the whole arrays at once."""
    kl = np.maximum((np.exp(ref) * (ref - cand)).sum(-1), 0.0)
    agree = ref.argmax(-1) == cand.argmax(-1)
    s = np.sort(ref, -1)
    confident = s[:, -1] - s[:, -2] > margin
    rows = np.arange(len(ref))
    return {"top1_agreement": agree.mean(), "kl_mean": kl.mean(), "kl_p99": np.quantile(kl, 0.99),
            "kl_max": kl.max(), "n_confident": confident.sum(),
            "top1_agreement_confident": agree[confident].mean(),
            "ppl_ref": np.exp(-ref[rows, targets].mean()), "ppl_cand": np.exp(-cand[rows, targets].mean())}


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(0, 3, (90, 700))
    return x, x + rng.normal(0, 0.4, x.shape), rng.integers(0, 700, 90)


@pytest.mark.parametrize("block_values", [1 << 24, 700 * 7, 1])  # one block, 7 rows, one row
def test_blocks_give_the_whole_array_answer(pair, monkeypatch, block_values: int) -> None:
    x, y, t = pair
    monkeypatch.setattr(divergence, "_BLOCK_VALUES", block_values)
    ref, cand = normalize(x), normalize(y)
    got = compare(ref, cand, t).as_dict()
    want = _whole(ref, cand, t)
    assert 0.3 < want["top1_agreement"] < 1.0 and 0 < want["n_confident"] < len(x)  # a test that can tell
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k


def test_raw_logits_are_normalized_per_block(pair, monkeypatch) -> None:
    x, y, t = pair
    monkeypatch.setattr(divergence, "_BLOCK_VALUES", 700 * 11)
    raw = compare(normalize(x).astype(np.float32), (y + 40.0).astype(np.float32), t, raw=True).as_dict()
    want = _whole(normalize(x).astype(np.float32).astype(np.float64), normalize((y + 40.0).astype(np.float32)), t)
    for k, v in want.items():
        assert raw[k] == pytest.approx(v, rel=1e-9), k


def test_without_targets_perplexity_is_nan_and_the_rest_is_unchanged(pair) -> None:
    x, y, t = pair
    a, b = compare(normalize(x), normalize(y)), compare(normalize(x), normalize(y), t)
    assert np.isnan(a.ppl_ref) and np.isnan(a.ppl_cand)
    assert a.kl_mean == pytest.approx(b.kl_mean, rel=1e-12)
    assert (a.top1_agreement, a.n_confident) == (b.top1_agreement, b.n_confident)


def test_a_tie_at_the_top_is_not_confident() -> None:
    ref = normalize(np.array([[2.0, 2.0, 0.0], [3.0, 0.0, 0.0]]))
    d = compare(ref, ref)
    assert d.n_confident == 1 and d.top1_agreement == 1.0 and d.kl_max == 0.0


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        compare(np.zeros((3, 4)), np.zeros((3, 5)))
