// rmsnorm written one way (copy-detection tests: independent of rmsnorm_b.cu)
#include "common.h"
extern "C" __global__ void rmsnorm_a(const float* x, const float* w, float* y, int n, float eps) {
    __shared__ float part[32];
    float acc = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) acc += x[i] * x[i];
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x < 32) {
        acc = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.f;
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, o);
        if (threadIdx.x == 0) part[0] = rsqrtf(acc / n + eps);
    }
    __syncthreads();
    const float r = part[0];
    for (int i = threadIdx.x; i < n; i += blockDim.x) y[i] = x[i] * r * w[i];
}
