/* Shared device helpers of the baseline kernels: warp reductions and the GGML block formats.
 *
 * Each weight type is a struct with BLOCK (elements per block), BYTES (bytes per block) and PARTS
 * (slices of 16 elements per block, one thread's unit of work). dot() multiplies one part with the
 * matching 16 activations; dequant() writes one part's 16 values. Layouts mirror
 * reference_runtime/quants.py, which is the bit-exact oracle. Loads are as wide as each block
 * format's alignment allows (see evalbot_slots.h: Q6_K / Q8_0 / Q5_0 blocks are 2-byte aligned).
 */
#pragma once
#include "../evalbot_slots.h"

#define EB_FULL_MASK 0xffffffffu

__device__ __forceinline__ float eb_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(EB_FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float eb_warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(EB_FULL_MASK, v, o));
    return v;
}

// Sum over aligned groups of 16 lanes (two GEMV rows share a warp).
__device__ __forceinline__ float eb_half_warp_sum(float v) {
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(EB_FULL_MASK, v, o);
    return v;
}

// Block-wide sum; every thread gets the result. blockDim.x must be a multiple of 32 (<= 1024).
__device__ __forceinline__ float eb_block_sum(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = eb_warp_sum(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float s = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0f;
        s = eb_warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

// Block-wide max; every thread gets the result. Same launch rules as eb_block_sum.
__device__ __forceinline__ float eb_block_max(float v) {
    __shared__ float partial[32];
    __shared__ float total;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = eb_warp_max(v);
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float m = lane < (int)(blockDim.x >> 5) ? partial[lane] : -INFINITY;
        m = eb_warp_max(m);
        if (lane == 0) total = m;
    }
    __syncthreads();
    return total;
}

__device__ __forceinline__ float eb_f16(const uint8_t* p) {
    return __half2float(*reinterpret_cast<const __half*>(p));
}

// Four bytes from a 2-byte-aligned address.
__device__ __forceinline__ uint32_t eb_u32_a2(const uint8_t* p) {
    const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
    return (uint32_t)h[0] | ((uint32_t)h[1] << 16);
}

__device__ __forceinline__ void eb_load16(const float* x, float v[16]) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float4 f = reinterpret_cast<const float4*>(x)[i];
        v[4 * i] = f.x; v[4 * i + 1] = f.y; v[4 * i + 2] = f.z; v[4 * i + 3] = f.w;
    }
}

__device__ __forceinline__ float eb_dot_u8x4(uint32_t q, int shift, const float* x, int off) {
    return (float)((q >> shift) & 0xF) * x[off] + (float)((q >> (shift + 8)) & 0xF) * x[off + 1] +
           (float)((q >> (shift + 16)) & 0xF) * x[off + 2] + (float)((q >> (shift + 24)) & 0xF) * x[off + 3];
}

/* Q4_K: fp16 d | fp16 dmin | 12 bytes of 6-bit (scale, min) x 8 | 128 bytes of nibbles. Sub-block
 * 2g holds the low nibbles of bytes 32g..32g+31, sub-block 2g+1 their high nibbles. Part p covers
 * bytes 8p..8p+7 of the nibbles: elements 64g+i0..+7 (low) and 64g+32+i0..+7 (high), g = p/4,
 * i0 = 8(p%4). */
struct EbQ4K {
    static constexpr int BLOCK = 256, BYTES = 144, PARTS = 16, TYPE = EVALBOT_TYPE_Q4_K;

    __device__ static void scale_min(const uint8_t* s, int j, int& sc, int& m) {
        if (j < 4) {
            sc = s[j] & 63;
            m = s[j + 4] & 63;
        } else {
            sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
            m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
    }

    __device__ static float dot(const uint8_t* blk, int p, const float* xb) {
        const int g = p >> 2, i0 = (p & 3) * 8;
        const uint2 q = *reinterpret_cast<const uint2*>(blk + 16 + 8 * p);
        float lo[8], hi[8];
        const float4* xl = reinterpret_cast<const float4*>(xb + 64 * g + i0);
        const float4* xh = reinterpret_cast<const float4*>(xb + 64 * g + 32 + i0);
        const float4 a = xl[0], b = xl[1], c = xh[0], e = xh[1];
        lo[0] = a.x; lo[1] = a.y; lo[2] = a.z; lo[3] = a.w; lo[4] = b.x; lo[5] = b.y; lo[6] = b.z; lo[7] = b.w;
        hi[0] = c.x; hi[1] = c.y; hi[2] = c.z; hi[3] = c.w; hi[4] = e.x; hi[5] = e.y; hi[6] = e.z; hi[7] = e.w;
        const float ql = eb_dot_u8x4(q.x, 0, lo, 0) + eb_dot_u8x4(q.y, 0, lo, 4);
        const float qh = eb_dot_u8x4(q.x, 4, hi, 0) + eb_dot_u8x4(q.y, 4, hi, 4);
        const float sl = lo[0] + lo[1] + lo[2] + lo[3] + lo[4] + lo[5] + lo[6] + lo[7];
        const float sh = hi[0] + hi[1] + hi[2] + hi[3] + hi[4] + hi[5] + hi[6] + hi[7];
        int sc0, m0, sc1, m1;
        scale_min(blk + 4, 2 * g, sc0, m0);
        scale_min(blk + 4, 2 * g + 1, sc1, m1);
        const float d = eb_f16(blk), dmin = eb_f16(blk + 2);
        return (d * (float)sc0) * ql - (dmin * (float)m0) * sl + (d * (float)sc1) * qh - (dmin * (float)m1) * sh;
    }

    __device__ static void dequant(const uint8_t* blk, int p, float* yb) {
        const int g = p >> 2, i0 = (p & 3) * 8;
        int sc0, m0, sc1, m1;
        scale_min(blk + 4, 2 * g, sc0, m0);
        scale_min(blk + 4, 2 * g + 1, sc1, m1);
        const float d = eb_f16(blk), dmin = eb_f16(blk + 2);
        // Product then difference, each rounded to f32: the same operations as quants.py.
        const float d0 = d * (float)sc0, n0 = dmin * (float)m0, d1 = d * (float)sc1, n1 = dmin * (float)m1;
        const uint8_t* q = blk + 16 + 8 * p;
        for (int i = 0; i < 8; ++i) {
            yb[64 * g + i0 + i] = __fsub_rn(__fmul_rn(d0, (float)(q[i] & 0xF)), n0);
            yb[64 * g + 32 + i0 + i] = __fsub_rn(__fmul_rn(d1, (float)(q[i] >> 4)), n1);
        }
    }
};

/* Q6_K: 128 bytes of low nibbles | 64 bytes of 2-bit high parts | 16 int8 scales | fp16 d. In half
 * hh (128 elements), element 32t+j (t < 4, j < 32) takes nibble t/2 of byte 64hh + 32(t%2) + j and
 * bits 2t of byte 128 + 32hh + j; q - 32 is scaled by d * scale[(128hh + 32t + j) / 16]. Part p:
 * hh = p/8, j0 = 4(p%8), elements 32t + j0..j0+3 for t = 0..3. */
struct EbQ6K {
    static constexpr int BLOCK = 256, BYTES = 210, PARTS = 16, TYPE = EVALBOT_TYPE_Q6_K;

    __device__ static int q(uint32_t ql, uint32_t qh, int t, int c) {
        const int low = (ql >> (8 * c + 4 * (t >> 1))) & 0xF;
        const int high = (qh >> (8 * c + 2 * t)) & 3;
        return (low | (high << 4)) - 32;
    }

    __device__ static float dot(const uint8_t* blk, int p, const float* xb) {
        const int hh = p >> 3, j0 = (p & 7) * 4;
        const uint32_t ql0 = eb_u32_a2(blk + 64 * hh + j0), ql1 = eb_u32_a2(blk + 64 * hh + 32 + j0);
        const uint32_t qh = eb_u32_a2(blk + 128 + 32 * hh + j0);
        const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
        const float d = eb_f16(blk + 208);
        float sum = 0.0f;
#pragma unroll
        for (int t = 0; t < 4; ++t) {
            const float4 xv = *reinterpret_cast<const float4*>(xb + 128 * hh + 32 * t + j0);
            const uint32_t ql = (t & 1) ? ql1 : ql0;
            const float s = (float)q(ql, qh, t, 0) * xv.x + (float)q(ql, qh, t, 1) * xv.y +
                            (float)q(ql, qh, t, 2) * xv.z + (float)q(ql, qh, t, 3) * xv.w;
            sum += (d * (float)sc[8 * hh + 2 * t + (j0 >> 4)]) * s;
        }
        return sum;
    }

    __device__ static void dequant(const uint8_t* blk, int p, float* yb) {
        const int hh = p >> 3, j0 = (p & 7) * 4;
        const uint32_t ql0 = eb_u32_a2(blk + 64 * hh + j0), ql1 = eb_u32_a2(blk + 64 * hh + 32 + j0);
        const uint32_t qh = eb_u32_a2(blk + 128 + 32 * hh + j0);
        const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
        const float d = eb_f16(blk + 208);
        for (int t = 0; t < 4; ++t) {
            const float ds = __fmul_rn(d, (float)sc[8 * hh + 2 * t + (j0 >> 4)]);
            const uint32_t ql = (t & 1) ? ql1 : ql0;
            for (int c = 0; c < 4; ++c) yb[128 * hh + 32 * t + j0 + c] = __fmul_rn(ds, (float)q(ql, qh, t, c));
        }
    }
};

/* Q8_0: fp16 d | 32 int8. Part p: elements 16p..16p+15. */
struct EbQ80 {
    static constexpr int BLOCK = 32, BYTES = 34, PARTS = 2, TYPE = EVALBOT_TYPE_Q8_0;

    __device__ static float dot(const uint8_t* blk, int p, const float* xb) {
        const uint8_t* qs = blk + 2 + 16 * p;
        float x[16];
        eb_load16(xb + 16 * p, x);
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const uint16_t two = reinterpret_cast<const uint16_t*>(qs)[i];
            s += (float)(int8_t)(two & 0xFF) * x[2 * i] + (float)(int8_t)(two >> 8) * x[2 * i + 1];
        }
        return eb_f16(blk) * s;
    }

    __device__ static void dequant(const uint8_t* blk, int p, float* yb) {
        const float d = eb_f16(blk);
        const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2 + 16 * p);
        for (int i = 0; i < 16; ++i) yb[16 * p + i] = __fmul_rn((float)qs[i], d);
    }
};

/* Q5_0: fp16 d | u32 high bits | 16 bytes of nibbles. Element j < 16: low nibble of byte j and bit
 * j; element j + 16: high nibble of byte j and bit j + 16; value d * (q - 16). Part p: bytes
 * 8p..8p+7, i.e. elements 8p..8p+7 and 16+8p..16+8p+7. */
struct EbQ50 {
    static constexpr int BLOCK = 32, BYTES = 22, PARTS = 2, TYPE = EVALBOT_TYPE_Q5_0;

    __device__ static int q(uint32_t qs, uint32_t qh, int byte, int c, int high) {
        const int nib = (qs >> (8 * c + 4 * high)) & 0xF;
        return (nib | (((qh >> (byte + 16 * high)) & 1) << 4)) - 16;
    }

    __device__ static float dot(const uint8_t* blk, int p, const float* xb) {
        const uint32_t qh = eb_u32_a2(blk + 2);
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < 2; ++w) {
            const uint32_t qs = eb_u32_a2(blk + 6 + 8 * p + 4 * w);
            const int b = 8 * p + 4 * w;
            const float4 lo = *reinterpret_cast<const float4*>(xb + b);
            const float4 hi = *reinterpret_cast<const float4*>(xb + 16 + b);
            s += (float)q(qs, qh, b, 0, 0) * lo.x + (float)q(qs, qh, b + 1, 1, 0) * lo.y +
                 (float)q(qs, qh, b + 2, 2, 0) * lo.z + (float)q(qs, qh, b + 3, 3, 0) * lo.w;
            s += (float)q(qs, qh, b, 0, 1) * hi.x + (float)q(qs, qh, b + 1, 1, 1) * hi.y +
                 (float)q(qs, qh, b + 2, 2, 1) * hi.z + (float)q(qs, qh, b + 3, 3, 1) * hi.w;
        }
        return eb_f16(blk) * s;
    }

    __device__ static void dequant(const uint8_t* blk, int p, float* yb) {
        const uint32_t qh = eb_u32_a2(blk + 2);
        const float d = eb_f16(blk);
        for (int w = 0; w < 2; ++w) {
            const uint32_t qs = eb_u32_a2(blk + 6 + 8 * p + 4 * w);
            const int b = 8 * p + 4 * w;
            for (int c = 0; c < 4; ++c) {
                yb[b + c] = __fmul_rn(d, (float)q(qs, qh, b + c, c, 0));
                yb[16 + b + c] = __fmul_rn(d, (float)q(qs, qh, b + c, c, 1));
            }
        }
    }
};

/* F32: a "block" of 16 floats, one part; needs n_cols % 16 == 0 for the baseline (checked by the
 * runtime; the ABI itself only promises % 4). */
struct EbF32 {
    static constexpr int BLOCK = 16, BYTES = 64, PARTS = 1, TYPE = EVALBOT_TYPE_F32;

    __device__ static float dot(const uint8_t* blk, int, const float* xb) {
        const float4* w = reinterpret_cast<const float4*>(blk);
        const float4* x = reinterpret_cast<const float4*>(xb);
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float4 a = w[i], b = x[i];
            s += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
        }
        return s;
    }

    __device__ static void dequant(const uint8_t* blk, int, float* yb) {
        const float4* w = reinterpret_cast<const float4*>(blk);
        for (int i = 0; i < 4; ++i) reinterpret_cast<float4*>(yb)[i] = w[i];
    }
};

/* Partial dot of one weight row with x, for the 16 threads (lane16 = 0..15) that share the row;
 * the caller sums the 16 partials. */
template <typename Q>
__device__ __forceinline__ float eb_row_dot(const uint8_t* row, const float* x, int n_cols, int lane16) {
    const int items = (n_cols / Q::BLOCK) * Q::PARTS;
    float s = 0.0f;
#pragma unroll 4
    for (int it = lane16; it < items; it += 16) {
        const int b = it / Q::PARTS, p = it % Q::PARTS;
        s += Q::dot(row + (size_t)b * Q::BYTES, p, x + (size_t)b * Q::BLOCK);
    }
    return s;
}

template <typename Q>
__host__ __device__ constexpr size_t eb_row_bytes(int n_cols) {
    return (size_t)(n_cols / Q::BLOCK) * Q::BYTES;
}

// Row dot for a weight type known only at run time (uniform across the block).
__device__ __forceinline__ float eb_row_dot_any(int type, const uint8_t* row, const float* x, int n_cols,
                                                int lane16) {
    switch (type) {
        case EVALBOT_TYPE_Q4_K: return eb_row_dot<EbQ4K>(row, x, n_cols, lane16);
        case EVALBOT_TYPE_Q6_K: return eb_row_dot<EbQ6K>(row, x, n_cols, lane16);
        case EVALBOT_TYPE_Q8_0: return eb_row_dot<EbQ80>(row, x, n_cols, lane16);
        case EVALBOT_TYPE_Q5_0: return eb_row_dot<EbQ50>(row, x, n_cols, lane16);
        default: return eb_row_dot<EbF32>(row, x, n_cols, lane16);
    }
}

__device__ __forceinline__ size_t eb_row_bytes_any(int type, int n_cols) {
    switch (type) {
        case EVALBOT_TYPE_Q4_K: return eb_row_bytes<EbQ4K>(n_cols);
        case EVALBOT_TYPE_Q6_K: return eb_row_bytes<EbQ6K>(n_cols);
        case EVALBOT_TYPE_Q8_0: return eb_row_bytes<EbQ80>(n_cols);
        case EVALBOT_TYPE_Q5_0: return eb_row_bytes<EbQ50>(n_cols);
        default: return (size_t)n_cols * 4;
    }
}

__device__ __forceinline__ float eb_silu(float g) { return g / (1.0f + expf(-g)); }

__device__ __forceinline__ float eb_gelu_tanh(float g) {
    return 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
}
