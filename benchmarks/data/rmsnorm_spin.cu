/* The baseline rmsnorm plus a known amount of extra work: after the norm is written, thread 0 waits
 * SPIN_NS nanoseconds by the global timer. Used by benchmarks/verdict_experiments.py to check that
 * the benchmark measures known slowdowns inside their confidence intervals. */
#include "kernels/norm.cu"

#ifndef SPIN_NS
#define SPIN_NS 0
#endif

__device__ __forceinline__ unsigned long long eb_globaltimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

extern "C" __global__ void rmsnorm_spin(EVALBOT_RMSNORM_ARGS) {
    EVALBOT_GRID_ENTER();  // launched like the baseline (pdl): the spin is the only difference
    eb_rmsnorm(x, w, y, n_embd, eps);
    if (threadIdx.x == 0) {
        const unsigned long long t0 = eb_globaltimer();
        while (eb_globaltimer() - t0 < (unsigned long long)SPIN_NS) {
        }
    }
}
