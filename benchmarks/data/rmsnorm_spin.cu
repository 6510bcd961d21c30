/* The baseline rmsnorm plus a known amount of extra work: thread 0 spins for SPIN_CYCLES SM clock
 * cycles after the norm is written. Used by benchmarks/verdict_experiments.py to check that the
 * benchmark measures known slowdowns inside their confidence intervals. Launch as the baseline. */
#include "kernels/norm.cu"

#ifndef SPIN_CYCLES
#define SPIN_CYCLES 0
#endif

extern "C" __global__ void rmsnorm_spin(EVALBOT_RMSNORM_ARGS) {
    const int n4 = n_embd / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n4; i += blockDim.x) ss += eb_sumsq(x4[i]);
    const float inv = 1.0f / sqrtf(eb_block_sum(ss) / (float)n_embd + eps);
    for (int i = threadIdx.x; i < n4; i += blockDim.x)
        reinterpret_cast<float4*>(y)[i] = eb_scale4(x4[i], inv, reinterpret_cast<const float4*>(w)[i]);
    if (threadIdx.x == 0) {
        const long long t0 = clock64();
        while (clock64() - t0 < (long long)SPIN_CYCLES) {
        }
    }
}
