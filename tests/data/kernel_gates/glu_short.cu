/* Deliberately wrong: SwiGLU that never writes its last four outputs (a loop bound off by one
 * float4). Launch as the baseline glu: grid ceil(n_ff / 4 / 256), block 256. */
#include "evalbot_slots.h"

extern "C" __global__ void glu_swiglu_short(EVALBOT_GLU_ARGS) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_ff / 4 - 1) return;
    const float4 g = reinterpret_cast<const float4*>(gate)[i], u = reinterpret_cast<const float4*>(up)[i];
    float4 r;
    r.x = g.x / (1.0f + expf(-g.x)) * u.x;
    r.y = g.y / (1.0f + expf(-g.y)) * u.y;
    r.z = g.z / (1.0f + expf(-g.z)) * u.z;
    r.w = g.w / (1.0f + expf(-g.w)) * u.w;
    reinterpret_cast<float4*>(y)[i] = r;
}
