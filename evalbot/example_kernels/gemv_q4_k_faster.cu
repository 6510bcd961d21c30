/* gemv_q4_k, faster than the runtime's baseline (src/gemv_q4_k.cu on main) in two ways:
 *
 * 1. A row gets as many threads as it has 16-element parts, up to the whole 128-thread block.
 *    The baseline gives every row 16 threads (8 rows per block), so a 2048-column row (the attention
 *    output projection) is 128 parts in 8 serial steps per thread, on n_rows / 8 blocks: 32 blocks
 *    for 256 rows, a quarter of an H100/H200's SMs. Here that row is one block of 128 threads, one
 *    part each: 8x the blocks, every weight load of a thread in flight at once. Rows of 256 columns
 *    keep the baseline's 16 threads per row.
 * 2. A Q4_K block's 16-byte header (fp16 d, fp16 dmin, 12 bytes of packed 6-bit scales and mins) is
 *    read with one 16-byte load instead of two 2-byte loads plus up to six byte loads per part.
 *
 * Rows per block, as in kernels.toml's grid: 8 // (Q4_K blocks per row), at least 1 -- 8, 4, 2 or 1.
 * The arithmetic per part is the baseline's (include/common.h, EbQ4K::dot), so results agree with it
 * to float rounding of the summation order.
 */
#include "common.h"

constexpr int GEMV_THREADS = 128;

// Scale and min of sub-block j (0..7) from the 12 packed bytes held as three words.
__device__ __forceinline__ void q4k_scale_min(uint32_t s0, uint32_t s1, uint32_t s2, int j, float& sc, float& m) {
    if (j < 4) {
        sc = (float)((s0 >> (8 * j)) & 63);
        m = (float)((s1 >> (8 * j)) & 63);
    } else {
        const int k = 8 * (j - 4);
        sc = (float)(((s2 >> k) & 0xF) | (((s0 >> (k + 6)) & 3) << 4));
        m = (float)(((s2 >> (k + 4)) & 0xF) | (((s1 >> (k + 6)) & 3) << 4));
    }
}

// One part p (0..15) of one Q4_K block against the block's 256 activations.
__device__ __forceinline__ float q4k_part(const uint8_t* blk, int p, const float* xb) {
    const uint4 head = *reinterpret_cast<const uint4*>(blk);  // Q4_K blocks are 16-byte aligned
    const uint2 q = *reinterpret_cast<const uint2*>(blk + 16 + 8 * p);
    const int g = p >> 2, i0 = (p & 3) * 8;
    const float4* xl = reinterpret_cast<const float4*>(xb + 64 * g + i0);
    const float4* xh = reinterpret_cast<const float4*>(xb + 64 * g + 32 + i0);
    const float4 a = xl[0], b = xl[1], c = xh[0], e = xh[1];
    const float lo[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    const float hi[8] = {c.x, c.y, c.z, c.w, e.x, e.y, e.z, e.w};
    const float ql = eb_dot_u8x4(q.x, 0, lo, 0) + eb_dot_u8x4(q.y, 0, lo, 4);
    const float qh = eb_dot_u8x4(q.x, 4, hi, 0) + eb_dot_u8x4(q.y, 4, hi, 4);
    const float sl = lo[0] + lo[1] + lo[2] + lo[3] + lo[4] + lo[5] + lo[6] + lo[7];
    const float sh = hi[0] + hi[1] + hi[2] + hi[3] + hi[4] + hi[5] + hi[6] + hi[7];
    float sc0, m0, sc1, m1;
    q4k_scale_min(head.y, head.z, head.w, 2 * g, sc0, m0);
    q4k_scale_min(head.y, head.z, head.w, 2 * g + 1, sc1, m1);
    const __half2 dm = *reinterpret_cast<const __half2*>(&head.x);
    const float d = __low2float(dm), dmin = __high2float(dm);
    return (d * sc0) * ql - (dmin * m0) * sl + (d * sc1) * qh - (dmin * m1) * sh;
}

extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_q4_k(EVALBOT_GEMV_ARGS) {
    EVALBOT_GRID_ENTER();  // pdl = true in kernels.toml: wait for the previous kernel on the device
    __shared__ float partial[GEMV_THREADS / 32];
    const int blocks = n_cols / 256;                        // Q4_K blocks per row
    const int rows_per_block = max(1, 8 / max(1, blocks));  // 8, 4, 2 or 1: keep in step with the grid
    const int threads = GEMV_THREADS / rows_per_block;      // per row: 16, 32, 64 or 128
    const int local = threadIdx.x / threads, lane = threadIdx.x % threads;
    const int row = blockIdx.x * rows_per_block + local;
    // Rows past the end still take part in the shuffles, on a clamped row; they write nothing.
    const int r = row < n_rows ? row : n_rows - 1;
    const uint8_t* wr = static_cast<const uint8_t*>(w) + (size_t)r * blocks * 144;
    float s = 0.0f;
    for (int it = lane; it < blocks * 16; it += threads)
        s += q4k_part(wr + (size_t)(it >> 4) * 144, it & 15, x + (size_t)(it >> 4) * 256);
    if (threads == 16) {
        s = eb_half_warp_sum(s);
    } else {
        s = eb_warp_sum(s);
        if (threads > 32) {  // one row spans 2 or 4 warps: add their sums through shared memory
            const int warp = threadIdx.x >> 5;
            if ((threadIdx.x & 31) == 0) partial[warp] = s;
            __syncthreads();
            if (lane == 0) {
                s = 0.0f;
                for (int i = 0; i < threads / 32; ++i) s += partial[warp + i];
            }
        }
    }
    if (lane == 0 && row < n_rows) y[row] = s;
}
