/* Baseline attention slots: split-K ("flash-decoding") GQA decode attention over the fp16 cache.
 *
 * Launch 1 (partial), grid (n_head_kv, n_split): block (g, s) takes KV head g and the s-th chunk of
 * the attended range, with every query head of g's group, so each K/V row is read once per group.
 * Per tile of 128 positions: one thread per position scores it against the group's queries (q in
 * shared memory, broadcast reads), an online softmax keeps a running max and sum per head, and
 * each warp accumulates 32 positions' V rows with lanes owning head_dim/32 contiguous dimensions
 * (vector loads). The chunk length is derived on the device from *pos, so one captured grid serves
 * every length; splits past the end write an empty marker.
 * Launch 2 (combine), grid n_head: merges the splits' (max, sum, accumulator) triples.
 *
 * Scratch: 256-byte header (int n_split), then float ml[n_head][n_split][2] (max, sum), then, at
 * the next 16-byte boundary, float acc[n_head][n_split][head_dim]. */
#include "common.h"

constexpr int EB_ATTN_THREADS = 128;
constexpr int EB_ATTN_TILE = 128;
constexpr int EB_ATTN_MIN_CHUNK = 64;
constexpr int EB_ATTN_MAX_SPLIT = 1024;

struct EbScratch {
    int* header;
    float* ml;
    float* acc;
};

__device__ __forceinline__ EbScratch eb_scratch(void* scratch, int n_head, int n_split) {
    char* base = static_cast<char*>(scratch);
    EbScratch s;
    s.header = reinterpret_cast<int*>(base);
    s.ml = reinterpret_cast<float*>(base + 256);
    const size_t ml_bytes = ((size_t)n_head * n_split * 2 * sizeof(float) + 15) & ~(size_t)15;
    s.acc = reinterpret_cast<float*>(base + 256 + ml_bytes);
    return s;
}

template <int N>
__device__ __forceinline__ void eb_load_halves(const __half* p, float* f) {
    static_assert(N % 4 == 0, "vector width");
    if constexpr (N % 8 == 0) {
#pragma unroll
        for (int c = 0; c < N / 8; ++c) {
            const uint4 raw = reinterpret_cast<const uint4*>(p)[c];
            const __half2* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float2 v = __half22float2(h[i]);
                f[8 * c + 2 * i] = v.x;
                f[8 * c + 2 * i + 1] = v.y;
            }
        }
    } else {
        const uint2 raw = *reinterpret_cast<const uint2*>(p);
        const __half2* h = reinterpret_cast<const __half2*>(&raw);
        const float2 a = __half22float2(h[0]), b = __half22float2(h[1]);
        f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
    }
}

template <int D, int GTMAX>
__device__ void eb_attn_partial(EVALBOT_ATTN_ARGS) {
    static_assert(GTMAX <= 8, "the tile reductions give each of 4 warps at most 2 heads");
    constexpr int DL = D / 32;
    __shared__ __align__(16) float q_s[GTMAX * D];
    __shared__ float p_s[GTMAX][EB_ATTN_TILE];
    __shared__ float m_s[GTMAX], corr_s[GTMAX], l_s[GTMAX];

    const int G = n_head / n_head_kv;
    int gt = GTMAX;
    while (G % gt) gt >>= 1;
    const int kvh = blockIdx.x, split = blockIdx.y, n_split = gridDim.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const EbScratch sc = eb_scratch(scratch, n_head, n_split);
    if (kvh == 0 && split == 0 && threadIdx.x == 0) sc.header[0] = n_split;

    const int hi = min(*pos, n_ctx - 1) + 1;
    const int lo = n_swa > 0 ? max(0, hi - n_swa) : 0;
    const int chunk = max((hi - lo + n_split - 1) / n_split, EB_ATTN_MIN_CHUNK);
    const int s0 = lo + split * chunk, s1 = min(hi, s0 + chunk);
    const __half* kc = k_cache + (size_t)kvh * n_ctx * D;
    const __half* vc = v_cache + (size_t)kvh * n_ctx * D;

    for (int h0 = kvh * G; h0 < (kvh + 1) * G; h0 += gt) {
        if (s0 >= s1) {
            if (threadIdx.x < gt) {
                sc.ml[((size_t)(h0 + threadIdx.x) * n_split + split) * 2] = -INFINITY;
                sc.ml[((size_t)(h0 + threadIdx.x) * n_split + split) * 2 + 1] = 0.0f;
            }
            continue;
        }
        __syncthreads();  // q_s is reused from the previous pass's final reduction
        for (int i = threadIdx.x; i < gt * D; i += blockDim.x) q_s[i] = q[(size_t)h0 * D + i] * scale;
        if (threadIdx.x < gt) {
            m_s[threadIdx.x] = -INFINITY;
            l_s[threadIdx.x] = 0.0f;
        }
        float acc[GTMAX][DL];
#pragma unroll
        for (int g = 0; g < GTMAX; ++g)
#pragma unroll
            for (int i = 0; i < DL; ++i) acc[g][i] = 0.0f;
        __syncthreads();

        for (int tile = s0; tile < s1; tile += EB_ATTN_TILE) {
            const int j = tile + threadIdx.x;
            float s[GTMAX];
#pragma unroll
            for (int g = 0; g < GTMAX; ++g) s[g] = 0.0f;
            if (j < s1) {
                const __half* kr = kc + (size_t)j * D;
#pragma unroll 4
                for (int c = 0; c < D / 8; ++c) {
                    float kf[8];
                    eb_load_halves<8>(kr + 8 * c, kf);
#pragma unroll
                    for (int g = 0; g < GTMAX; ++g) {
                        if (g < gt) {
                            const float4 a = *reinterpret_cast<const float4*>(q_s + g * D + 8 * c);
                            const float4 b = *reinterpret_cast<const float4*>(q_s + g * D + 8 * c + 4);
                            s[g] += a.x * kf[0] + a.y * kf[1] + a.z * kf[2] + a.w * kf[3] + b.x * kf[4] +
                                    b.y * kf[5] + b.z * kf[6] + b.w * kf[7];
                        }
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < GTMAX; ++g)
                if (g < gt) p_s[g][threadIdx.x] = j < s1 ? s[g] : -INFINITY;
            __syncthreads();

            for (int g = warp; g < gt; g += EB_ATTN_THREADS / 32) {
                float mx = -INFINITY;
                for (int i = lane; i < EB_ATTN_TILE; i += 32) mx = fmaxf(mx, p_s[g][i]);
                mx = eb_warp_max(mx);
                if (lane == 0) {
                    const float m_new = fmaxf(m_s[g], mx);
                    corr_s[g] = expf(m_s[g] - m_new);
                    m_s[g] = m_new;
                }
            }
            __syncthreads();
#pragma unroll
            for (int g = 0; g < GTMAX; ++g)
                if (g < gt) p_s[g][threadIdx.x] = j < s1 ? expf(p_s[g][threadIdx.x] - m_s[g]) : 0.0f;
            __syncthreads();

            for (int g = warp; g < gt; g += EB_ATTN_THREADS / 32) {
                float sum = 0.0f;
                for (int i = lane; i < EB_ATTN_TILE; i += 32) sum += p_s[g][i];
                sum = eb_warp_sum(sum);
                if (lane == 0) l_s[g] = l_s[g] * corr_s[g] + sum;
            }
#pragma unroll
            for (int g = 0; g < GTMAX; ++g)
#pragma unroll
                for (int i = 0; i < DL; ++i) acc[g][i] *= (g < gt ? corr_s[g] : 0.0f);

            const int first = tile + 32 * warp;
            const int count = min(32, s1 - first);
            for (int t = 0; t < count; ++t) {
                float vf[DL];
                eb_load_halves<DL>(vc + (size_t)(first + t) * D + lane * DL, vf);
#pragma unroll
                for (int g = 0; g < GTMAX; ++g) {
                    if (g < gt) {
                        const float pv = p_s[g][32 * warp + t];
#pragma unroll
                        for (int i = 0; i < DL; ++i) acc[g][i] += pv * vf[i];
                    }
                }
            }
            __syncthreads();  // p_s, m_s and corr_s are rewritten by the next tile
        }

        for (int i = threadIdx.x; i < gt * D; i += blockDim.x) q_s[i] = 0.0f;
        __syncthreads();
        for (int w = 0; w < EB_ATTN_THREADS / 32; ++w) {
            if (warp == w) {
#pragma unroll
                for (int g = 0; g < GTMAX; ++g)
                    if (g < gt)
#pragma unroll
                        for (int i = 0; i < DL; ++i) q_s[g * D + lane * DL + i] += acc[g][i];
            }
            __syncthreads();
        }
        for (int i = threadIdx.x; i < gt * D; i += blockDim.x) {
            const int g = i / D, d = i % D;
            sc.acc[((size_t)(h0 + g) * n_split + split) * D + d] = q_s[i];
        }
        if (threadIdx.x < gt) {
            sc.ml[((size_t)(h0 + threadIdx.x) * n_split + split) * 2] = m_s[threadIdx.x];
            sc.ml[((size_t)(h0 + threadIdx.x) * n_split + split) * 2 + 1] = l_s[threadIdx.x];
        }
    }
}

template <int D>
__device__ void eb_attn_combine(EVALBOT_ATTN_ARGS) {
    __shared__ float w_s[EB_ATTN_MAX_SPLIT];
    __shared__ float inv_total;
    const int h = blockIdx.x;
    const int n_split = *reinterpret_cast<const int*>(scratch);
    const EbScratch sc = eb_scratch(scratch, n_head, n_split);
    const float* ml = sc.ml + (size_t)h * n_split * 2;
    float m_max = -INFINITY;
    for (int s = 0; s < n_split; ++s) m_max = fmaxf(m_max, ml[2 * s]);
    // Empty splits (max = -inf) get weight 0 and their accumulators, never written, are skipped.
    float part = 0.0f;
    for (int s = threadIdx.x; s < n_split; s += blockDim.x) {
        const float m = ml[2 * s];
        const float w = m == -INFINITY ? 0.0f : expf(m - m_max);
        w_s[s] = w;
        part += w * ml[2 * s + 1];
    }
    const float total = eb_block_sum(part);
    if (threadIdx.x == 0) inv_total = 1.0f / total;
    __syncthreads();
    const float* acc = sc.acc + (size_t)h * n_split * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < n_split; ++s)
            if (w_s[s] != 0.0f) o += w_s[s] * acc[(size_t)s * D + d];
        out[(size_t)h * D + d] = o * inv_total;
    }
}

#define EB_ATTN(name, D, GT)                                                                                 \
    extern "C" __global__ void __launch_bounds__(EB_ATTN_THREADS) name##_partial(EVALBOT_ATTN_ARGS) {       \
        eb_attn_partial<D, GT>(q, k_cache, v_cache, out, scratch, pos, n_head, n_head_kv, n_ctx, n_swa, scale); \
    }                                                                                                        \
    extern "C" __global__ void name##_combine(EVALBOT_ATTN_ARGS) {                                           \
        eb_attn_combine<D>(q, k_cache, v_cache, out, scratch, pos, n_head, n_head_kv, n_ctx, n_swa, scale);  \
    }

EB_ATTN(attn_decode_hd128, 128, 8)
EB_ATTN(attn_decode_hd256, 256, 8)
EB_ATTN(attn_decode_swa_hd256, 256, 8)
EB_ATTN(attn_decode_hd512, 512, 4)
