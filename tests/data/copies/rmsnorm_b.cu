// rmsnorm written another way (copy-detection tests: independent of rmsnorm_a.cu)
#include <cuda_fp16.h>
namespace {
template <int BLOCK>
__device__ float block_sum(float v) {
    typedef float Row[BLOCK / 32];
    __shared__ Row warp_sums;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    #pragma unroll
    for (int step = 1; step < 32; step *= 2) v += __shfl_down_sync(~0u, v, step);
    if (!lane) warp_sums[warp] = v;
    __syncthreads();
    v = 0.0f;
    #pragma unroll
    for (int k = 0; k < BLOCK / 32; ++k) v += warp_sums[k];
    return v;
}
}  // namespace
extern "C" __global__ void __launch_bounds__(256) rms_norm_vec4(const float4* __restrict__ in,
        const float4* __restrict__ gain, float4* __restrict__ out, int n4, float epsilon) {
    float ss = 0.0f;
    for (int j = threadIdx.x; j < n4; j += 256) {
        const float4 v = in[j];
        ss = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, ss))));
    }
    const float inv = rsqrtf(block_sum<256>(ss) / (4 * n4) + epsilon);
    for (int j = threadIdx.x; j < n4; j += 256) {
        const float4 v = in[j], g = gain[j];
        out[j] = make_float4(v.x * inv * g.x, v.y * inv * g.y, v.z * inv * g.z, v.w * inv * g.w);
    }
}
