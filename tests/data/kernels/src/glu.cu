// y = silu(gate) * up, elementwise, vectorised by float4 (the ABI makes n_ff a multiple of 4).
#include "evalbot_slots.h"

extern "C" __global__ void glu_swiglu(EVALBOT_GLU_ARGS) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_ff / 4) return;
    const float4 g = reinterpret_cast<const float4*>(gate)[i], u = reinterpret_cast<const float4*>(up)[i];
    reinterpret_cast<float4*>(y)[i] =
        make_float4(g.x / (1.0f + __expf(-g.x)) * u.x, g.y / (1.0f + __expf(-g.y)) * u.y,
                    g.z / (1.0f + __expf(-g.z)) * u.z, g.w / (1.0f + __expf(-g.w)) * u.w);
}
