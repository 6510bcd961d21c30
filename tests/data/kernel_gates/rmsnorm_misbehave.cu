/* Deliberately wrong rmsnorms whose outputs are right but which write where they must not.
 * rmsnorm_overrun also writes y[n_embd], one past the end; rmsnorm_clobber also writes its result
 * into x, a const input (legal only when y aliases x). Launch: grid 1, block 32. */
#include "evalbot_slots.h"

__device__ float eb_test_inv_rms(const float* x, int n_embd, float eps) {
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n_embd; i += 32) ss += x[i] * x[i];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    return rsqrtf(ss / (float)n_embd + eps);
}

extern "C" __global__ void rmsnorm_overrun(EVALBOT_RMSNORM_ARGS) {
    const float inv = eb_test_inv_rms(x, n_embd, eps);
    for (int i = threadIdx.x; i < n_embd; i += 32) y[i] = x[i] * inv * w[i];
    if (threadIdx.x == 0) y[n_embd] = 0.0f;
}

extern "C" __global__ void rmsnorm_clobber(EVALBOT_RMSNORM_ARGS) {
    const float inv = eb_test_inv_rms(x, n_embd, eps);
    for (int i = threadIdx.x; i < n_embd; i += 32) {
        const float v = x[i] * inv * w[i];
        y[i] = v;
        const_cast<float*>(x)[i] = v;
    }
}
