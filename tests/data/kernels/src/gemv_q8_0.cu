// y[row] = sum_k W[row, k] * x[k] with W in Q8_0 (blocks of 32 int8 and one f16 scale): one warp
// per row, each lane walks the row's blocks with a stride of 32 blocks.
#include <stdint.h>

#include "common.cuh"
#include "evalbot_slots.h"

struct block_q8_0 {
    __half d;
    int8_t qs[32];
};
static_assert(sizeof(block_q8_0) == 34, "Q8_0 blocks are 34 bytes");

extern "C" __global__ void gemv_q8_0(EVALBOT_GEMV_ARGS) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x & 31;
    if (row >= n_rows) return;
    const int n_blocks = n_cols / 32;
    const block_q8_0* w_row = static_cast<const block_q8_0*>(w) + static_cast<size_t>(row) * n_blocks;
    float acc = 0.0f;
    for (int b = lane; b < n_blocks; b += 32) {
        const block_q8_0& blk = w_row[b];
        const float* xb = x + b * 32;
        float dot = 0.0f;
#pragma unroll
        for (int j = 0; j < 32; ++j) dot += static_cast<float>(blk.qs[j]) * xb[j];
        acc += __half2float(blk.d) * dot;
    }
    acc = warp_sum(acc);
    if (lane == 0) y[row] = acc;
}
