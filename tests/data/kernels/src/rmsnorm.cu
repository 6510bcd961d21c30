// y = x / rms(x) * w, one block per vector, float4 loads (the ABI makes n_embd a multiple of 4).
#include "common.cuh"
#include "evalbot_slots.h"

extern "C" __global__ void rmsnorm_f32(EVALBOT_RMSNORM_ARGS) {
    float ss = 0.0f;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    for (int i = threadIdx.x; i < n_embd / 4; i += blockDim.x) {
        const float4 v = x4[i];
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    const float scale = rsqrtf(block_sum(ss) / n_embd + eps);
    // y may alias x: each element is read before it is written, by the same thread.
    for (int i = threadIdx.x; i < n_embd; i += blockDim.x) y[i] = x[i] * scale * w[i];
}
