/* rmsnorm variants for the anti-gaming GPU tests (launch: grid [1], block [64]).
 *
 * rmsnorm_race         two warps reduce into shared memory, and the final sum reads the other warp's
 *                      partial with no barrier in between: a race (racecheck's target). Often right.
 * rmsnorm_repeat_fast  remembers a hash of every input it has seen; an input it has not seen costs a
 *                      ~20 us spin first. Right every time, and only fast on repeated input (the repeat
 *                      audit's target: on fresh inputs it is slower). */
#include "evalbot_slots.h"

constexpr int SEEN = 1 << 14;
__device__ unsigned int g_seen[SEEN];

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

extern "C" __global__ void rmsnorm_race(EVALBOT_RMSNORM_ARGS) {
    __shared__ float part[2];
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n_embd; i += 64) ss += x[i] * x[i];
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    // Missing: __syncthreads();
    const float inv = rsqrtf((part[0] + part[1]) / (float)n_embd + eps);
    __syncthreads();  // every x is read before y (which may alias it) is written
    for (int i = threadIdx.x; i < n_embd; i += 64) y[i] = x[i] * inv * w[i];
}

extern "C" __global__ void rmsnorm_repeat_fast(EVALBOT_RMSNORM_ARGS) {
    __shared__ float part[2];
    __shared__ int seen;
    float ss = 0.0f;
    unsigned int hash = 0;
    for (int i = threadIdx.x; i < n_embd; i += 64) {
        ss += x[i] * x[i];
        hash = (hash ^ __float_as_uint(x[i])) * 16777619u + i;
    }
    ss = warp_sum(ss);
    for (int o = 16; o > 0; o >>= 1) hash ^= __shfl_xor_sync(0xffffffffu, hash, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __shared__ unsigned int hashes[2];
    if ((threadIdx.x & 31) == 0) hashes[threadIdx.x >> 5] = hash;
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned int key = (hashes[0] * 2654435761u) ^ hashes[1] ^ (unsigned int)n_embd;
        const unsigned int slot = key & (SEEN - 1);
        seen = g_seen[slot] == (key | 1u);
        g_seen[slot] = key | 1u;
    }
    __syncthreads();
    if (!seen) {
        const long long until = clock64() + 40000;  // ~20 us at the H200's ~1.98 GHz
        while (clock64() < until) {
        }
    }
    const float inv = rsqrtf((part[0] + part[1]) / (float)n_embd + eps);
    __syncthreads();
    for (int i = threadIdx.x; i < n_embd; i += 64) y[i] = x[i] * inv * w[i];
}
