/* Baseline slots rmsnorm, rmsnorm_residual, rmsnorm_post_add: one block over the vector, float4
 * loads, a block-wide sum of squares. */
#include "common.h"

__device__ __forceinline__ float eb_sumsq(float4 v) { return v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w; }

__device__ __forceinline__ float4 eb_scale4(float4 v, float s, float4 w) {
    return make_float4(v.x * s * w.x, v.y * s * w.y, v.z * s * w.z, v.w * s * w.w);
}

__device__ __forceinline__ void eb_rmsnorm(EVALBOT_RMSNORM_ARGS) {
    const int n4 = n_embd / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n4; i += blockDim.x) ss += eb_sumsq(x4[i]);
    const float inv = 1.0f / sqrtf(eb_block_sum(ss) / (float)n_embd + eps);
    // y may alias x: each thread rewrites only the elements it read.
    for (int i = threadIdx.x; i < n4; i += blockDim.x)
        reinterpret_cast<float4*>(y)[i] = eb_scale4(x4[i], inv, reinterpret_cast<const float4*>(w)[i]);
}

extern "C" __global__ void rmsnorm(EVALBOT_RMSNORM_ARGS) { EVALBOT_GRID_ENTER(); eb_rmsnorm(x, w, y, n_embd, eps); }

extern "C" __global__ void rmsnorm_residual(EVALBOT_RMSNORM_RESIDUAL_ARGS) {
    EVALBOT_GRID_ENTER();
    const int n4 = n_embd / 4;
    float4* h4 = reinterpret_cast<float4*>(h);
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n4; i += blockDim.x) {
        float4 a = h4[i];
        const float4 b = reinterpret_cast<const float4*>(x)[i];
        a.x += b.x; a.y += b.y; a.z += b.z; a.w += b.w;
        h4[i] = a;
        ss += eb_sumsq(a);
    }
    const float inv = 1.0f / sqrtf(eb_block_sum(ss) / (float)n_embd + eps);
    for (int i = threadIdx.x; i < n4; i += blockDim.x)
        reinterpret_cast<float4*>(y)[i] = eb_scale4(h4[i], inv, reinterpret_cast<const float4*>(w)[i]);
}

extern "C" __global__ void rmsnorm_post_add(EVALBOT_RMSNORM_POST_ADD_ARGS) {
    EVALBOT_GRID_ENTER();
    const int n4 = n_embd / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n4; i += blockDim.x) ss += eb_sumsq(x4[i]);
    const float inv = 1.0f / sqrtf(eb_block_sum(ss) / (float)n_embd + eps);
    float4* h4 = reinterpret_cast<float4*>(h);
    for (int i = threadIdx.x; i < n4; i += blockDim.x) {
        const float4 n = eb_scale4(x4[i], inv, reinterpret_cast<const float4*>(w)[i]);
        float4 a = h4[i];
        a.x = (a.x + n.x) * out_scale; a.y = (a.y + n.y) * out_scale;
        a.z = (a.z + n.z) * out_scale; a.w = (a.w + n.w) * out_scale;
        h4[i] = a;
    }
}
