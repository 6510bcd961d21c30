"""The whole reference forward on micro models: a distribution per position, causal, deterministic."""

import numpy as np
import pytest

from reference_runtime.gguf_model import GGUFModel
from reference_runtime.reference import Forward
from tests.micro_models import MICRO, write_micro


def assert_no_influence(a: np.ndarray, b: np.ndarray, *, effect: np.ndarray) -> None:
    """`a` and `b` agree up to rounding, while the change shows where it may.

    Not bit-equality: which OpenBLAS kernel runs (Haswell, Zen, SkylakeX) changes how a GEMM's
    rows are blocked, and so their last bits, even for rows whose inputs are identical. A token
    that leaked through would move the logits by about as much as `effect` does (~1e-2 here),
    ten orders of magnitude above the ~1e-14 such rounding gives.
    """
    leak = float(np.max(np.abs(a - b)))
    reach = float(np.max(np.abs(effect)))
    assert reach > 1e-4, f"the change has no visible effect where it should ({reach:.3g})"
    assert leak <= 1e-11, f"a masked-out token moved the logits by {leak:.3g}"


@pytest.fixture(params=sorted(MICRO))
def micro(request, tmp_path):
    with GGUFModel.open(write_micro(request.param, tmp_path)) as model:
        yield model


def test_logprobs_are_distributions(micro):
    tokens = np.arange(12) % 64
    lp = Forward(micro).logprobs(tokens)
    assert lp.shape == (12, 64) and lp.dtype == np.float64
    np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, rtol=1e-12)


def test_causal_prefix_rows_do_not_see_the_future(micro):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 64, 20)
    changed = tokens.copy()
    changed[15:] = (changed[15:] + 1) % 64
    full, other = Forward(micro).logprobs(tokens), Forward(micro).logprobs(changed)
    assert_no_influence(full[:15], other[:15], effect=full[15:] - other[15:])


def test_prefix_run_equals_rows_of_full_run(micro):
    tokens = np.random.default_rng(1).integers(0, 64, 16)
    f = Forward(micro)
    np.testing.assert_allclose(f.logprobs(tokens[:9]), f.logprobs(tokens)[:9], rtol=1e-12, atol=1e-12)


def test_sliding_window_limits_what_swa_layers_see(tmp_path):
    """With every layer sliding (window 4), position 10 cannot depend on token 0 at all."""
    import dataclasses

    from reference_runtime.basket import generate_tensors, write_f32

    spec = dataclasses.replace(MICRO["gemma4"], swa_pattern=[True, True, True], n_head_kv=[2, 2, 2])
    tensors = {k: v for k, v in generate_tensors(spec).items() if k != "rope_freqs.weight"}
    for il in range(3):  # an all-sliding model has V projections on every layer
        tensors.setdefault(f"blk.{il}.attn_v.weight", tensors[f"blk.{il}.attn_k.weight"])
    path = tmp_path / "swa.gguf"
    write_f32(spec, path, tensors)
    with GGUFModel.open(path) as model:
        f = Forward(model)
        tokens = np.arange(12) % 64
        changed = tokens.copy()
        changed[0] = 63
        a, b = f.logprobs(tokens), f.logprobs(changed)
    # Three layers of window 4 reach back at most 3 * 3 = 9 positions.
    assert_no_influence(a[10:], b[10:], effect=a[1:9] - b[1:9])


def test_out_of_range_tokens_are_rejected(micro):
    with pytest.raises(ValueError, match="token ids"):
        Forward(micro).logprobs([0, 64])
