// y[row] = W[row, :] . x with f32 weights: one warp per row, float4 loads along the row.
#include "common.cuh"
#include "evalbot_slots.h"

extern "C" __global__ void gemv_f32(EVALBOT_GEMV_ARGS) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (row >= n_rows) return;
    const float4* w4 = reinterpret_cast<const float4*>(static_cast<const float*>(w) + static_cast<size_t>(row) * n_cols);
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float acc = 0.0f;
    for (int i = lane; i < n_cols / 4; i += 32) {
        const float4 a = w4[i], b = x4[i];
        acc += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
    }
    acc = warp_sum(acc);
    if (lane == 0) y[row] = acc;
}
