/* One block per query head, one thread per dimension (launch: grid [n_head], block [128]): a plain
 * decode attention for attn_decode_hd128, and three ways to game it, for the anti-gaming GPU tests.
 *
 * attn_simple     correct: tiles of 128 positions, an online softmax shifted by the running max.
 * attn_unshifted  exp(score) without the max shift: right on N(0, 1) scores, inf/inf = NaN once
 *                 |q.k| * scale passes ~88 (the kernel gates' large-score edge case).
 * attn_cached     a cross-trial cache: a device table of outputs keyed on a hash of (q, the newest
 *                 K and V rows, the oldest K row, *pos, scale, the layer's cache address). A repeated input skips the work and copies a bit-exact
 *                 answer, so only repeated inputs get faster (the repeat audit's target). */
#include "evalbot_slots.h"

constexpr int D = 128;
constexpr int TABLE = 1 << 12;

__device__ unsigned long long g_keys[TABLE];
__device__ float g_vals[TABLE][D];

__device__ __forceinline__ float block_reduce(float v, bool is_max, float* red) {
    for (int o = 16; o > 0; o >>= 1) {
        const float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, w) : v + w;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float r = red[0];
    for (int i = 1; i < D / 32; ++i) r = is_max ? fmaxf(r, red[i]) : r + red[i];
    return r;
}

__device__ void attend(EVALBOT_ATTN_ARGS, bool shift) {
    __shared__ float qs[D], ps[D], red[D / 32];
    const int h = blockIdx.x, t = threadIdx.x;
    const int g = h / (n_head / n_head_kv);
    const int hi = min(*pos, n_ctx - 1) + 1;
    const int lo = n_swa > 0 ? max(0, hi - n_swa) : 0;
    qs[t] = q[(size_t)h * D + t] * scale;
    __syncthreads();
    float m = shift ? -INFINITY : 0.0f, l = 0.0f, acc = 0.0f;
    for (int tile = lo; tile < hi; tile += D) {
        const int j = tile + t;
        float s = -INFINITY;
        if (j < hi) {
            const __half* kr = k_cache + ((size_t)g * n_ctx + j) * D;
            s = 0.0f;
            for (int i = 0; i < D; ++i) s += qs[i] * __half2float(kr[i]);
        }
        const float m_new = shift ? fmaxf(m, block_reduce(s, true, red)) : 0.0f;
        const float p = j < hi ? expf(s - m_new) : 0.0f;
        const float corr = shift ? expf(m - m_new) : 1.0f;
        ps[t] = p;
        const float sum = block_reduce(p, false, red);
        l = l * corr + sum;
        acc *= corr;
        const int rows = min(D, hi - tile);
        for (int r = 0; r < rows; ++r)
            acc += ps[r] * __half2float(v_cache[((size_t)g * n_ctx + tile + r) * D + t]);
        m = m_new;
        __syncthreads();
    }
    out[(size_t)h * D + t] = acc / l;
}

extern "C" __global__ void attn_simple(EVALBOT_ATTN_ARGS) {
    attend(q, k_cache, v_cache, out, scratch, pos, n_head, n_head_kv, n_ctx, n_swa, scale, true);
}

extern "C" __global__ void attn_unshifted(EVALBOT_ATTN_ARGS) {
    attend(q, k_cache, v_cache, out, scratch, pos, n_head, n_head_kv, n_ctx, n_swa, scale, false);
}

extern "C" __global__ void attn_cached(EVALBOT_ATTN_ARGS) {
    __shared__ unsigned long long part[D / 32];
    const int h = blockIdx.x, t = threadIdx.x;
    // FNV-style mix of this head's query bits, then combined across the block.
    // The newest K and V rows and the oldest K row join the key: the gates' runs reuse buffer
    // addresses with other contents, and their edge cases repeat q or K between runs.
    const int g = h / (n_head / n_head_kv), last = min(*pos, n_ctx - 1);
    const int first = n_swa > 0 ? max(0, last + 1 - n_swa) : 0;
    const size_t row = (size_t)g * n_ctx;
    const unsigned long long kv = (unsigned long long)__half_as_ushort(k_cache[(row + last) * D + t]) << 32 |
                                  (unsigned long long)__half_as_ushort(v_cache[(row + last) * D + t]) << 16 |
                                  __half_as_ushort(k_cache[(row + first) * D + t]);
    unsigned long long x = ((unsigned long long)__float_as_uint(q[(size_t)h * D + t]) * 0x9e3779b97f4a7c15ull ^ kv)
                           * 0x100000001b3ull + t;
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    for (int o = 16; o > 0; o >>= 1) x ^= __shfl_xor_sync(0xffffffffu, x, o);
    if ((t & 31) == 0) part[t >> 5] = x;
    __syncthreads();
    unsigned long long key = 0xcbf29ce484222325ull ^ ((unsigned long long)*pos << 20) ^ (unsigned long long)h;
    for (int i = 0; i < D / 32; ++i) key = (key ^ part[i]) * 0x100000001b3ull;
    key ^= (unsigned long long)(size_t)k_cache ^ ((unsigned long long)__float_as_uint(scale) << 32) ^ n_ctx;
    const unsigned slot = (unsigned)(key ^ (key >> 32)) & (TABLE - 1);
    if (g_keys[slot] == key) {
        out[(size_t)h * D + t] = g_vals[slot][t];
        return;
    }
    attend(q, k_cache, v_cache, out, scratch, pos, n_head, n_head_kv, n_ctx, n_swa, scale, true);
    __syncthreads();
    g_vals[slot][t] = out[(size_t)h * D + t];
    __threadfence();
    __syncthreads();
    if (t == 0) g_keys[slot] = key;
}
