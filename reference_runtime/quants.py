"""Exact dequantization of GGML tensor bytes to float64, on NumPy or CuPy.

Contract: the result is bit-for-bit ``gguf.quants.dequantize(data, qtype).astype(float64)``.
Every product and difference is therefore formed in float32, with the same operands in the same
order as gguf-py, and only the finished float32 values are widened (widening is exact).

Where gguf-py and ggml's C reference (``dequantize_row_*`` in ggml-quants.c) could differ we follow
gguf-py, the test oracle:

* Q4_K: C writes ``d1 * q - m1``, which a compiler allowed to contract floating point may fuse into
  one FMA (one rounding); gguf-py rounds the product and the difference separately, and so do we.
* Q8_0, Q5_0, Q6_K and the float types: C and gguf-py agree (Q6_K is ``(d * sc) * q`` in both).

The array module is a parameter so the same code runs on the GPU: only operations NumPy and CuPy
share are used (slicing, reshape, view, astype, bitwise and arithmetic operators, broadcasting).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import gguf
import numpy as np

from reference_runtime.errors import ReferenceRuntimeError

QT = gguf.GGMLQuantizationType

SUPPORTED: frozenset[gguf.GGMLQuantizationType] = frozenset(
    {QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q5_0, QT.Q4_K, QT.Q6_K}
)

# Elements per chunk on the CPU: big enough that Python overhead per chunk is noise, small enough
# that the float32 temporaries stay in cache (measured on the 262144x640 Q8_0 embedding: 2-4x faster
# than whole-tensor passes; 2^14..2^16 all within noise of each other).
_CPU_CHUNK_ELEMENTS = 1 << 15
# On a GPU one launch per op is the overhead; chunk only to cap the temporaries' memory.
_GPU_CHUNK_ELEMENTS = 1 << 24


class DequantError(ReferenceRuntimeError, ValueError):
    """The bytes cannot be dequantized as asked (unsupported type, wrong size, bad shape)."""


Array = Any  # numpy.ndarray or cupy.ndarray; the module is chosen by the caller
_BlockFn = Callable[[Array, ModuleType], Array]


def block_layout(qtype: gguf.GGMLQuantizationType) -> tuple[int, int]:
    """(elements per block, bytes per block) of a GGML type."""
    return gguf.GGML_QUANT_SIZES[qtype]


def n_bytes_for(qtype: gguf.GGMLQuantizationType, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of ``shape`` (numpy order) occupies in ``qtype``; checks the row fits blocks."""
    block, size = block_layout(qtype)
    cols = shape[-1] if shape else 1
    if cols % block:
        raise DequantError(f"{qtype.name} rows must be a multiple of {block} elements, got shape {shape}")
    n = 1
    for dim in shape:
        n *= dim
    return n // block * size


def dequantize(
    data: Array, qtype: gguf.GGMLQuantizationType, shape: tuple[int, ...], xp: ModuleType = np
) -> Array:
    """Dequantize raw GGML bytes (an ``xp`` uint8 array, any shape) to ``xp`` float64 of ``shape``."""
    if sys.byteorder != "little":
        raise DequantError("dequantization assumes a little-endian host, like the GGUF data itself")
    fn = _BLOCK_FNS.get(qtype)
    if fn is None:
        names = ", ".join(sorted(t.name for t in SUPPORTED))
        raise DequantError(f"type {qtype.name} is not supported (supported: {names})")
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise DequantError(f"negative dimension in shape {shape}")
    data = xp.asarray(data)
    if data.dtype != xp.uint8:
        raise DequantError(f"expected raw bytes as a uint8 array, got dtype {data.dtype}")
    expected = n_bytes_for(qtype, shape)
    if data.size != expected:
        raise DequantError(f"{qtype.name} shape {shape} needs {expected} bytes, got {data.size}")
    block, size = block_layout(qtype)
    blocks = data.reshape(-1).reshape(-1, size)
    out = xp.empty((blocks.shape[0], block), dtype=xp.float64)
    chunk_elements = _CPU_CHUNK_ELEMENTS if xp is np else _GPU_CHUNK_ELEMENTS
    step = max(1, chunk_elements // block)
    # inf * 0 and NaN scales are what the bytes say; reproducing them is the job, not an accident.
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, blocks.shape[0], step):
            # Assigning float32 into the float64 buffer is the (exact) widening. The block types
            # never make float32 subnormals (every value is 0 or at least 2**-24 in magnitude: fp16
            # scales times small integers), so a flushing GPU cast cannot touch them.
            out[start : start + step] = fn(blocks[start : start + step], xp)
    return out.reshape(shape)


def _f16_column(blocks: Array, start: int, xp: ModuleType) -> Array:
    """The little-endian fp16 at byte ``start`` of every block, as an (n, 1) float32 column."""
    return xp.ascontiguousarray(blocks[:, start : start + 2]).view(xp.float16).astype(xp.float32)


def _shifts(xp: ModuleType, values: tuple[int, ...], shape: tuple[int, ...]) -> Array:
    """Bit shifts as a uint8 array of ``shape``, to broadcast against packed bytes."""
    return xp.asarray(values, dtype=xp.uint8).reshape(shape)


def _widen_f32_bits(bits: Array, xp: ModuleType) -> Array:
    """float32 bit patterns to float64, exact for subnormals too.

    CuPy flushes float32 subnormals to zero, in casts as in arithmetic (seen on an H100), so the
    plain cast alone would lose them on the GPU. A subnormal is mantissa * 2**-149: formed from the
    integer mantissa in float64 it is exact on either device, and a normal float64."""
    wide = bits.view(xp.float32).astype(xp.float64)
    mantissa = bits & 0x007FFFFF
    subnormal = ((bits & 0x7F800000) == 0) & (mantissa != 0)
    magnitude = mantissa.astype(xp.float64) * (2.0**-149)
    return xp.where(subnormal, xp.where(bits >> 31 == 1, -magnitude, magnitude), wide)


def _f32(blocks: Array, xp: ModuleType) -> Array:
    bits = xp.ascontiguousarray(blocks).reshape(-1).view(xp.uint32)
    return _widen_f32_bits(bits, xp).reshape(-1, 1)


def _f16(blocks: Array, xp: ModuleType) -> Array:
    # Every float16, subnormals included, is a normal float32: the casts are exact on any device.
    return xp.ascontiguousarray(blocks).reshape(-1).view(xp.float16).astype(xp.float32).reshape(-1, 1)


def _bf16(blocks: Array, xp: ModuleType) -> Array:
    # bf16 is the top half of a float32: shifting the bits up is the whole conversion.
    bits = xp.ascontiguousarray(blocks).reshape(-1).view(xp.uint16).astype(xp.uint32) << 16
    return _widen_f32_bits(bits, xp).reshape(-1, 1)


def _q8_0(blocks: Array, xp: ModuleType) -> Array:
    # block: fp16 d | 32 x int8
    d = _f16_column(blocks, 0, xp)
    q = blocks[:, 2:].view(xp.int8).astype(xp.float32)
    return q * d


def _q5_0(blocks: Array, xp: ModuleType) -> Array:
    # block: fp16 d | 32 high bits (uint32 LE) | 16 bytes of nibbles: element j low nibble of byte j,
    # element j+16 high nibble of byte j; high bit of element j is bit j of the uint32.
    n = blocks.shape[0]
    d = _f16_column(blocks, 0, xp)
    high = (blocks[:, 2:6].reshape(n, 4, 1) >> _shifts(xp, tuple(range(8)), (1, 1, 8))) & 1
    high = high.reshape(n, 32)
    low = (blocks[:, 6:22].reshape(n, 1, 16) >> _shifts(xp, (0, 4), (1, 2, 1))) & 0x0F
    low = low.reshape(n, 32)
    q = (low | (high << 4)).astype(xp.int8) - 16
    return d * q.astype(xp.float32)


def _q4_k(blocks: Array, xp: ModuleType) -> Array:
    # block: fp16 d | fp16 dmin | 12 bytes of packed 6-bit (scale, min) x 8 | 128 bytes of nibbles.
    # Sub-block 2g takes the low nibbles of bytes 32g..32g+31, sub-block 2g+1 their high nibbles.
    n = blocks.shape[0]
    d = _f16_column(blocks, 0, xp)
    dmin = _f16_column(blocks, 2, xp)
    s = blocks[:, 4:16]
    lo, mid, hi = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    # First four: 6 low bits of bytes 0-3 / 4-7. Last four: a nibble of bytes 8-11 plus the two
    # spare top bits of bytes 0-3 (scales) or 4-7 (mins).
    scale = xp.concatenate([lo & 0x3F, (hi & 0x0F) | ((lo >> 6) << 4)], axis=1)
    mins = xp.concatenate([mid & 0x3F, (hi >> 4) | ((mid >> 6) << 4)], axis=1)
    d_scale = (d * scale.astype(xp.float32)).reshape(n, 8, 1)
    d_min = (dmin * mins.astype(xp.float32)).reshape(n, 8, 1)
    q = (blocks[:, 16:144].reshape(n, 4, 1, 32) >> _shifts(xp, (0, 4), (1, 1, 2, 1))) & 0x0F
    q = q.reshape(n, 8, 32).astype(xp.float32)
    return (d_scale * q - d_min).reshape(n, 256)


def _q6_k(blocks: Array, xp: ModuleType) -> Array:
    # block: 128 bytes low nibbles | 64 bytes of 2-bit high parts | 16 x int8 scales | fp16 d.
    # Each half of 128 elements uses 64 low bytes (low nibbles -> elements 0-63, high -> 64-127)
    # and 32 high bytes (bit pairs 0,2,4,6 -> elements 0-31, 32-63, 64-95, 96-127); one scale per 16.
    n = blocks.shape[0]
    low = (blocks[:, 0:128].reshape(n, 2, 1, 64) >> _shifts(xp, (0, 4), (1, 1, 2, 1))) & 0x0F
    high = (blocks[:, 128:192].reshape(n, 2, 1, 32) >> _shifts(xp, (0, 2, 4, 6), (1, 1, 4, 1))) & 0x03
    q = (low.reshape(n, 2, 128) | (high.reshape(n, 2, 128) << 4)).astype(xp.int8) - 32
    q = q.reshape(n, 16, 16).astype(xp.float32)
    scale = blocks[:, 192:208].view(xp.int8).astype(xp.float32)
    d = _f16_column(blocks, 208, xp)
    return ((d * scale).reshape(n, 16, 1) * q).reshape(n, 256)


_BLOCK_FNS: dict[gguf.GGMLQuantizationType, _BlockFn] = {
    QT.F32: _f32,
    QT.F16: _f16,
    QT.BF16: _bf16,
    QT.Q8_0: _q8_0,
    QT.Q5_0: _q5_0,
    QT.Q4_K: _q4_k,
    QT.Q6_K: _q6_k,
}
assert frozenset(_BLOCK_FNS) == SUPPORTED
