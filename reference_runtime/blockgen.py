"""Random quantized tensors written block by block, identically on NumPy and CuPy.

The production basket holds tens of billions of parameters: generating them in float32 and handing
them to a quantizer would need a float32 copy of the model and hours of CPU. Instead every block's
bytes are drawn directly, in the block's own layout, from a counter-based generator (SplitMix64 of
the element counter, keyed per tensor), using only integer operations that NumPy and CuPy define
identically: the same seed gives the same bytes on a GPU validator and in CPU CI.

Each type's scales are chosen so the dequantized values have mean 0 and the requested standard
deviation, which is what the basket's scaling rules (peaked logits, a router with clear winners)
are written against:

* Q4_K: y = d·sc·q − dmin·m with q uniform in 0..15; sub-block scales sc uniform in 48..63, and
  dmin = 7.5·d with m = sc, so every sub-block is centred exactly.
* Q6_K: y = d·sc·(q − 32), q uniform in 0..63, sc = ±(24..31) with a random sign, which cancels the
  −0.5 offset of (q − 32) on average.
* Q5_0: y = d·(q − 16), Q8_0: y = d·q, each block's d with a random sign, for the same reason.
* F32 (norms, routers, scales): centre + std·z, z the sum of four uniforms rescaled to unit
  variance, formed in float64 one correctly rounded operation at a time, then rounded to float32.
"""

from __future__ import annotations

import hashlib
import math
from types import ModuleType
from typing import Any

import gguf
import numpy as np

QT = gguf.GGMLQuantizationType
Array = Any  # numpy.ndarray or cupy.ndarray

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB

# The root-mean-square of each type's integer factor, so that d = std / rms gives the asked std.
_Q4_K_SC = np.arange(48, 64)
_Q4_K_RMS = math.sqrt(255 / 12) * math.sqrt(float(np.mean(_Q4_K_SC.astype(np.float64) ** 2)))
_Q6_K_SC = np.arange(24, 32)
_Q6_K_RMS = math.sqrt(4095 / 12 + 0.25) * math.sqrt(float(np.mean(_Q6_K_SC.astype(np.float64) ** 2)))
_Q5_0_RMS = math.sqrt(1023 / 12 + 0.25)
_Q8_0_RMS = math.sqrt(65535 / 12 + 0.25)

SUPPORTED = frozenset({QT.F32, QT.Q4_K, QT.Q6_K, QT.Q5_0, QT.Q8_0})


def tensor_key(seed: int, name: str) -> int:
    """The generator key of one tensor: independent of every other tensor and of file order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")


def random_u64(key: int, n: int, xp: ModuleType = np) -> Array:
    """SplitMix64 of the counters 1..n under ``key``: n uint64 words, wrapping arithmetic."""
    z = xp.arange(1, n + 1, dtype=xp.uint64)
    z *= xp.uint64(_GOLDEN)
    z += xp.uint64(key)
    z ^= z >> xp.uint64(30)
    z *= xp.uint64(_MIX1)
    z ^= z >> xp.uint64(27)
    z *= xp.uint64(_MIX2)
    z ^= z >> xp.uint64(31)
    return z


def _words_as_bytes(words: Array, n_blocks: int) -> Array:
    return words.reshape(n_blocks, -1).view(np.uint8)


def _f16_bits(value: float) -> int:
    return int(np.array(value, dtype=np.float16).view(np.uint16))


def _put_u16(block: Array, at: int, bits: Array | int, xp: ModuleType) -> None:
    bits = xp.asarray(bits, dtype=xp.uint16)
    block[:, at] = (bits & xp.uint16(0xFF)).astype(xp.uint8)
    block[:, at + 1] = (bits >> xp.uint16(8)).astype(xp.uint8)


def _q4_k(key: int, n_blocks: int, std: float, xp: ModuleType) -> Array:
    raw = _words_as_bytes(random_u64(key, n_blocks * 17, xp), n_blocks)  # [n, 136]
    out = xp.empty((n_blocks, 144), dtype=xp.uint8)
    d = std / _Q4_K_RMS
    _put_u16(out, 0, _f16_bits(d), xp)
    _put_u16(out, 2, _f16_bits(7.5 * d), xp)
    nib = raw[:, 128:132]
    # Eight sub-block scales from four random bytes, two nibbles each, each in 48..63; m = sc.
    sc = xp.stack([(nib[:, j // 2] >> xp.uint8(4 * (j % 2))) & xp.uint8(15) for j in range(8)], axis=1)
    sc = sc + xp.uint8(48)
    lo, hi = sc[:, :4], sc[:, 4:]
    top = (hi >> xp.uint8(4)) << xp.uint8(6)
    out[:, 4:8] = (lo & xp.uint8(63)) | top  # sc_j, and the high bits of sc_{j+4}
    out[:, 8:12] = (lo & xp.uint8(63)) | top  # m_j = sc_j, and the high bits of m_{j+4}
    out[:, 12:16] = (hi & xp.uint8(15)) | ((hi & xp.uint8(15)) << xp.uint8(4))
    out[:, 16:144] = raw[:, :128]
    return out


def _q6_k(key: int, n_blocks: int, std: float, xp: ModuleType) -> Array:
    raw = _words_as_bytes(random_u64(key, n_blocks * 25, xp), n_blocks)  # [n, 200]
    out = xp.empty((n_blocks, 210), dtype=xp.uint8)
    out[:, :192] = raw[:, :192]  # ql, qh
    pick = raw[:, 192:200]
    mags = xp.stack([(pick[:, j // 2] >> xp.uint8(4 * (j % 2))) & xp.uint8(7) for j in range(16)], axis=1)
    signs = xp.stack([(pick[:, j // 2] >> xp.uint8(4 * (j % 2) + 3)) & xp.uint8(1) for j in range(16)], axis=1)
    scales = (mags + xp.uint8(24)).astype(xp.int16)
    scales = xp.where(signs == 1, -scales, scales).astype(xp.int8)
    out[:, 192:208] = scales.view(xp.uint8)
    _put_u16(out, 208, _f16_bits(std / _Q6_K_RMS), xp)
    return out


def _signed_d(raw_byte: Array, d: float, xp: ModuleType) -> Array:
    sign = (raw_byte & xp.uint8(1)).astype(xp.uint16) << xp.uint16(15)
    return xp.uint16(_f16_bits(d)) | sign


def _q5_0(key: int, n_blocks: int, std: float, xp: ModuleType) -> Array:
    raw = _words_as_bytes(random_u64(key, n_blocks * 3, xp), n_blocks)  # [n, 24]
    out = xp.empty((n_blocks, 22), dtype=xp.uint8)
    _put_u16(out, 0, _signed_d(raw[:, 20], std / _Q5_0_RMS, xp), xp)
    out[:, 2:22] = raw[:, :20]  # qh, qs
    return out


def _q8_0(key: int, n_blocks: int, std: float, xp: ModuleType) -> Array:
    raw = _words_as_bytes(random_u64(key, n_blocks * 5, xp), n_blocks)  # [n, 40]
    out = xp.empty((n_blocks, 34), dtype=xp.uint8)
    _put_u16(out, 0, _signed_d(raw[:, 32], std / _Q8_0_RMS, xp), xp)
    out[:, 2:34] = raw[:, :32]
    return out


def unit_normalish(key: int, n: int, xp: ModuleType = np) -> Array:
    """n float64 values of mean 0 and variance 1: four 16-bit uniforms per value, summed exactly
    in integers, then centred and scaled by one multiplication."""
    w = random_u64(key, n, xp)
    mask = xp.uint64(0xFFFF)
    total = (w & mask) + ((w >> xp.uint64(16)) & mask) + ((w >> xp.uint64(32)) & mask) + (w >> xp.uint64(48))
    # Each 16-bit uniform has variance (2^32 - 1) / 12; four of them, 4 times that.
    scale = 1.0 / math.sqrt((2.0**32 - 1) / 3.0)
    return (total.astype(xp.float64) - 2.0 * 65535.0) * scale


def f32_values(key: int, n: int, std: float, centre: float = 0.0, xp: ModuleType = np) -> Array:
    """n float32 values centre + std·z (z unit variance), identical on NumPy and CuPy."""
    z = unit_normalish(key, n, xp) * std
    return (z + centre).astype(xp.float32)


_BLOCKS = {QT.Q4_K: _q4_k, QT.Q6_K: _q6_k, QT.Q5_0: _q5_0, QT.Q8_0: _q8_0}


def quantized_tensor(key: int, qtype: QT, shape: tuple[int, ...], std: float, xp: ModuleType = np) -> Array:
    """The raw GGML bytes (flat uint8) of a random tensor of ``shape`` (NumPy order) in ``qtype``."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = math.prod(shape)
    if shape[-1] % block:
        raise ValueError(f"{qtype.name} rows must be a multiple of {block} elements, got shape {shape}")
    if qtype == QT.F32:
        return f32_values(key, n, std, xp=xp).view(xp.uint8)
    data = _BLOCKS[qtype](key, n // block, std, xp)
    assert data.shape[1] == size
    return data.reshape(-1)
