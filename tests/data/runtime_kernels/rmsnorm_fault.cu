/* Deliberately broken: writes through a wild pointer (an illegal-address fault). */
#include "evalbot_slots.h"

extern "C" __global__ void rmsnorm_fault(EVALBOT_RMSNORM_ARGS) {
    float* wild = reinterpret_cast<float*>(0x10) + (size_t)threadIdx.x * (1u << 20);
    *wild = x[0];
    y[threadIdx.x] = w[threadIdx.x];
}
