/* Baseline attention slots: split-K ("flash-decoding") GQA decode attention over the fp16 cache.
 *
 * Launch 1 (partial), grid (n_head_kv, n_split): block (g, s) takes KV head g and the s-th chunk of
 * the attended range, with every query head of g's group, so each K/V row is read once per group.
 * Per tile of 32 positions: four threads per position score it against the group's queries (q in
 * shared memory), an online softmax keeps a running max and sum per head, and the
 * tile's V rows are dealt round-robin to the warps, lanes owning head_dim/32 contiguous dimensions
 * (vector loads, several rows in flight). The chunk length is derived on the device from *pos, so
 * one captured grid serves every length; splits past the end write an empty marker.
 * Launch 2 (combine), grid n_head, 1024 threads: merges the splits' (max, sum, accumulator).
 *
 * Scratch: 256-byte header (int n_split), then float ml[n_head][n_split][2] (max, sum), then, at
 * the next 16-byte boundary, float acc[n_head][n_split][head_dim]. */
#include "common.h"

constexpr int EB_ATTN_THREADS = 128;
constexpr int EB_ATTN_TILE = 32;  // positions per tile: one per lane in the softmax steps
constexpr int EB_ATTN_TPP = EB_ATTN_THREADS / EB_ATTN_TILE;  // threads scoring one position
constexpr int EB_ATTN_MIN_CHUNK = 32;
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

// One pass per GT query heads of the group. GT must divide the group size (eb_attn_partial_for
// picks the largest that does) and is a compile-time constant, so every per-head loop and test
// folds away. With the pass width a run-time value (the first baseline), a one-tile partial took
// 8.7 us for qwen3moe-tiny's group of 8 and 9.2 us for Gemma 3's group of 4 on an H200; exact,
// 5.1 and 4.9 us (benchmarks/attn_bench.py).
template <int D, int GT>
__device__ void eb_attn_partial(EVALBOT_ATTN_ARGS) {
    constexpr int GTMAX = GT;
    static_assert(GTMAX <= 8, "the tile reductions give each of 4 warps at most 2 heads");
    constexpr int DL = D / 32;
    __shared__ __align__(16) float q_s[GTMAX * D];
    __shared__ float p_s[GTMAX][EB_ATTN_TILE];
    __shared__ float m_s[GTMAX], corr_s[GTMAX], l_s[GTMAX];

    const int G = n_head / n_head_kv;
    constexpr int gt = GT;
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
        const float4* q4 = reinterpret_cast<const float4*>(q + (size_t)h0 * D);
#pragma unroll 4
        for (int i = threadIdx.x; i < gt * D / 4; i += EB_ATTN_THREADS) {
            const float4 v = q4[i];
            reinterpret_cast<float4*>(q_s)[i] = make_float4(v.x * scale, v.y * scale, v.z * scale, v.w * scale);
        }
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
            // Scores: EB_ATTN_TPP threads per position, thread q of a position taking the row's
            // 16-byte chunks q, q + TPP, ... (the position's threads read one contiguous span, and
            // their q_s reads fall in different banks), then a shuffle sum over the TPP lanes.
            const int jl = threadIdx.x / EB_ATTN_TPP, part = threadIdx.x % EB_ATTN_TPP;
            const int j = tile + jl;
            float s[GTMAX];
#pragma unroll
            for (int g = 0; g < GTMAX; ++g) s[g] = 0.0f;
            if (j < s1) {
                constexpr int NCQ = D / 8 / EB_ATTN_TPP;  // 16-byte chunks per thread, all in flight
                const uint4* kr = reinterpret_cast<const uint4*>(kc + (size_t)j * D);
                uint4 raw[NCQ];
#pragma unroll
                for (int u = 0; u < NCQ; ++u) raw[u] = kr[EB_ATTN_TPP * u + part];
#pragma unroll
                for (int u = 0; u < NCQ; ++u) {
                    const __half2* h2 = reinterpret_cast<const __half2*>(&raw[u]);
                    float kf[8];
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        const float2 v = __half22float2(h2[i]);
                        kf[2 * i] = v.x;
                        kf[2 * i + 1] = v.y;
                    }
                    const float* qc = q_s + 8 * (EB_ATTN_TPP * u + part);
#pragma unroll
                    for (int g = 0; g < GTMAX; ++g) {
                        if (g < gt) {
                            const float4 a = *reinterpret_cast<const float4*>(qc + g * D);
                            const float4 b = *reinterpret_cast<const float4*>(qc + g * D + 4);
                            s[g] += a.x * kf[0] + a.y * kf[1] + a.z * kf[2] + a.w * kf[3] + b.x * kf[4] +
                                    b.y * kf[5] + b.z * kf[6] + b.w * kf[7];
                        }
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < GTMAX; ++g) {
                if (g < gt) {
#pragma unroll
                    for (int o = 1; o < EB_ATTN_TPP; o <<= 1) s[g] += __shfl_xor_sync(EB_FULL_MASK, s[g], o);
                    if (part == 0) p_s[g][jl] = j < s1 ? s[g] : -INFINITY;
                }
            }
            __syncthreads();

            for (int g = warp; g < gt; g += EB_ATTN_THREADS / 32) {
                const float mx = eb_warp_max(p_s[g][lane]);
                if (lane == 0) {
                    const float m_new = fmaxf(m_s[g], mx);
                    corr_s[g] = expf(m_s[g] - m_new);
                    m_s[g] = m_new;
                }
            }
            __syncthreads();
            for (int i = threadIdx.x; i < gt * EB_ATTN_TILE; i += EB_ATTN_THREADS) {
                const int g = i / EB_ATTN_TILE, t = i % EB_ATTN_TILE;
                p_s[g][t] = tile + t < s1 ? expf(p_s[g][t] - m_s[g]) : 0.0f;
            }
            __syncthreads();

            for (int g = warp; g < gt; g += EB_ATTN_THREADS / 32) {
                const float sum = eb_warp_sum(p_s[g][lane]);
                if (lane == 0) l_s[g] = l_s[g] * corr_s[g] + sum;
            }
#pragma unroll
            for (int g = 0; g < GTMAX; ++g)
#pragma unroll
                for (int i = 0; i < DL; ++i) acc[g][i] *= (g < gt ? corr_s[g] : 0.0f);

            // The tile's V rows go round-robin to the warps (row t of the tile to warp t % 4), VU rows
            // in flight per lane; rows past the chunk are not loaded and carry probability 0.
            constexpr int VU = DL >= 8 ? 4 : 8;
            constexpr int NW = EB_ATTN_THREADS / 32;
            const int rows = min(EB_ATTN_TILE, s1 - tile);
            for (int t0 = warp; t0 < rows; t0 += NW * VU) {
                float vf[VU][DL];
#pragma unroll
                for (int u = 0; u < VU; ++u) {
                    const int t = t0 + NW * u;
                    if (t < rows) {
                        eb_load_halves<DL>(vc + (size_t)(tile + t) * D + lane * DL, vf[u]);
                    } else {
#pragma unroll
                        for (int i = 0; i < DL; ++i) vf[u][i] = 0.0f;
                    }
                }
#pragma unroll
                for (int u = 0; u < VU; ++u) {
                    const int t = t0 + NW * u;
#pragma unroll
                    for (int g = 0; g < GTMAX; ++g) {
                        if (g < gt) {
                            const float pv = t < rows ? p_s[g][t] : 0.0f;
#pragma unroll
                            for (int i = 0; i < DL; ++i) acc[g][i] += pv * vf[u][i];
                        }
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

#define EB_ATTN_ARG_NAMES q, k_cache, v_cache, out, scratch, pos, n_head, n_head_kv, n_ctx, n_swa, scale

// The largest exact pass width: GT in {GTMAX, ..., 2, 1} that divides the group size.
template <int D, int GTMAX>
__device__ __forceinline__ void eb_attn_partial_for(EVALBOT_ATTN_ARGS) {
    const int G = n_head / n_head_kv;
    if constexpr (GTMAX >= 8) {
        if (G % 8 == 0) return eb_attn_partial<D, 8>(EB_ATTN_ARG_NAMES);
    }
    if constexpr (GTMAX >= 4) {
        if (G % 4 == 0) return eb_attn_partial<D, 4>(EB_ATTN_ARG_NAMES);
    }
    if (G % 2 == 0) return eb_attn_partial<D, 2>(EB_ATTN_ARG_NAMES);
    eb_attn_partial<D, 1>(EB_ATTN_ARG_NAMES);
}

/* Combine, one block of EB_ATTN_COMBINE_THREADS per query head: 1024 / head_dim groups of head_dim
 * threads each sum a strided share of the splits, then the groups' sums are added in a fixed order.
 * The baseline partial fills splits from the front, so the non-empty splits are a prefix; empty
 * ones (max = -inf, accumulators never written) get weight 0 and are not read. */
constexpr int EB_ATTN_COMBINE_THREADS = 1024;

template <int D>
__device__ void eb_attn_combine(EVALBOT_ATTN_ARGS) {
    constexpr int NG = EB_ATTN_COMBINE_THREADS / D;
    __shared__ float w_s[EB_ATTN_MAX_SPLIT];
    __shared__ float red[NG][D];
    const int h = blockIdx.x;
    const int n_split = *reinterpret_cast<const int*>(scratch);
    const EbScratch sc = eb_scratch(scratch, n_head, n_split);
    const float* ml = sc.ml + (size_t)h * n_split * 2;
    float mx = -INFINITY, active = 0.0f;
    for (int s = threadIdx.x; s < n_split; s += blockDim.x) {
        const float m = ml[2 * s];
        mx = fmaxf(mx, m);
        active += m == -INFINITY ? 0.0f : 1.0f;
    }
    mx = eb_block_max(mx);
    const int n_active = (int)eb_block_sum(active);
    float part = 0.0f;
    for (int s = threadIdx.x; s < n_active; s += blockDim.x) {
        const float w = expf(ml[2 * s] - mx);
        w_s[s] = w;
        part += w * ml[2 * s + 1];
    }
    const float inv_total = 1.0f / eb_block_sum(part);  // its barriers also publish w_s
    const float* acc = sc.acc + (size_t)h * n_split * D;
    const int d = threadIdx.x % D, grp = threadIdx.x / D;
    float o[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int s = grp;
    for (; s + 3 * NG < n_active; s += 4 * NG) {
#pragma unroll
        for (int u = 0; u < 4; ++u) o[u] += w_s[s + u * NG] * acc[(size_t)(s + u * NG) * D + d];
    }
    for (; s < n_active; s += NG) o[0] += w_s[s] * acc[(size_t)s * D + d];
    red[grp][d] = (o[0] + o[1]) + (o[2] + o[3]);
    __syncthreads();
    if (grp == 0) {
        float total = 0.0f;
#pragma unroll
        for (int g = 0; g < NG; ++g) total += red[g][d];
        out[(size_t)h * D + d] = total * inv_total;
    }
}

#define EB_ATTN(name, D, GT)                                                                                 \
    extern "C" __global__ void __launch_bounds__(EB_ATTN_THREADS, 1) name##_partial(EVALBOT_ATTN_ARGS) { \
        EVALBOT_GRID_ENTER(); \
        eb_attn_partial_for<D, GT>(EB_ATTN_ARG_NAMES); \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(EB_ATTN_COMBINE_THREADS) name##_combine(EVALBOT_ATTN_ARGS) { \
        EVALBOT_GRID_ENTER(); \
        eb_attn_combine<D>(EB_ATTN_ARG_NAMES);  \
    }

EB_ATTN(attn_decode_hd128, 128, 8)
EB_ATTN(attn_decode_hd256, 256, 8)
EB_ATTN(attn_decode_swa_hd256, 256, 8)
EB_ATTN(attn_decode_hd512, 512, 4)
