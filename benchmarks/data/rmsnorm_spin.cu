/* The baseline rmsnorm plus a known amount of extra work: after the norm is written, thread 0 waits
 * SPIN_NS_A nanoseconds (by the global timer) when n_embd == SPIN_EMBD_A, else SPIN_NS_B, so one
 * kernel slows two basket models by chosen fractions. Used by benchmarks/verdict_experiments.py to
 * check that the benchmark measures known slowdowns inside their confidence intervals. */
#include "kernels/norm.cu"

#ifndef SPIN_EMBD_A
#define SPIN_EMBD_A 0
#endif
#ifndef SPIN_NS_A
#define SPIN_NS_A 0
#endif
#ifndef SPIN_NS_B
#define SPIN_NS_B 0
#endif

__device__ __forceinline__ unsigned long long eb_globaltimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

extern "C" __global__ void rmsnorm_spin(EVALBOT_RMSNORM_ARGS) {
    const int n4 = n_embd / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n4; i += blockDim.x) ss += eb_sumsq(x4[i]);
    const float inv = 1.0f / sqrtf(eb_block_sum(ss) / (float)n_embd + eps);
    for (int i = threadIdx.x; i < n4; i += blockDim.x)
        reinterpret_cast<float4*>(y)[i] = eb_scale4(x4[i], inv, reinterpret_cast<const float4*>(w)[i]);
    if (threadIdx.x == 0) {
        const unsigned long long wait = n_embd == SPIN_EMBD_A ? SPIN_NS_A : SPIN_NS_B;
        const unsigned long long t0 = eb_globaltimer();
        while (eb_globaltimer() - t0 < wait) {
        }
    }
}
