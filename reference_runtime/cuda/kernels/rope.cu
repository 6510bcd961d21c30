/* Baseline slots qk_norm_rope and kv_append.
 *
 * qk_norm_rope: one block per head (q heads, then k heads, then v heads when v is given). The row
 * is staged in shared memory before anything is written back, so the op is safely in place. RoPE
 * angles are formed and reduced modulo 2 pi in double (at position 16k an f32 angle is off by
 * ~1e-3 rad); the reduced angle's sine and cosine are then exact enough in f32. */
#include "common.h"

constexpr int EB_MAX_HEAD_DIM = 1024;

extern "C" __global__ void qk_norm_rope(EVALBOT_QK_NORM_ROPE_ARGS) {
    EVALBOT_GRID_ENTER();
    __shared__ float row[EB_MAX_HEAD_DIM];
    int head = blockIdx.x;
    float* x;
    const float* wn;
    bool rope = true;
    if (head < n_head) {
        x = q + (size_t)head * head_dim;
        wn = q_norm;
    } else if ((head -= n_head) < n_head_kv) {
        x = k + (size_t)head * head_dim;
        wn = k_norm;
    } else {
        if (v == nullptr) return;
        x = v + (size_t)(head - n_head_kv) * head_dim;
        wn = nullptr;
        rope = false;
    }
    float ss = 0.0f;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
        const float a = x[i];
        row[i] = a;
        ss += a * a;
    }
    const float inv = 1.0f / sqrtf(eb_block_sum(ss) / (float)head_dim + eps);
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) row[i] = row[i] * inv * (wn ? wn[i] : 1.0f);
    __syncthreads();
    if (!rope) {
        for (int i = threadIdx.x; i < head_dim; i += blockDim.x) x[i] = row[i];
        return;
    }
    const int half = n_rot / 2;
    const double p = (double)(*pos) * (double)freq_scale;
    const double log2_base = log2((double)freq_base);
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        double theta = p * exp2(-(2.0 * i / n_rot) * log2_base);
        if (freq_factors) theta /= (double)freq_factors[i];
        const double two_pi = 6.283185307179586;
        float s, c;
        sincosf((float)(theta - two_pi * rint(theta / two_pi)), &s, &c);
        const float a = row[i], b = row[i + half];
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
    }
    for (int i = n_rot + threadIdx.x; i < head_dim; i += blockDim.x) x[i] = row[i];
}

/* kv_append: one block per KV head, half2 stores. */
extern "C" __global__ void kv_append(EVALBOT_KV_APPEND_ARGS) {
    EVALBOT_GRID_ENTER();
    const int p = *pos;
    if (p >= n_ctx) return;
    const int h = blockIdx.x;
    const size_t src = (size_t)h * head_dim, dst = ((size_t)h * n_ctx + p) * head_dim;
    for (int i = 2 * threadIdx.x; i < head_dim; i += 2 * blockDim.x) {
        *reinterpret_cast<__half2*>(k_cache + dst + i) = __floats2half2_rn(k[src + i], k[src + i + 1]);
        *reinterpret_cast<__half2*>(v_cache + dst + i) = __floats2half2_rn(v[src + i], v[src + i + 1]);
    }
}
