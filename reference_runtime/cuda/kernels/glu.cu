/* Baseline slots glu_swiglu and glu_geglu: elementwise, float4 per thread. */
#include "common.h"

template <bool GELU>
__device__ __forceinline__ void eb_glu(const float* gate, const float* up, float* y, int n_ff) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_ff / 4) return;
    const float4 g = reinterpret_cast<const float4*>(gate)[i], u = reinterpret_cast<const float4*>(up)[i];
    float4 r;
    r.x = (GELU ? eb_gelu_tanh(g.x) : eb_silu(g.x)) * u.x;
    r.y = (GELU ? eb_gelu_tanh(g.y) : eb_silu(g.y)) * u.y;
    r.z = (GELU ? eb_gelu_tanh(g.z) : eb_silu(g.z)) * u.z;
    r.w = (GELU ? eb_gelu_tanh(g.w) : eb_silu(g.w)) * u.w;
    reinterpret_cast<float4*>(y)[i] = r;
}

extern "C" __global__ void glu_swiglu(EVALBOT_GLU_ARGS) { EVALBOT_GRID_ENTER(); eb_glu<false>(gate, up, y, n_ff); }
extern "C" __global__ void glu_geglu(EVALBOT_GLU_ARGS) { EVALBOT_GRID_ENTER(); eb_glu<true>(gate, up, y, n_ff); }
