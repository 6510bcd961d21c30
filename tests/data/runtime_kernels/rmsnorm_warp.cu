/* A correct alternative rmsnorm (one warp, a different reduction order than the baseline): the
 * candidate kernel of the override tests. Launch: grid 1, block 32. */
#include "evalbot_slots.h"

extern "C" __global__ void rmsnorm_warp(EVALBOT_RMSNORM_ARGS) {
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n_embd; i += 32) ss += x[i] * x[i];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float inv = rsqrtf(ss / (float)n_embd + eps);
    for (int i = threadIdx.x; i < n_embd; i += 32) y[i] = x[i] * inv * w[i];
}
